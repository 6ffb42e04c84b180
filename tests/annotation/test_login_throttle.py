"""Login throttling: wrong passwords lock the account and the client's address, on the login page and the admin."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from annotation import login_throttle
from tests.factories import AnnotatorFactory, ResearcherFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_IP_FAILURE_LIMIT = 5
    settings.LOGIN_LOCKOUT_SECONDS = 600


@pytest.fixture
def now(monkeypatch):
    """The throttle's clock, moved by hand."""
    clock = {"t": 1_000_000.0}
    monkeypatch.setattr(login_throttle, "clock", lambda: clock["t"])
    return clock


def log_in(client, username, password, ip="203.0.113.7", path="/accounts/login/", **headers):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip, **headers)


def logged_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


def test_wrong_passwords_lock_the_account_even_for_the_right_one(client, now):
    user = AnnotatorFactory()
    for _ in range(2):
        response = log_in(client, user.username, "wrong")
        assert response.status_code == 200 and b"Wrong username or password." in response.content
    locking = log_in(client, user.username, "wrong")  # the third: the account is locked from here
    assert locking.status_code == 429 and locking["Retry-After"] == "600"
    assert b"Too many failed logins: logging in is locked for 10 minutes." in locking.content

    now["t"] += 300
    refused = log_in(client, user.username, PASSWORD)
    assert refused.status_code == 429 and refused["Retry-After"] == "300"
    assert b"locked for 5 minutes" in refused.content and not logged_in(refused)

    now["t"] += 301  # the lock is over
    assert logged_in(log_in(client, user.username, PASSWORD))


def test_the_account_stays_locked_from_another_address(now):
    user = AnnotatorFactory()
    for _ in range(3):
        log_in(Client(), user.username, "wrong", ip="203.0.113.7")
    refused = log_in(Client(), user.username, PASSWORD, ip="198.51.100.9")
    assert refused.status_code == 429 and not logged_in(refused)
    assert logged_in(log_in(Client(), AnnotatorFactory().username, PASSWORD, ip="203.0.113.7"))  # others may


def test_many_accounts_from_one_address_lock_the_address(now):
    for _ in range(4):  # one wrong password each: no account reaches its limit
        assert log_in(Client(), AnnotatorFactory().username, "wrong").status_code == 200
    assert log_in(Client(), AnnotatorFactory().username, "wrong").status_code == 429  # the address's fifth
    someone = AnnotatorFactory()
    refused = log_in(Client(), someone.username, PASSWORD)
    assert refused.status_code == 429 and not logged_in(refused)
    assert logged_in(log_in(Client(), someone.username, PASSWORD, ip="198.51.100.9"))


def test_an_unknown_username_counts_too(now):
    for _ in range(3):
        log_in(Client(), "nobody", "wrong")
    assert log_in(Client(), "nobody", "wrong").status_code == 429


def test_a_successful_login_clears_the_account_failures(client, now):
    user = AnnotatorFactory()
    for _ in range(2):
        log_in(client, user.username, "wrong")
    assert logged_in(log_in(client, user.username, PASSWORD))
    client.logout()
    for _ in range(2):
        assert log_in(client, user.username, "wrong", ip="198.51.100.9").status_code == 200
    assert logged_in(log_in(client, user.username, PASSWORD, ip="198.51.100.9"))


def test_a_short_lock_expires_in_the_cache_too(client, settings):
    settings.LOGIN_LOCKOUT_SECONDS = 1
    user = AnnotatorFactory()
    for _ in range(3):
        log_in(client, user.username, "wrong")
    assert log_in(client, user.username, PASSWORD).status_code == 429
    time.sleep(1.1)
    assert logged_in(log_in(client, user.username, PASSWORD))


def test_the_admin_login_is_throttled_and_says_so(now):
    researcher = ResearcherFactory()
    for _ in range(3):
        response = log_in(Client(), researcher.username, "wrong", path="/admin/login/")
    assert response.status_code == 200 and b"Too many failed logins: logging in is locked for 10 minutes." in response.content
    refused = log_in(Client(), researcher.username, PASSWORD, path="/admin/login/")
    assert not logged_in(refused) and b"locked for 10 minutes" in refused.content


def test_x_forwarded_for_is_ignored_unless_a_proxy_is_trusted(now):
    for n in range(5):
        log_in(Client(), f"typo{n}", "wrong", ip="203.0.113.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    user = AnnotatorFactory()
    assert log_in(Client(), user.username, PASSWORD, ip="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


def test_behind_a_trusted_proxy_the_address_it_saw_counts(settings, now):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.1"
    for n in range(5):  # the client prepends a forged address; the proxy appends the real one
        log_in(Client(), f"typo{n}", "wrong", ip=proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.7")
    user = AnnotatorFactory()
    assert log_in(Client(), user.username, PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    assert logged_in(log_in(Client(), user.username, PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.9"))


def test_the_throttle_counts_in_redis_when_the_cache_is_redis(settings, redis_url, now):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    from django.core.cache import cache

    cache.clear()
    try:
        user = AnnotatorFactory()
        for _ in range(3):
            log_in(Client(), user.username, "wrong")
        assert log_in(Client(), user.username, PASSWORD).status_code == 429
    finally:
        cache.clear()
