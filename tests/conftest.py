"""Test-wide guarantees: nothing reaches the network, and in CI no test may be skipped."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
# Tiny models on a shared 2-core machine: more threads than cores makes small torch ops crawl.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost means a DNS lookup: outside


def _guarded(real):
    def connect(self, address):
        if not _is_loopback(address):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


def pytest_addoption(parser):
    parser.addoption(
        "--no-skips", action="store_true", default=False,
        help="Fail the run if any test is skipped (CI: every service must be there).",
    )


_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--no-skips") and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"--no-skips: {len(_skipped)} test(s) were skipped; failing the run:", red=True)
            for nodeid in _skipped:
                reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = 1


@pytest.fixture
def postgres(settings):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")
    return connection


@pytest.fixture
def redis_url():
    import redis

    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.skip("needs Redis: set REDIS_URL=redis://...")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"REDIS_URL={url} is set but Redis does not answer: {exc}")
    return url


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Image files of each test land in its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def generous_rate_limit(settings):
    # Tests submit far faster than people; the rate-limit test sets its own values.
    settings.ANNOTATION_SUBMIT_RATE = 1000.0
    settings.ANNOTATION_SUBMIT_BURST = 1000.0


@pytest.fixture(autouse=True)
def fresh_cache():
    """Login failure counts (in the process's cache) never carry over from one test to the next."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory):
    """A tiny random-init Stable Diffusion pipeline directory, built once per session."""
    from training.engine.tiny import build_tiny_pipeline

    return build_tiny_pipeline("unet", tmp_path_factory.mktemp("tiny") / "unet")


@pytest.fixture
def eager_tasks(settings, tmp_path):
    """Celery tasks run inline, as a worker would run them, when their on_commit callbacks fire.

    Artifacts land in this test's folder; the evaluation sampler is cut to two steps at 32 px.
    """
    from config.celery import app

    previous = {key: app.conf[key] for key in ("task_always_eager", "task_eager_propagates")}
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.EVALUATION_SAMPLER = {"steps": 2, "batch_size": 2, "height": 32, "width": 32}
    yield
    app.conf.update(previous)


@pytest.fixture
def research_api():
    """An API client that sends a researcher's token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tests.factories import ResearcherFactory

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=ResearcherFactory()).key}")
    return client
