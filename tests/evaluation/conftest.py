"""Evaluation test fixtures (media, rate limit and passwords are set for every test in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def small_bootstrap(settings):
    # Reports in tests use fewer resamples; the statistics themselves are tested at full size.
    settings.EVALUATION_BOOTSTRAP_RESAMPLES = 500
