"""Annotation test fixtures: image files under a temporary MEDIA_ROOT, a rate limit tests do not trip."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def generous_rate_limit(settings):
    # Tests submit far faster than people; the rate-limit test sets its own values.
    settings.ANNOTATION_SUBMIT_RATE = 1000.0
    settings.ANNOTATION_SUBMIT_BURST = 1000.0


@pytest.fixture(autouse=True)
def reclaim_on_every_assignment(settings):
    # Tests move the clock by hand; reclaim whenever asked instead of at most every few seconds.
    settings.ANNOTATION_RECLAIM_INTERVAL = 0.0


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
