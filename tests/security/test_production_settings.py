"""Production refuses the public development keys and an unknown DJANGO_ENV."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from stagemap_site import settings as site_settings

ROOT = Path(__file__).resolve().parents[2]
DEV_SECRET_KEY = site_settings._DEV_SECRET_KEY
DEV_ENCRYPTION_KEY = site_settings._DEV_ENCRYPTION_KEY


def _check(**env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in {"SECRET_KEY", "DATABASE_URL", "STAGEMAP_ENCRYPTION_KEY", "DJANGO_ENV"}}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )


def _production(**overrides) -> dict:
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": "k3y-" + Fernet.generate_key().decode() * 2,
        "STAGEMAP_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "stagemap.example.com",
        **overrides,
    }


def test_production_refuses_the_development_secret_key():
    result = _check(**_production(SECRET_KEY=DEV_SECRET_KEY))
    assert result.returncode != 0
    assert site_settings.ERR_DEV_DEFAULT.format(name="SECRET_KEY") in result.stderr


def test_production_refuses_the_development_encryption_key():
    result = _check(**_production(STAGEMAP_ENCRYPTION_KEY=DEV_ENCRYPTION_KEY))
    assert result.returncode != 0
    assert site_settings.ERR_DEV_DEFAULT.format(name="STAGEMAP_ENCRYPTION_KEY") in result.stderr


def test_production_refuses_the_development_key_among_rotated_keys():
    keys = f"{Fernet.generate_key().decode()}, {DEV_ENCRYPTION_KEY}"
    result = _check(**_production(STAGEMAP_ENCRYPTION_KEY=keys))
    assert result.returncode != 0
    assert site_settings.ERR_DEV_DEFAULT.format(name="STAGEMAP_ENCRYPTION_KEY") in result.stderr
    assert DEV_ENCRYPTION_KEY not in result.stderr.replace(
        site_settings.ERR_DEV_DEFAULT.format(name="STAGEMAP_ENCRYPTION_KEY"), ""
    )


@pytest.mark.parametrize("value", ["production", "PRODUCTION", " Production "])
def test_django_env_is_read_in_any_case(value):
    result = _check(**_production(DJANGO_ENV=value, SECRET_KEY=DEV_SECRET_KEY))
    # Recognised as production: the development key is refused.
    assert result.returncode != 0
    assert site_settings.ERR_DEV_DEFAULT.format(name="SECRET_KEY") in result.stderr


@pytest.mark.parametrize("value", ["development", "Development", "TEST", "test"])
def test_development_and_test_start_with_the_defaults(value):
    result = _check(DJANGO_ENV=value)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", ["prod", "staging", "", "production;"])
def test_unknown_django_env_is_refused_with_a_clear_message(value):
    result = _check(DJANGO_ENV=value)
    assert result.returncode != 0
    assert site_settings.ERR_DJANGO_ENV.format(value=value) in result.stderr
