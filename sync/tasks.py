"""django-q2 task wrappers: thin front doors over the sync and mapping services."""

import logging

from django_q.tasks import async_task

from connections.models import Connection

logger = logging.getLogger(__name__)

TASK_REFUSED = "refused: {func} is not a stagemap task"


class TaskRefused(Exception):
    pass


def _connection(connection_id: int, *, due: str | None = None) -> Connection | None:
    """The connection to run on; with `due` (a scheduled run) only when it is due for it, so a
    task queued twice, or queued behind a run that started meanwhile, does nothing."""
    from sync.services.schedule import connection_is_due

    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None or connection.is_paused:
        logger.info("connection %s is gone or paused; nothing to do", connection_id)
        return None
    if due and not connection_is_due(connection=connection, kind=due):
        logger.info("connection %s is not due for %s; nothing to do", connection_id, due)
        return None
    return connection


def _due_kind(trigger: str, kind: str) -> str | None:
    return kind if trigger == "schedule" else None


def task_refresh(connection_id: int, trigger: str = "schedule") -> int | None:
    from sync.services.refresh import sync_run_refresh

    if connection := _connection(connection_id, due=_due_kind(trigger, "refresh")):
        return sync_run_refresh(connection=connection, trigger=trigger).pk
    return None


def task_delta(connection_id: int, trigger: str = "schedule", full: bool = False) -> list | None:
    from sync.services.inbound import sync_run_inbound

    due = None if full else _due_kind(trigger, "delta")
    if connection := _connection(connection_id, due=due):
        runs = sync_run_inbound(connection=connection, full=full, trigger=trigger)
        return [run.pk for run in runs]
    return None


def task_push(connection_id: int, trigger: str = "event") -> int | None:
    from sync.services.outbound import sync_run_push

    if connection := _connection(connection_id, due=_due_kind(trigger, "push")):
        return sync_run_push(connection=connection, trigger=trigger).pk
    return None


def task_reconcile(connection_id: int, trigger: str = "schedule") -> list | None:
    from sync.services.reconcile import sync_run_reconcile

    if connection := _connection(connection_id, due=_due_kind(trigger, "reconcile")):
        return [run.pk for run in sync_run_reconcile(connection=connection, trigger=trigger)]
    return None


def _fan_out(func: str, kind: str) -> int:
    # One task per due connection, so several workers sync several orgs at once.
    from sync.services.schedule import connections_due

    ids = connections_due(kind=kind)
    for connection_id in ids:
        async_task(func, connection_id, "schedule", group=func.rsplit(".", 1)[-1])
    return len(ids)


def schedule_refresh_all() -> int:
    return _fan_out("sync.tasks.task_refresh", "refresh")


def schedule_delta_all() -> int:
    return _fan_out("sync.tasks.task_delta", "delta")


def schedule_push_all() -> int:
    return _fan_out("sync.tasks.task_push", "push")


def schedule_reconcile_all() -> int:
    return _fan_out("sync.tasks.task_reconcile", "reconcile")


def task_retention() -> dict:
    from sync.services.retention import sync_prune_history

    result = sync_prune_history()
    return {"runs_deleted": result.runs_deleted, "errors_deleted": result.errors_deleted}


def task_alerts() -> list[dict]:
    # Runs mail as they end; this catches what only time or a person changes (a sync gone
    # stale, a value mapped, a failed push resolved).
    from sync.services.alerts import alerts_check

    return [check.as_dict() for check in alerts_check() if check.transition]


def enqueue_inbound(connection_id: int, *, full: bool = False, trigger: str = "admin") -> str:
    return async_task("sync.tasks.task_delta", connection_id, trigger, full, group="inbound")


def task_refused(func: str, *args, **kwargs) -> None:
    """Runs instead of a queued function that is not a stagemap task (stagemap_site.task_guard);
    the refused function's arguments are ignored, so the task fails and nothing else runs."""
    raise TaskRefused(TASK_REFUSED.format(func=func))
