"""Evaluation test fixtures: image files under a temporary MEDIA_ROOT, fast passwords, a quick bootstrap."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def generous_rate_limit(settings):
    settings.ANNOTATION_SUBMIT_RATE = 1000.0
    settings.ANNOTATION_SUBMIT_BURST = 1000.0


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def small_bootstrap(settings):
    # Reports in tests use fewer resamples; the statistics themselves are tested at full size.
    settings.EVALUATION_BOOTSTRAP_RESAMPLES = 500
