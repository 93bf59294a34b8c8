"""Production settings refuse to start without secrets and pass `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
    env.pop("STAGEMAP_ENCRYPTION_KEY", None)
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_secret_key():
    result = _run(["manage.py", "check"], DJANGO_ENV="production",
                  STAGEMAP_ENCRYPTION_KEY=Fernet.generate_key().decode())
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DJANGO_ENV=production" in result.stderr


def test_production_refuses_to_start_without_encryption_key():
    result = _run(["manage.py", "check"], DJANGO_ENV="production", SECRET_KEY="x" * 60)
    assert result.returncode != 0
    assert "STAGEMAP_ENCRYPTION_KEY must be set when DJANGO_ENV=production" in result.stderr


def test_production_settings_pass_check_deploy():
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_ENV="production",
        SECRET_KEY="k3y-" + Fernet.generate_key().decode() * 2,
        STAGEMAP_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="stagemap.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_defaults_start_without_any_variable():
    result = _run(["manage.py", "check"], DJANGO_ENV="development")
    assert result.returncode == 0, result.stderr


def test_q_cluster_uses_orm_broker_by_default_and_redis_when_configured():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='stagemap_site.settings';"
        "django.setup(); from django.conf import settings as s;"
        "q = s.Q_CLUSTER; print(q.get('orm'), q.get('redis'), q['timeout'] < q['retry'],"
        " q['catch_up'])"
    )
    plain = _run(["-c", code])
    assert plain.stdout.split() == ["default", "None", "True", "False"]
    redis = _run(["-c", code], REDIS_URL="redis://127.0.0.1:6379/3")
    assert redis.stdout.split() == ["None", "redis://127.0.0.1:6379/3", "True", "False"]


def test_alert_links_point_at_the_production_host_unless_set():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='stagemap_site.settings';"
        "django.setup(); from django.conf import settings as s; print(s.STAGEMAP_SITE_URL)"
    )
    production = {
        "DJANGO_ENV": "production",
        "SECRET_KEY": "k3y-" + Fernet.generate_key().decode() * 2,
        "STAGEMAP_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": ".internal.example.com,*,stagemap.example.com",
    }
    assert _run(["-c", code], **production).stdout.strip() == "https://internal.example.com"
    chosen = _run(["-c", code], **production, STAGEMAP_SITE_URL="https://ops.example.com/")
    assert chosen.stdout.strip() == "https://ops.example.com"
    assert _run(["-c", code]).stdout.strip() == "http://127.0.0.1:8000"


def test_queue_name_and_minutes_in_fractions_come_from_the_environment():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='stagemap_site.settings';"
        "django.setup(); from django.conf import settings as s;"
        "from django_q.brokers import get_broker;"
        "print(s.Q_CLUSTER['name'], get_broker().list_key, repr(s.STAGEMAP_DELTA_MINUTES),"
        " repr(s.STAGEMAP_PUSH_MINUTES), s.STAGEMAP_SCHEDULE_SLACK_SECONDS)"
    )
    default = _run(["-c", code], REDIS_URL="redis://127.0.0.1:6379/3")
    assert default.stdout.split() == ["stagemap", "django_q:stagemap:q", "15", "5", "30.0"]
    chosen = _run(
        ["-c", code], REDIS_URL="redis://127.0.0.1:6379/3", Q_NAME="stagemap-staging",
        STAGEMAP_DELTA_MINUTES="0.25", STAGEMAP_PUSH_MINUTES="2",
        STAGEMAP_SCHEDULE_SLACK_SECONDS="4",
    )
    assert chosen.stdout.split() == [
        "stagemap-staging", "django_q:stagemap-staging:q", "0.25", "2", "4.0"
    ], chosen.stderr
