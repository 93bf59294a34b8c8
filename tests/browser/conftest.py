"""Browser fixtures: Debian's Chromium (installed here when missing and allowed), one browser
for the module, a fresh context and page per test against pytest-django's live server."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser.chromium import CHROMIUM, chromium_install
from tests.sync.factories import org_connection_fixture  # noqa: F401

TIMEOUT_MS = 15_000  # what a step may take before the test fails (far above what it needs)

_skip_reasons: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for reason in _skip_reasons:
        terminalreporter.write_line(f"browser tests skipped: {reason}", yellow=True)


@pytest.fixture(scope="session")
def chromium(request):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    reason = chromium_install(say=say)
    if reason:
        _skip_reasons.append(reason)
        pytest.skip(f"browser tests skipped: {reason}")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium, django_db_setup):
    """Playwright's sync API keeps an asyncio loop running in this thread. While it runs,
    Django refuses ORM calls (hence DJANGO_ALLOW_ASYNC_UNSAFE) and hands this thread other
    connection objects (asgiref keeps them per context then), which lack the seed data that
    serialized_rollback restores: give it to them. The browser lives for this module only, so
    the tests after it run with the loop gone, the check back on and their own connections."""
    from django.db import connections

    seeds = {
        alias: connections[alias]._test_serialized_contents
        for alias in connections
        if hasattr(connections[alias], "_test_serialized_contents")
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            for alias, seed in seeds.items():
                connections[alias]._test_serialized_contents = seed
            launched = playwright.chromium.launch(
                executable_path=str(chromium), headless=True, args=["--no-sandbox"]
            )
            yield launched
            launched.close()
            connections.close_all()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def sign_in(page, live_server):
    """Open a signed-in session for a user without the login form (its own test covers it)."""
    from django.conf import settings
    from django.test import Client

    def signed_in(user) -> None:
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        page.context.add_cookies(
            [{"name": name, "value": client.cookies[name].value, "url": live_server.url}]
        )

    return signed_in


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Users are made with a password and one test logs in with it; the default hasher costs
    # half a second a hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tasks_run_inline(monkeypatch):
    """django-q2 runs a queued task in the process that queues it (here the live server's
    thread), as a worker would right away: "Sync now" and a move's push end within the request.
    """
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
