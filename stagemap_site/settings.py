"""stagemap settings: everything that differs between machines comes from the environment."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENVIRONMENTS = ("development", "production", "test")
ERR_DJANGO_ENV = "DJANGO_ENV is {value!r}: it must be one of development, production or test."
ERR_REQUIRED = "{name} must be set when DJANGO_ENV=production (see README, Settings)."
ERR_DEV_DEFAULT = (
    "{name} is the development default, which is public: set a real value for production."
)

DJANGO_ENV = env.str("DJANGO_ENV", default="development").strip().lower()
if DJANGO_ENV not in DJANGO_ENVIRONMENTS:
    raise ImproperlyConfigured(ERR_DJANGO_ENV.format(value=env.str("DJANGO_ENV")))
PRODUCTION = DJANGO_ENV == "production"

# Development-only defaults; production refuses to start without real values.
_DEV_SECRET_KEY = "django-insecure-stagemap-development-only"
_DEV_ENCRYPTION_KEY = "c3RhZ2VtYXAtZGV2ZWxvcG1lbnQta2V5LW5vdC1zZWM="


def _required_in_production(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if PRODUCTION:
        if not value:
            raise ImproperlyConfigured(ERR_REQUIRED.format(name=name))
        # The default may hide among several comma-separated keys (rotation).
        if dev_default in (part.strip() for part in value.split(",")):
            raise ImproperlyConfigured(ERR_DEV_DEFAULT.format(name=name))
    return value or dev_default


SECRET_KEY = _required_in_production("SECRET_KEY", _DEV_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Fernet keys, newest first; older keys still decrypt so secrets survive a rotation.
STAGEMAP_ENCRYPTION_KEYS = [
    key.strip()
    for key in _required_in_production("STAGEMAP_ENCRYPTION_KEY", _DEV_ENCRYPTION_KEY).split(",")
    if key.strip()
]

INSTALLED_APPS = [
    "stagemap_site.apps.StagemapAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "simple_history",
    "import_export",
    "django_q",
    "connections",
    "mappings",
    "sync",
    # Last, so its post_migrate handler sees every permission of the apps above.
    "stagemap_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

if PRODUCTION:
    # gunicorn serves the admin's static files itself; runserver does in development.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "stagemap_site.urls"
WSGI_APPLICATION = "stagemap_site.wsgi.application"
ASGI_APPLICATION = "stagemap_site.asgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and the web process share the file: wait for locks instead of failing at once.
    # In WAL mode synchronous=NORMAL cannot corrupt the file; a power cut may lose the last
    # commits, which the next sync re-reads (its cursor moves only after a commit).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

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
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="stagemap@localhost")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
ADMINS = [("stagemap admins", addr) for addr in env.list("ADMIN_EMAILS", default=[])]
EMAIL_SUBJECT_PREFIX = env.str("EMAIL_SUBJECT_PREFIX", default="[stagemap] ")
# A mail server that hangs must not hold a sync run (alerts are sent as a run ends).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# The address alert mails link to; production defaults to the first allowed host over https.
_SITE_HOST = next((host for host in ALLOWED_HOSTS if host and "*" not in host), "")
STAGEMAP_SITE_URL = env.str(
    "STAGEMAP_SITE_URL",
    default=f"https://{_SITE_HOST.lstrip('.')}" if PRODUCTION and _SITE_HOST
    else "http://127.0.0.1:8000",
).rstrip("/")

# django-import-export: importing needs the model's own "import" permission
# (e.g. mappings.import_picklistvalue), not just "change".
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "import"
# Off on purpose: it only strips a leading "=", which neither covers + - @ nor round-trips;
# the mapping resource quotes formula cells itself (mappings.csv_cells) and its import undoes it.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False

# Django's default: the mapping page posts only the values that changed (a page at most).
DATA_UPLOAD_MAX_NUMBER_FIELDS = env.int("DATA_UPLOAD_MAX_NUMBER_FIELDS", default=1000)

# The monitoring endpoint /health.json accepts "Authorization: Bearer <this>"; unset: staff only.
STAGEMAP_HEALTH_TOKEN = env.str("STAGEMAP_HEALTH_TOKEN", default="")

# Salesforce
STAGEMAP_SALESFORCE_API_VERSION = env.str("STAGEMAP_SALESFORCE_API_VERSION", default="62.0")
STAGEMAP_SALESFORCE_CA_BUNDLE = env.str("STAGEMAP_SALESFORCE_CA_BUNDLE", default="")
STAGEMAP_SALESFORCE_TIMEOUT = env.float("STAGEMAP_SALESFORCE_TIMEOUT", default=60.0)
STAGEMAP_SALESFORCE_RETRIES = env.int("STAGEMAP_SALESFORCE_RETRIES", default=4)
STAGEMAP_SALESFORCE_BACKOFF = env.float("STAGEMAP_SALESFORCE_BACKOFF", default=1.0)

# Sync
STAGEMAP_SYNC_LOOKBACK_MINUTES = env.int("STAGEMAP_SYNC_LOOKBACK_MINUTES", default=10)
# A run renews its lease from a heartbeat thread; a dead worker's lease expires this long after
# its last beat (see sync/services/runs.py).
STAGEMAP_SYNC_LEASE_SECONDS = env.int("STAGEMAP_SYNC_LEASE_SECONDS", default=120)
STAGEMAP_LEASE_HEARTBEAT_SECONDS = env.float("STAGEMAP_LEASE_HEARTBEAT_SECONDS", default=30.0)
STAGEMAP_SYNC_PAGE_SIZE = env.int("STAGEMAP_SYNC_PAGE_SIZE", default=2000)
STAGEMAP_SYNC_OPPORTUNITIES = env.bool("STAGEMAP_SYNC_OPPORTUNITIES", default=True)
STAGEMAP_SYNC_PREFETCH = env.bool("STAGEMAP_SYNC_PREFETCH", default=True)
STAGEMAP_PUSH_PIPELINE = env.bool("STAGEMAP_PUSH_PIPELINE", default=True)


def _minutes(name: str, default: int) -> int | float:
    # Fractions of a minute are for tests that run several intervals in seconds
    # (tests/sync/test_workers.py); whole minutes stay ints for the messages that show them.
    value = env.float(name, default=float(default))
    return int(value) if value.is_integer() else value


STAGEMAP_DELTA_MINUTES = _minutes("STAGEMAP_DELTA_MINUTES", 15)
STAGEMAP_REFRESH_HOURS = env.int("STAGEMAP_REFRESH_HOURS", default=24)
STAGEMAP_PUSH_MINUTES = _minutes("STAGEMAP_PUSH_MINUTES", 5)
# Defaults of the per-connection intervals above and below; a connection may set its own.
STAGEMAP_RECONCILE_DAYS = env.int("STAGEMAP_RECONCILE_DAYS", default=7)
# How often the delta and push fan-outs look for due connections (refresh and reconcile: hourly).
STAGEMAP_SCHEDULE_TICK_MINUTES = env.int("STAGEMAP_SCHEDULE_TICK_MINUTES", default=1)
# How much earlier than its interval a tick may start a run: django-q2 looks at the schedules
# about every 30 s, so a 1-minute tick fires up to that late and the next one as early.
STAGEMAP_SCHEDULE_SLACK_SECONDS = env.float("STAGEMAP_SCHEDULE_SLACK_SECONDS", default=30.0)
STAGEMAP_RETENTION_DAYS = env.int("STAGEMAP_RETENTION_DAYS", default=90)

# django-q2: the ORM broker needs nothing installed; REDIS_URL moves the queue to Redis.
REDIS_URL = env.str("REDIS_URL", default="")
Q_CLUSTER = {
    # Also the prefix of every Redis key (django_q:<name>:q, ...): installations sharing one
    # Redis need a name each, and every worker and web process of one needs the same.
    "name": env.str("Q_NAME", default="stagemap"),
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": env.int("Q_TIMEOUT", default=1800),
    "retry": env.int("Q_RETRY", default=2100),
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 500,
    "label": "Task queue",
    "sync": env.bool("Q_SYNC", default=False),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # urllib3 logs full URLs at DEBUG, which would include OAuth query strings.
        "urllib3": {"level": "WARNING"},
    },
}

if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
