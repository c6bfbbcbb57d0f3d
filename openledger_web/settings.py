"""Settings for openledger_web.

Every value comes from the environment, with an embedded default that lets a fresh checkout run on one machine:
SQLite and the data directory under ``var/``, Redis on 127.0.0.1:6379 when it answers (else kombu's filesystem
broker), anvil on 127.0.0.1:8545. docs/configuration.md lists every variable.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    try:
        return int(os.getenv(name, default))
    except ValueError as e:
        raise ImproperlyConfigured(f"{name} must be an integer, got {os.getenv(name)!r}") from e


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", "True")
DATA_DIR = Path(os.getenv("DATA_DIR", str(BASE_DIR / "var"))).resolve()
for _folder in (DATA_DIR, DATA_DIR / "static"):
    with contextlib.suppress(OSError):  # a read-only deployment provides its own folders
        _folder.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off")
    # Only ever used with DEBUG on: a local checkout needs no configuration to start.
    SECRET_KEY = "django-insecure-local-development-key-never-use-in-production"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "csp",
    "openledger_web",
    "ledger",
    "accounts",
    "datanets",
    "modelfactory",
    "inference",
    "attribution",
    "rewards",
    "governance",
    "outbox",
]

MIDDLEWARE = [
    # under ASGI, sends sync streams (static files, downloads, exports) piece by piece instead of collecting them whole
    "openledger_web.streaming.AsgiStreamingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # before CSRF: its process_view refuses form posts that are not valid UTF-8 before the CSRF check parses them
    "openledger_web.middleware.FormEncodingMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "openledger_web.urls"
WSGI_APPLICATION = "openledger_web.wsgi.application"
ASGI_APPLICATION = "openledger_web.asgi.application"  # what `make run` serves (streams wait without a thread)
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "profile"
LOGOUT_REDIRECT_URL = "home"

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
                "openledger_web.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "60"),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and immediate transactions let the web server and the Celery workers share one SQLite file: readers never
    # wait, a writer waits only for the one transaction that holds the write lock, and every write transaction is
    # kept short (uploads are parsed before theirs starts). The busy timeout is a ceiling, not an expected wait.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": envint("SQLITE_BUSY_TIMEOUT_SECONDS", "10"),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # a file, not memory, so that a Celery worker started by a test sees the test database
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.getenv("CACHE_URL")}
        if os.getenv("CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "openledger_cache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(os.getenv("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(2 * 1024 * 1024))
FILE_UPLOAD_MAX_MEMORY_SIZE = envint("FILE_UPLOAD_MAX_MEMORY_SIZE", str(2 * 1024 * 1024))
UPLOAD_MAX_BYTES = envint("UPLOAD_MAX_BYTES", str(100 * 1024 * 1024))
# Every JSON request body is read through common.jsonguard with these limits.
JSON_MAX_BODY_BYTES = envint("JSON_MAX_BODY_BYTES", str(DATA_UPLOAD_MAX_MEMORY_SIZE))
JSON_MAX_DEPTH = envint("JSON_MAX_DEPTH", "72")  # a Datanet record may nest 64 levels; a body wraps it in a few more
JSON_MAX_STRING_CHARS = envint("JSON_MAX_STRING_CHARS", str(1024 * 1024))
JSON_MAX_NUMBER_CHARS = envint("JSON_MAX_NUMBER_CHARS", "100")
# Larger uploads stage their records in an unindexed table; the checks task indexes them (datanets.StagedRecord).
UPLOAD_STAGE_ABOVE_BYTES = envint("UPLOAD_STAGE_ABOVE_BYTES", str(16 * 1024 * 1024))
# Whatever the upload's size, what it expands to (a zip's entries, blank lines included) and how long it is read.
UPLOAD_MAX_EXPANDED_BYTES = envint("UPLOAD_MAX_EXPANDED_BYTES", str(256 * 1024 * 1024))
UPLOAD_MAX_PARSE_SECONDS = envint("UPLOAD_MAX_PARSE_SECONDS", "120")
# A retried upload stores nothing twice: the same bytes from the same user to the same Datanet within this window
# return the first contribution (0: only an Idempotency-Key header makes a retry).
CONTRIBUTION_REPLAY_WINDOW_SECONDS = envint("CONTRIBUTION_REPLAY_WINDOW_SECONDS", str(24 * 3600))

# Security: strict in production; a local checkout speaks plain HTTP on 127.0.0.1.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie; kept readable for the API client
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_PROXY", "False") else None
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # secure unless told otherwise: only a plain-HTTP test of the production settings turns these off
    SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "True")
    CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", "True")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# Content-Security-Policy (django-csp), in development too so the browser tests see what production serves: only
# our own files run or style the page; an inline <script> needs the request's nonce (`{{ request.csp_nonce }}`).
# data: images are pico's inline SVG icons. The API docs views loosen it for Redoc's injected styles (urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LOGIN_RATE_LIMIT_PER_ACCOUNT = envint("LOGIN_RATE_LIMIT_PER_ACCOUNT", "5")
LOGIN_RATE_LIMIT_PER_IP = envint("LOGIN_RATE_LIMIT_PER_IP", "20")
LOGIN_RATE_LIMIT_WINDOW_SECONDS = envint("LOGIN_RATE_LIMIT_WINDOW_SECONDS", "900")
# Per account from every address at once: a slower ceiling that addresses which signed in before pass
LOGIN_RATE_LIMIT_ACCOUNT_CEILING = envint("LOGIN_RATE_LIMIT_ACCOUNT_CEILING", "50")
LOGIN_RATE_LIMIT_CEILING_WINDOW_SECONDS = envint("LOGIN_RATE_LIMIT_CEILING_WINDOW_SECONDS", "3600")
LOGIN_KNOWN_ADDRESS_DAYS = envint("LOGIN_KNOWN_ADDRESS_DAYS", "90")
WALLET_NONCE_TTL_SECONDS = envint("WALLET_NONCE_TTL_SECONDS", "600")
# Only behind a proxy that overwrites X-Forwarded-For may its first address stand for the client (login limits).
TRUST_X_FORWARDED_FOR = envbool("TRUST_X_FORWARDED_FOR", "False")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PARSER_CLASSES": [
        "common.jsonguard.GuardedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "common.api.exception_handlers.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OpenLedger Web API",
    "DESCRIPTION": "Datanets, ModelFactory, inference and Proof of Attribution, with on-chain lineage.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


def _redis_reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.3):
            return True
    except OSError:
        return False


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL") or (
    DEFAULT_REDIS_URL if _redis_reachable(DEFAULT_REDIS_URL) else "filesystem://"
)
BROKER_KIND = "filesystem" if CELERY_BROKER_URL.startswith("filesystem") else urlparse(CELERY_BROKER_URL).scheme
# The longest job (a training run) must finish before Redis hands its unacknowledged message to another worker.
TRAINING_MAX_SECONDS = envint("TRAINING_MAX_SECONDS", str(6 * 3600))
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": TRAINING_MAX_SECONDS + 3600}
if BROKER_KIND == "filesystem":
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        data_folder_in=str(BROKER_DIR / "queue"),
        data_folder_out=str(BROKER_DIR / "queue"),
        control_folder=str(BROKER_DIR / "control"),
        store_processed=False,
    )
CELERY_RESULT_BACKEND = os.getenv("CELERY_RESULT_BACKEND") or None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "ledger.tasks.*": {"queue": "chain"},
    "governance.tasks.*": {"queue": "chain"},
    "modelfactory.tasks.training_*": {"queue": "training"},
    "inference.tasks.*": {"queue": "inference"},
    "attribution.tasks.attribution_*": {"queue": "attribution"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker outage of any length is waited out: workers and beat reconnect forever (Celery's default gives up after
# 100 tries), and the consumer below survives losing the broker mid-task (openledger_web.celery.Consumer).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CONSUMER = "openledger_web.celery:Consumer"
# Messages to Celery go through the outbox (outbox.services.enqueue_on_commit): a row sent after commit, and sent
# again by beat when still unsent this long after it was written; /healthz reports unsent rows older than
# OUTBOX_STALE_SECONDS; sent rows are deleted after OUTBOX_KEEP_SENT_DAYS.
OUTBOX_RESEND_AFTER_SECONDS = envint("OUTBOX_RESEND_AFTER_SECONDS", "10")
OUTBOX_STALE_SECONDS = envint("OUTBOX_STALE_SECONDS", "60")
OUTBOX_KEEP_SENT_DAYS = envint("OUTBOX_KEEP_SENT_DAYS", "7")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Rewards (issue 6): open accruals close into an on-chain reward epoch this often; where the protocol pool is paid
# (empty: the chain signer, which is the treasury that funds epochs).
REWARDS_EPOCH_SECONDS = envint("REWARDS_EPOCH_SECONDS", "600")
REWARDS_POOL_ADDRESS = os.getenv("REWARDS_POOL_ADDRESS", "")

# Governance (docs/governance.md): what new governance contracts are deployed with. After deployment only an executed
# proposal changes them; these settings never override the chain.
GOVERNANCE_VOTING_DELAY_BLOCKS = envint("GOVERNANCE_VOTING_DELAY_BLOCKS", "1")
GOVERNANCE_VOTING_PERIOD_BLOCKS = envint("GOVERNANCE_VOTING_PERIOD_BLOCKS", "150")
GOVERNANCE_PROPOSAL_THRESHOLD = envint("GOVERNANCE_PROPOSAL_THRESHOLD", str(10**15))
GOVERNANCE_QUORUM_PERCENT = envint("GOVERNANCE_QUORUM_PERCENT", "4")
GOVERNANCE_TIMELOCK_SECONDS = envint("GOVERNANCE_TIMELOCK_SECONDS", "60")
GOVERNANCE_CONTRIBUTORS_BPS = envint("GOVERNANCE_CONTRIBUTORS_BPS", "7000")
GOVERNANCE_BUILDER_BPS = envint("GOVERNANCE_BUILDER_BPS", "2000")
GOVERNANCE_MIN_QUALITY_SCORE = envint("GOVERNANCE_MIN_QUALITY_SCORE", "0")
GOVERNANCE_DEPLOYMENT_GATE = envbool("GOVERNANCE_DEPLOYMENT_GATE", "0")
GOVERNANCE_DEPLOYMENT_STAKE = envint("GOVERNANCE_DEPLOYMENT_STAKE", str(10**15))
GOVERNANCE_STAKE_SLASH_BPS = envint("GOVERNANCE_STAKE_SLASH_BPS", "5000")
# how many governance relays (proposals, votes, delegations, stakes) one account may ask for
GOVERNANCE_RELAY_RATE_LIMIT = os.getenv("GOVERNANCE_RELAY_RATE_LIMIT", "20/hour")
# Attribution retries (attribution.services.run_attributions_retry, by beat): attempts in all, the first backoff
# (doubling, capped at an hour), and how long a pending attribution may go without a result before it counts as lost.
ATTRIBUTION_MAX_ATTEMPTS = 5
ATTRIBUTION_RETRY_SECONDS = 60
ATTRIBUTION_STALE_SECONDS = 600
CELERY_BEAT_SCHEDULE = {
    "rewards-epoch-close": {
        "task": "rewards.tasks.rewards_epoch_close_task",
        "schedule": float(REWARDS_EPOCH_SECONDS),
    },
    "rewards-dispatch": {"task": "ledger.tasks.rewards_dispatch_task", "schedule": 10.0},
    "rewards-confirm": {"task": "ledger.tasks.rewards_confirm_task", "schedule": 5.0},
    "governance-dispatch": {"task": "ledger.tasks.governance_dispatch_task", "schedule": 10.0},
    "governance-confirm": {"task": "ledger.tasks.governance_confirm_task", "schedule": 5.0},
    "governance-index": {"task": "governance.tasks.index_task", "schedule": 5.0},
    "anchor-dispatch": {"task": "ledger.tasks.anchor_dispatch_task", "schedule": 10.0},
    "anchor-confirm": {"task": "ledger.tasks.anchor_confirm_task", "schedule": 5.0},
    "chain-reset-check": {"task": "ledger.tasks.chain_check_task", "schedule": 30.0},
    "training-reap-stale": {"task": "modelfactory.tasks.jobs_reap_stale_task", "schedule": 60.0},
    "inference-reap-stale": {"task": "inference.runs_reap_stale_task", "schedule": 15.0},
    "attribution-retry": {"task": "attribution.tasks.runs_attribution_retry_task", "schedule": 30.0},
    "inference-seal-batch": {"task": "inference.runs_seal_batch_task", "schedule": 15.0},
    "datanets-seal-receipts": {"task": "datanets.tasks.receipts_seal_batches_task", "schedule": 15.0},
    "datanets-checks-requeue": {"task": "datanets.tasks.contributions_checks_requeue_task", "schedule": 600.0},
    "outbox-resend": {"task": "outbox.tasks.outbox_resend_task", "schedule": 10.0},
}
# A running training job whose heartbeat is older than this is marked failed (worker lost) so it can be retried.
TRAINING_STALE_SECONDS = envint("TRAINING_STALE_SECONDS", "120")
WORKER_HEARTBEAT_SECONDS = envint("WORKER_HEARTBEAT_SECONDS", "10")

# E-mail (the notices to owners of versions trained on withdrawn records): printed by the console backend unless a
# backend is set (django.core.mail.backends.smtp.EmailBackend with the EMAIL_HOST settings in production)
EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "False")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "OpenLedger <noreply@localhost>")

EVM_RPC_URL = os.getenv("EVM_RPC_URL", "http://127.0.0.1:8545")
EVM_CHAIN_ID = envint("EVM_CHAIN_ID", "31337")
# anvil's first well-known development account; only ever a default for the local dev chain.
ANVIL_DEFAULT_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
EVM_SIGNER_KEY = os.getenv("EVM_SIGNER_KEY", "")
EVM_KEYSTORE_FILE = os.getenv("EVM_KEYSTORE_FILE", "")
EVM_KEYSTORE_PASSWORD = os.getenv("EVM_KEYSTORE_PASSWORD", "")
CHAIN_CONFIRMATIONS = envint("CHAIN_CONFIRMATIONS", "1")
CHAIN_TX_TIMEOUT_SECONDS = envint("CHAIN_TX_TIMEOUT_SECONDS", "120")
CHAIN_STATE_FILE = DATA_DIR / "chain" / "anvil-state.json"
ANCHOR_MAX_ATTEMPTS = envint("ANCHOR_MAX_ATTEMPTS", "12")

MODELS_DIR = DATA_DIR / "models"
DEFAULT_BASE_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_BASE_MODEL_DIR = Path(os.getenv("DEFAULT_BASE_MODEL_DIR", str(MODELS_DIR / "smollm2-135m-instruct")))

# Inference (issue 5): the engine's adapter cache and batching, request limits, run batches, lost-worker reaping.
INFERENCE_CACHE_ADAPTERS = envint("INFERENCE_CACHE_ADAPTERS", "64")
INFERENCE_CACHE_BYTES = envint("INFERENCE_CACHE_BYTES", str(1 << 30))
# The warm tier (issue 19): adapters evicted from memory wait, checked and converted, in files on local disk.
INFERENCE_WARM_DIR = Path(os.getenv("INFERENCE_WARM_DIR", str(DATA_DIR / "inference-warm")))
INFERENCE_WARM_BYTES = envint("INFERENCE_WARM_BYTES", str(8 << 30))
INFERENCE_PIN_VERSIONS = [int(v) for v in envlist("INFERENCE_PIN_VERSIONS", "")]
INFERENCE_BATCH_WAIT_MS = envint("INFERENCE_BATCH_WAIT_MS", "10")
INFERENCE_MAX_BATCH_SIZE = envint("INFERENCE_MAX_BATCH_SIZE", "32")
INFERENCE_MAX_PROMPT_TOKENS = envint("INFERENCE_MAX_PROMPT_TOKENS", "1024")
INFERENCE_MAX_PROMPT_CHARS = envint("INFERENCE_MAX_PROMPT_CHARS", "32000")
INFERENCE_MAX_NEW_TOKENS = envint("INFERENCE_MAX_NEW_TOKENS", "512")
INFERENCE_RATE_LIMIT = os.getenv("INFERENCE_RATE_LIMIT", "60/minute")
# Pages and API calls that ask the chain (an eth_call each: the verify pages, a record proof's on-chain check) answer
# anyone, so each client (user, else address) gets this many per window; beyond it a 429 with Retry-After.
CHAIN_READ_RATE_LIMIT = os.getenv("CHAIN_READ_RATE_LIMIT", "30/minute")
INFERENCE_BATCH_RUNS = envint("INFERENCE_BATCH_RUNS", "256")
INFERENCE_BATCH_SECONDS = envint("INFERENCE_BATCH_SECONDS", "300")
# Receipts (issue 12): a beat task seals the receipts of submissions and curation decisions into one anchored batch
# (one transaction) per RECEIPT_BATCH_SIZE receipts, or whatever waits once the oldest is RECEIPT_BATCH_SECONDS old.
RECEIPT_BATCH_SIZE = envint("RECEIPT_BATCH_SIZE", "256")
RECEIPT_BATCH_SECONDS = envint("RECEIPT_BATCH_SECONDS", "300")
INFERENCE_HEARTBEAT_SECONDS = envint("INFERENCE_HEARTBEAT_SECONDS", "5")
# A running run whose heartbeat is older than this, or a run queued longer than the queue timeout, is failed.
INFERENCE_STALE_SECONDS = envint("INFERENCE_STALE_SECONDS", "60")
INFERENCE_QUEUE_TIMEOUT_SECONDS = envint("INFERENCE_QUEUE_TIMEOUT_SECONDS", "900")
INFERENCE_WAIT_SECONDS = envint("INFERENCE_WAIT_SECONDS", "300")
INFERENCE_STREAM_TTL_SECONDS = envint("INFERENCE_STREAM_TTL_SECONDS", "3600")
# Several inference workers (docs/decisions.md, "Runs are routed to inference workers by rendezvous hashing"): a run
# goes to its adapter's worker unless that one holds more than this factor times the average unfinished runs; a run
# whose worker was lost is sent to another live one, up to INFERENCE_MAX_ATTEMPTS claims in all, then failed.
try:
    INFERENCE_ROUTE_LOAD_FACTOR = float(os.getenv("INFERENCE_ROUTE_LOAD_FACTOR", "1.25"))
except ValueError as e:
    raise ImproperlyConfigured("INFERENCE_ROUTE_LOAD_FACTOR must be a number") from e
if not 1 <= INFERENCE_ROUTE_LOAD_FACTOR <= 1e6:
    raise ImproperlyConfigured(f"INFERENCE_ROUTE_LOAD_FACTOR must be between 1 and 1e6: {INFERENCE_ROUTE_LOAD_FACTOR}")
INFERENCE_MAX_ATTEMPTS = envint("INFERENCE_MAX_ATTEMPTS", "3")
# torch threads of each inference worker process (0: torch's default, every core); `make run` sets it to the cores
# divided among its INFERENCE_WORKERS processes
INFERENCE_TORCH_THREADS = envint("INFERENCE_TORCH_THREADS", "0")

# Proof of Attribution (issue 6): projected gradient width, the shortest verbatim span that counts, and the fee
# each attributed run carries, in the reward token's smallest unit (18 decimals: 10**15 is 0.001 token).
ATTRIBUTION_FEATURE_DIM = envint("ATTRIBUTION_FEATURE_DIM", "1024")
ATTRIBUTION_MIN_SPAN_TOKENS = envint("ATTRIBUTION_MIN_SPAN_TOKENS", "8")
INFERENCE_RUN_FEE = envint("INFERENCE_RUN_FEE", str(10**15))
# The self-check at the end of each training or merge job (attribution.selfcheck): how many of the version's own
# training questions it answers and attributes (0: off), and the time it may take; its figures go on the version's
# index, and an unfinished one says so.
ATTRIBUTION_SELFCHECK_SAMPLE = envint("ATTRIBUTION_SELFCHECK_SAMPLE", "12")
ATTRIBUTION_SELFCHECK_SECONDS = envint("ATTRIBUTION_SELFCHECK_SECONDS", "60")
# Attribution worker processes of `make run` and the Procfile (`-c` of the `attribution` queue's worker; scripts/run.py
# reads the same variable with the same default).
ATTRIBUTION_WORKERS = envint("ATTRIBUTION_WORKERS", "2")
# The most answers of one version an attribution task scores together in one packed model pass (1: one at a time).
ATTRIBUTION_BATCH_MAX = envint("ATTRIBUTION_BATCH_MAX", "8")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # one line per beat tick and per task would bury what matters; task failures still log as errors
        "celery.app.trace": {"level": os.getenv("CELERY_TASK_LOG_LEVEL", "WARNING")},
        "celery.worker.strategy": {"level": os.getenv("CELERY_TASK_LOG_LEVEL", "WARNING")},
        "celery.beat": {"level": os.getenv("CELERY_TASK_LOG_LEVEL", "WARNING")},
    },
}
