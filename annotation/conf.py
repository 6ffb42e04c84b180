"""Annotation settings, each overridable in Django settings or from the environment.

    ANNOTATION_UNDO_SECONDS          how long after a submission it can be undone (60)
    ANNOTATION_SUBMIT_RATE           sustained submissions per second per annotator (2.0)
    ANNOTATION_SUBMIT_BURST          submissions allowed in a burst (10)
    ANNOTATION_MAX_LEASES            leases one annotator holds per round: current + preloaded (2); asking
                                     for one more releases the oldest (see docs/annotation-api.md, next)
    ANNOTATION_RECLAIM_INTERVAL      seconds between reclaims of expired leases, per process (5.0)
    LOGIN_FAILURE_LIMIT              wrong passwords for one account that lock it (5)
    LOGIN_IP_FAILURE_LIMIT           wrong passwords from one client address, any accounts, that lock it (50)
    LOGIN_LOCKOUT_SECONDS            how long a lock lasts, and the window failures are counted in (900)
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_DEFAULTS = {
    "ANNOTATION_UNDO_SECONDS": 60.0,
    "ANNOTATION_SUBMIT_RATE": 2.0,
    "ANNOTATION_SUBMIT_BURST": 10.0,
    "ANNOTATION_MAX_LEASES": 2,
    "ANNOTATION_RECLAIM_INTERVAL": 5.0,
    "LOGIN_FAILURE_LIMIT": 5,
    "LOGIN_IP_FAILURE_LIMIT": 50,
    "LOGIN_LOCKOUT_SECONDS": 900,
}


def setting(name: str):
    """Django setting, else environment variable, else the default; typed like the default."""
    default = _DEFAULTS[name]
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not a {type(default).__name__}") from exc
