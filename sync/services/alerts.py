"""Alert mails: the stagemap admins hear once when a connection turns unhealthy and once when it
recovers, never once per run; the state they were last told is stored per connection."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection
from connections.salesforce import redact
from connections.selectors import connection_secret_values
from stagemap_site.permissions import ADMINS
from sync.health import ConnectionHealth, connections_health
from sync.models import ConnectionAlert, SyncRun

logger = logging.getLogger(__name__)

TURNED_UNHEALTHY = "unhealthy"
RECOVERED = "recovered"

SUBJECT_UNHEALTHY = "{name} needs attention"
SUBJECT_RECOVERED = "{name} is healthy again"
BODY_UNHEALTHY = """\
The Salesforce connection “{name}” is unhealthy since {since}.

What is wrong:
{problems}

Health page: {health_url}
Connection: {connection_url}

You get one mail when a connection turns unhealthy and one when it recovers, not one per run.
"""
BODY_RECOVERED = """\
The Salesforce connection “{name}” is healthy again since {since}.
It was unhealthy from {was_since} ({duration}).

It had:
{problems}

Health page: {health_url}
"""
RUN_BAD = (SyncRun.Status.FAILED, SyncRun.Status.STOPPED_BUDGET)
NO_RECIPIENTS = "alert for %s (%s) not sent: no stagemap admin has an e-mail address"
SEND_FAILED = "alert for %s (%s) not sent, will retry at the next check: %s"


@dataclass
class AlertCheck:
    connection: Connection
    transition: str = ""  # TURNED_UNHEALTHY, RECOVERED or "" (no change)
    healthy: bool = True
    since: datetime | None = None
    recipients: list[str] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict:
        return {
            "connection": self.connection.name,
            "transition": self.transition or None,
            "healthy": self.healthy,
            "since": self.since.isoformat() if self.since else None,
            "mailed": len(self.recipients),
            "error": self.error or None,
        }


def alert_recipients() -> list[str]:
    """Active members of the stagemap admins group who have an address, and ADMIN_EMAILS."""
    users = get_user_model().objects.filter(is_active=True, groups__name=ADMINS).exclude(email="")
    addresses = [*users.values_list("email", flat=True), *(addr for _, addr in settings.ADMINS)]
    seen, unique = set(), []
    for address in addresses:
        address = address.strip()
        if address and address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def alerts_check(*, connection: Connection | None = None) -> list[AlertCheck]:
    """Compare each connection's health with what its admins were last told; mail a change.

    A paused connection, and one that never ran, keep their state: pausing is not recovering
    and a connection being set up has nothing to report yet. A mail that cannot be sent leaves
    the state as it was, so the next check tries again.
    """
    checks = []
    for health in connections_health(connection=connection):
        if health.connection.is_paused or not any(health.last_runs.values()):
            continue
        checks.append(_check(health))
    return checks


def alerts_after_run(*, run: SyncRun) -> None:
    """The check as a run ends, for the changes a run makes: it failed, a push left failures,
    or the admins were told of trouble that this run may have ended. The alerts schedule catches
    the rest within a tick; checking after every run would cost a health query each. A failing
    check never fails the run."""
    try:
        if (
            run.status in RUN_BAD or run.failed
            or ConnectionAlert.objects.filter(connection_id=run.connection_id, healthy=False)
            .exists()
        ):
            alerts_check(connection=run.connection)
    except Exception:
        logger.exception("alert check for %s failed", run.connection)


def _check(health: ConnectionHealth) -> AlertCheck:
    connection, now = health.connection, timezone.now()
    # Created healthy: the first look at a broken connection is a change worth a mail.
    ConnectionAlert.objects.get_or_create(
        connection=connection, defaults={"healthy": True, "since": now, "checked_at": now}
    )
    alerts = ConnectionAlert.objects.filter(connection=connection)
    with transaction.atomic():
        # Writing first takes the row's lock (PostgreSQL) or the write lock (SQLite) before the
        # read, so two workers finishing runs at once see one change between them.
        alerts.update(checked_at=now)
        was = alerts.get()
        check = AlertCheck(connection=connection, healthy=health.healthy, since=was.since)
        if health.healthy == was.healthy:
            if not health.healthy and health.problems != was.problems:
                alerts.update(problems=health.problems)
            return check
        check.transition = RECOVERED if health.healthy else TURNED_UNHEALTHY
        check.since = now
        alerts.update(
            healthy=health.healthy, since=now,
            problems=health.problems if not health.healthy else was.problems,
        )
    # Sent outside the transaction: a slow mail server holds no lock.
    check.recipients = alert_recipients()
    if not check.recipients:
        logger.warning(NO_RECIPIENTS, connection, check.transition)
        return check
    try:
        _send(check, health, was=was)
    except Exception as exc:  # SMTP and friends raise many kinds.
        check.error = f"{type(exc).__name__}: {exc}"
        logger.warning(SEND_FAILED, connection, check.transition, check.error)
        check.recipients = []
        # Back to what the admins were last told, unless another check moved on meanwhile.
        alerts.filter(healthy=health.healthy, since=now).update(
            healthy=was.healthy, since=was.since, problems=was.problems
        )
        return check
    alerts.update(notified_at=timezone.now(), notified_count=len(check.recipients))
    logger.info("%s turned %s; mailed %d address(es)", connection, check.transition,
                len(check.recipients))
    return check


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"


def _send(check: AlertCheck, health: ConnectionHealth, *, was: ConnectionAlert) -> None:
    connection, now = check.connection, check.since
    site = settings.STAGEMAP_SITE_URL
    values = {
        "name": connection.name,
        "since": _utc(now),
        "health_url": site + reverse("admin:connections_connection_health"),
        "connection_url": site + reverse(
            "admin:connections_connection_change", args=[connection.pk]
        ),
    }
    if check.transition == TURNED_UNHEALTHY:
        subject, body = SUBJECT_UNHEALTHY, BODY_UNHEALTHY
        problems = health.problems
    else:
        subject, body = SUBJECT_RECOVERED, BODY_RECOVERED
        problems = was.problems or ["(not recorded)"]
        values.update(
            was_since=_utc(was.since), duration=_duration((now - was.since).total_seconds())
        )
    # Problems quote Salesforce's error texts, already redacted when stored; once more here,
    # against this connection's own secrets, because a mail leaves stagemap for good.
    secrets = connection_secret_values(connection=connection)
    values["problems"] = "\n".join(f"- {redact(problem, secrets=secrets)}" for problem in problems)
    send_mail(
        subject=settings.EMAIL_SUBJECT_PREFIX + subject.format(**values),
        message=body.format(**values),
        from_email=None,
        recipient_list=check.recipients,
    )
