"""Settings for every process: web, Celery workers, management commands, tests.

Everything comes from the environment. With nothing set, the app runs on embedded
defaults that need no server (SQLite and a filesystem Celery broker under ``var/``),
which is what a newcomer's first ``make demo`` uses. ``DATABASE_URL`` and
``CELERY_BROKER_URL`` switch to PostgreSQL and Redis. ``DJANGO_ENV=production``
turns DEBUG off and refuses to start without ``SECRET_KEY`` and ``ALLOWED_HOSTS``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false)")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _development_secret_key() -> str:
    """A key generated once per checkout and kept under var/, never committed."""
    key_file = VAR_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(key)
    tmp.chmod(0o600)
    tmp.replace(key_file)
    return key


PRODUCTION = os.environ.get("DJANGO_ENV", "development") == "production"

if PRODUCTION:
    SECRET_KEY = os.environ.get("SECRET_KEY", "")
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production")
    DEBUG = env_bool("DJANGO_DEBUG", False)
    if DEBUG:
        raise ImproperlyConfigured("DJANGO_DEBUG cannot be on when DJANGO_ENV=production")
else:
    SECRET_KEY = os.environ.get("SECRET_KEY") or _development_secret_key()
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
    DEBUG = env_bool("DJANGO_DEBUG", True)

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "outbox",
    "catalog",
    "annotation",
    "training",
    "evaluation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # Seconds a worker keeps its database connection (0: a new one per request).
    conn_max_age = int(os.environ.get("DATABASE_CONN_MAX_AGE", "60"))
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=conn_max_age, conn_health_checks=True)}
    # Prepare a statement after it ran this many times on a connection (psycopg 3; unset: never).
    # Saves PostgreSQL's parse and plan on the annotation hot path; leave it unset behind a
    # transaction-pooling PgBouncer, which cannot keep prepared statements per client.
    if os.environ.get("DATABASE_PREPARE_THRESHOLD"):
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = int(os.environ["DATABASE_PREPARE_THRESHOLD"])
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # Several processes (web, worker) share the file: wait for locks instead of failing,
            # and take the write lock up front so read-then-write transactions cannot deadlock.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Where training runs, preference exports and generated checkpoints live. On a cluster this
# is shared storage that web, CPU workers and GPU workers all mount at the same path.
ARTIFACTS_ROOT = Path(os.environ.get("ARTIFACTS_ROOT", VAR_DIR / "artifacts"))
# The most pixels (width x height) a stored image may have: admin uploads and generated images
# beyond it are refused (catalog.images). 4096 x 4096 by default.
IMAGE_MAX_PIXELS = int(os.environ.get("IMAGE_MAX_PIXELS", 4096 * 4096))
# Changes to the sampler of generated images (evaluations and preference pools): a JSON object
# of SampleConfig settings, e.g. {"steps": 30}; the rest keep SampleConfig's defaults (see
# docs/training.md, "Sampling"). Checked when a gpu worker samples.
EVALUATION_SAMPLER = json.loads(os.environ.get("EVALUATION_SAMPLER") or "{}")
# Training runs: how often a worker copies a run's progress to its record (also its heartbeat), how
# long a running run may stay silent before another worker takes it over from its latest checkpoint,
# and the free disk a worker wants under ARTIFACTS_ROOT before it starts a run.
TRAINING_PROGRESS_INTERVAL = float(os.environ.get("TRAINING_PROGRESS_INTERVAL", 2))
TRAINING_STALE_AFTER = float(os.environ.get("TRAINING_STALE_AFTER", 300))
TRAINING_MIN_FREE_BYTES = int(float(os.environ.get("TRAINING_MIN_FREE_BYTES", 2 * 1024**3)))

# Django's cache holds the login failure counts (annotation.login_throttle), so every web worker
# must share it: production sets CACHE_URL (Redis, e.g. redis://redis:6379/1). Without it each
# process keeps its own counts, fine for one process.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Proxies in front of the web process that append the client's address to X-Forwarded-For
# (e.g. 1 behind one TLS proxy). 0: the header is ignored, REMOTE_ADDR is the client; more than
# there really are would let a client choose the address its failed logins count against.
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))

# The model backend, loading the user with their role memberships (one query per request).
AUTHENTICATION_BACKENDS = ["annotation.roles.RolesBackend"]
# Sessions stay in the database on purpose. signed_cookies would save a query per request but
# cannot be revoked server-side (logout, stolen cookie); cached_db needs a cache shared by all
# workers (a per-process cache would keep a logged-out session alive in the other workers).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Refused annotation requests (annotation.errors) answer with their status, code and field.
    "EXCEPTION_HANDLER": "annotation.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    # Research API writes (model registrations, imports, generation requests) per researcher
    # (annotation.api_lists.ResearchWriteThrottle); past it, 429 with Retry-After.
    "DEFAULT_THROTTLE_RATES": {"research_write": "120/minute"},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pixel-space post-training API",
    "DESCRIPTION": "Annotation, training and evaluation endpoints.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from this server's static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets that share a field name ("status", "kind", a round's stages) get names of their own.
    "ENUM_NAME_OVERRIDES": {
        "RoundStatusEnum": "annotation.models.Round.Status",
        "TrainingRunStatusEnum": "training.models.TrainingRun.Status",
        "TrainingRoundStageEnum": "training.models.TrainingRound.Stage",
        "EvaluationStatusEnum": "evaluation.models.EvaluationRound.Status",
        "ModelKindEnum": "catalog.models.ModelVersion.Kind", "RoundKindEnum": "annotation.models.Round.Kind",
    },
}

# --- Celery -----------------------------------------------------------------------------
# Two queues: `default` (CPU: imports, aggregation, exports, reports) and `gpu` (generation
# and training; run its workers with --concurrency 1). Routing is by task name: every task
# whose name starts with `gpu_` goes to the gpu queue.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "filesystem://"
    _broker_dir = VAR_DIR / "celery" / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
    for _folder in (_broker_dir, VAR_DIR / "celery" / "control"):
        _folder.mkdir(parents=True, exist_ok=True)
else:
    # Redis: a GPU task that runs for hours must not be re-delivered while still running.
    # A broker host that does not answer fails a connection in seconds, not at the OS's TCP timeout.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 7 * 24 * 3600)),
        "socket_connect_timeout": float(os.environ.get("CELERY_BROKER_CONNECT_TIMEOUT", 2)),
    }
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"*.gpu_*": {"queue": "gpu"}}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Tasks are sent through the outbox (config.celery.enqueue_on_commit): a send tries twice, a
# fraction of a second apart, so that a web request or command never waits long for a broker
# that is down; what was not sent waits in the outbox, and beat has it flushed every minute.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BEAT_SCHEDULE = {
    "outbox-flush": {"task": "outbox.tasks.outbox_flush", "schedule": 60.0, "options": {"expires": 55}},
    "training-runs-recover": {"task": "training.tasks.runs_recover", "schedule": 60.0, "options": {"expires": 55}},
    "imports-recover": {"task": "catalog.tasks.imports_recover", "schedule": 300.0, "options": {"expires": 290}},
    # Training rounds move on to their next stage within this many seconds of the last one's work being done.
    "training-rounds-advance": {"task": "training.tasks.rounds_advance", "schedule": 10.0, "options": {"expires": 9}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
