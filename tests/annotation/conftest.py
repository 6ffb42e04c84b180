"""Annotation test fixtures (media, rate limit and passwords are set for every test in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def reclaim_on_every_assignment(settings):
    # Tests move the clock by hand; reclaim whenever asked instead of at most every few seconds.
    settings.ANNOTATION_RECLAIM_INTERVAL = 0.0
