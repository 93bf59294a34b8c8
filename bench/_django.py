"""Django set-up shared by the benchmarks: settings from the environment, DEBUG off as in
production (DEBUG formats and keeps every query, which would hide a real leak and slow Python)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django(
    database_url: str | None, sqlite_path: str, *, migrate: bool = True, ca_path: str = ""
) -> None:
    """Point Django at `database_url` (default: a SQLite file at `sqlite_path`) and set it up;
    `migrate` migrates that database itself (otherwise the caller makes a test database),
    `ca_path` is the emulator's CA for the Salesforce client."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "stagemap_site.settings"
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{sqlite_path}"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if ca_path:
        os.environ["STAGEMAP_SALESFORCE_CA_BUNDLE"] = ca_path
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def set_ca_bundle(ca_path: str) -> None:
    """Trust this emulator's CA from now on (each emulator run makes its own)."""
    from django.conf import settings

    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = ca_path
