"""Process-level checks: settings modes, the Celery wiring, and the torch-free web process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE_VARS = ("DJANGO_ALLOW_ASYNC_UNSAFE", "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DJANGO_ENV", "SECRET_KEY", "ALLOWED_HOSTS")


def clean_env(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS and not k.startswith("PYTEST")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.update(overrides)
    return env


def run_python(code: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def manage(*args: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_web_process_never_imports_torch(tmp_path):
    code = """
import sys
import django
django.setup()
from config.wsgi import application
from django.urls import get_resolver

def walk(resolver):
    for pattern in resolver.url_patterns:
        if hasattr(pattern, "url_patterns"):
            walk(pattern)
        else:
            pattern.callback  # resolves the view, importing its module

walk(get_resolver())
import importlib
for module in list(sys.modules):
    if module.endswith(".urls") or module.endswith(".views") or module.endswith(".admin"):
        importlib.import_module(module)
from django.test import Client
Client().get("/accounts/login/")
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
assert "diffusers" not in sys.modules
print("url modules:", len([m for m in sys.modules if m.endswith(".urls")]))
"""
    result = run_python(code, clean_env(VAR_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "url modules:" in result.stdout


def test_production_mode_refuses_to_start_without_secret_key_and_hosts(tmp_path):
    code = "import django; django.setup()"
    missing_key = run_python(code, clean_env(DJANGO_ENV="production", ALLOWED_HOSTS="example.org", VAR_DIR=str(tmp_path)))
    assert missing_key.returncode != 0 and "SECRET_KEY must be set" in missing_key.stderr
    missing_hosts = run_python(code, clean_env(DJANGO_ENV="production", SECRET_KEY="x" * 60, VAR_DIR=str(tmp_path)))
    assert missing_hosts.returncode != 0 and "ALLOWED_HOSTS must be set" in missing_hosts.stderr


def test_production_mode_passes_deploy_checks_with_debug_off(tmp_path):
    env = clean_env(
        DJANGO_ENV="production", SECRET_KEY="k" * 64 + "Zq9!", ALLOWED_HOSTS="annotate.example.org", VAR_DIR=str(tmp_path)
    )
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    debug = run_python("import django; django.setup(); from django.conf import settings; print(settings.DEBUG)", env)
    assert debug.stdout.strip() == "False"


def test_development_secret_key_is_generated_once_and_kept(tmp_path):
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_python(code, clean_env(VAR_DIR=str(tmp_path))).stdout.strip()
    second = run_python(code, clean_env(VAR_DIR=str(tmp_path))).stdout.strip()
    assert len(first) > 40 and first == second
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_tasks_are_routed_by_name_and_serialized_as_json():
    from config.celery import app

    router = app.amqp.router
    assert router.route({}, "training.tasks.gpu_train_run")["queue"].name == "gpu"
    assert router.route({}, "catalog.tasks.gpu_generate_images")["queue"].name == "gpu"
    assert router.route({}, "training.tasks.heartbeat")["queue"].name == "default"
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]


def _start_worker(env: dict[str, str], queue: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    log = (tmp_path / f"{name}.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "-P", "solo", "-n", f"{name}@%h",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    return worker, name


def _wait_for_heartbeat(env: dict[str, str], worker_name: str, worker: subprocess.Popen, log: Path) -> str:
    code = (
        "import django; django.setup()\n"
        "from training.models import WorkerHeartbeat\n"
        f"print(','.join(h.queue for h in WorkerHeartbeat.objects.filter(hostname__startswith='{worker_name}@')))"
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = run_python(code, env).stdout.strip()
        if found:
            return found
        assert worker.poll() is None, f"worker died:\n{log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"the worker never ran the task:\n{log.read_text()[-3000:]}")


def _send_heartbeat_and_check(env: dict[str, str], tmp_path: Path, queue: str) -> None:
    worker, name = _start_worker(env, queue, tmp_path)
    try:
        sent = run_python(
            "import django; django.setup()\n"
            "from training.tasks import heartbeat\n"
            f"heartbeat.apply_async(args=['{queue}'], queue='{queue}')\n",
            env,
        )
        assert sent.returncode == 0, sent.stderr
        assert _wait_for_heartbeat(env, name, worker, tmp_path / f"{name}.log") == queue
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.mark.slow
def test_embedded_broker_carries_a_task_from_one_process_to_a_worker_process(tmp_path):
    env = clean_env(VAR_DIR=str(tmp_path / "var"))
    migrate = manage("migrate", "-v0", env=env)
    assert migrate.returncode == 0, migrate.stderr
    _send_heartbeat_and_check(env, tmp_path, queue=f"q{uuid.uuid4().hex[:6]}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_redis_broker_and_postgres_carry_a_task_to_a_worker(postgres, redis_url, tmp_path):
    db = postgres.settings_dict
    database_url = f"postgres://{db['USER'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = clean_env(DATABASE_URL=database_url, CELERY_BROKER_URL=redis_url, VAR_DIR=str(tmp_path / "var"))
    _send_heartbeat_and_check(env, tmp_path, queue=f"q{uuid.uuid4().hex[:6]}")
