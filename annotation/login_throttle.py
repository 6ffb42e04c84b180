"""Login throttling: too many wrong passwords lock the account, and the client's address.

Failures are counted in Django's cache (Redis in production, shared by every web worker), per
account and per client address, over a window of ``LOGIN_LOCKOUT_SECONDS`` from the first
failure. The ``LOGIN_FAILURE_LIMIT``-th failure for an account, or the
``LOGIN_IP_FAILURE_LIMIT``-th from an address (any accounts), locks it for
``LOGIN_LOCKOUT_SECONDS``; while locked, even the right password is refused. A successful login
clears its account's count, not its address's: an attacker's own account cannot reset the
address count it is running up.

``RolesBackend.authenticate`` enforces the lock, so every login that goes through
``django.contrib.auth.authenticate`` (the login page, the admin) is throttled; the failure and
success signals keep the counts. The login forms only turn a refusal into the lockout message.
"""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.core.cache import cache

from annotation.conf import setting

_PREFIX = "login-throttle"


def clock() -> float:
    return time.time()


def client_ip(request) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or behind ``TRUSTED_PROXY_COUNT`` proxies, the
    address the outermost of them saw (taken from the right of ``X-Forwarded-For``, which the
    client cannot forge past our own proxies). ``None`` without a request."""
    if request is None:
        return None
    proxies = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if proxies > 0:
        forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR") or None


def _subjects(*, request, username: str | None) -> list[tuple[str, int]]:
    """(cache key part, failure limit) for the account and the address this attempt is from."""
    subjects = []
    if username:
        digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
        subjects.append((f"user:{digest}", setting("LOGIN_FAILURE_LIMIT")))
    ip = client_ip(request)
    if ip:
        subjects.append((f"ip:{ip}", setting("LOGIN_IP_FAILURE_LIMIT")))
    return subjects


def login_lockout(*, request, username: str | None) -> int:
    """Seconds until this account and address may try again; 0 when neither is locked."""
    now = clock()
    keys = [f"{_PREFIX}:lock:{subject}" for subject, _ in _subjects(request=request, username=username)]
    until = max((float(value) for value in cache.get_many(keys).values()), default=now)
    return max(0, math.ceil(until - now))


def login_failure_record(*, request, username: str | None) -> None:
    """Count one wrong password; reaching a limit locks that account or address."""
    seconds = setting("LOGIN_LOCKOUT_SECONDS")
    for subject, limit in _subjects(request=request, username=username):
        lock_key, count_key = f"{_PREFIX}:lock:{subject}", f"{_PREFIX}:failures:{subject}"
        if float(cache.get(lock_key, 0)) > clock():
            continue  # attempts while locked neither count nor extend the lock
        cache.add(count_key, 0, timeout=seconds)  # the window starts at the first failure
        try:
            failures = cache.incr(count_key)
        except ValueError:  # the window closed between add and incr
            cache.add(count_key, 1, timeout=seconds)
            failures = 1
        if failures >= limit:
            cache.set(lock_key, clock() + seconds, timeout=seconds)
            cache.delete(count_key)


def login_success_record(*, request, username: str | None) -> None:
    """A successful login clears its account's failures (its address's stay)."""
    if username:
        subject, _ = _subjects(request=None, username=username)[0]
        cache.delete(f"{_PREFIX}:failures:{subject}")


def lockout_message(seconds: int) -> str:
    if seconds < 60:
        wait = f"{seconds} second{'s' if seconds != 1 else ''}"
    else:
        minutes = math.ceil(seconds / 60)
        wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"Too many failed logins: logging in is locked for {wait}."


def on_login_failed(sender, credentials, request=None, **kwargs):
    login_failure_record(request=request, username=credentials.get("username"))


def on_logged_in(sender, request, user, **kwargs):
    login_success_record(request=request, username=user.get_username())
