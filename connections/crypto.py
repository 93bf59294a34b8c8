"""Encryption at rest for connection secrets and cached tokens (Fernet, several keys)."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ERR_NO_KEYS = "STAGEMAP_ENCRYPTION_KEY is empty: set at least one Fernet key."
ERR_BAD_KEY = (
    "STAGEMAP_ENCRYPTION_KEY entry {position} is not a Fernet key "
    "(32 url-safe base64-encoded bytes; generate one with "
    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
)
ERR_UNDECRYPTABLE = (
    "Stored secrets cannot be decrypted with any key in STAGEMAP_ENCRYPTION_KEY "
    "(was a key removed too early?)."
)


class SecretsUnreadable(Exception):
    """No configured key decrypts the stored value."""


def _fernet() -> MultiFernet:
    keys = list(getattr(settings, "STAGEMAP_ENCRYPTION_KEYS", []) or [])
    if not keys:
        raise ImproperlyConfigured(ERR_NO_KEYS)
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode() if isinstance(key, str) else key))
        except (ValueError, TypeError):
            # Never echo the key itself.
            raise ImproperlyConfigured(ERR_BAD_KEY.format(position=position)) from None
    return MultiFernet(fernets)


def encrypt_json(value: dict) -> str:
    """Encrypt a JSON-serialisable dict with the newest key; empty dicts store as ''."""
    if not value:
        return ""
    return _fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(ciphertext: str) -> dict:
    """Decrypt with any configured key; '' is an empty dict."""
    if not ciphertext:
        return {}
    try:
        return json.loads(_fernet().decrypt(ciphertext.encode()))
    except InvalidToken:
        raise SecretsUnreadable(ERR_UNDECRYPTABLE) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the newest key (readable by any configured key); '' stays ''."""
    if not ciphertext:
        return ""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretsUnreadable(ERR_UNDECRYPTABLE) from None
