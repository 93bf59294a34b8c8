"""django-q2 task wrappers: thin front doors over the sync and mapping services."""

import logging

from django_q.tasks import async_task

from connections.models import Connection

logger = logging.getLogger(__name__)

TASK_REFUSED = "refused: {func} is not a stagemap task"


class TaskRefused(Exception):
    pass


def _active_connection_ids() -> list[int]:
    return list(
        Connection.objects.exclude(status=Connection.Status.PAUSED).values_list("id", flat=True)
    )


def _connection(connection_id: int) -> Connection | None:
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None or connection.is_paused:
        logger.info("connection %s is gone or paused; nothing to do", connection_id)
        return None
    return connection


def task_refresh(connection_id: int, trigger: str = "schedule") -> int | None:
    from sync.services.refresh import sync_run_refresh

    if connection := _connection(connection_id):
        return sync_run_refresh(connection=connection, trigger=trigger).pk
    return None


def task_delta(connection_id: int, trigger: str = "schedule", full: bool = False) -> list | None:
    from sync.services.inbound import sync_run_inbound

    if connection := _connection(connection_id):
        runs = sync_run_inbound(connection=connection, full=full, trigger=trigger)
        return [run.pk for run in runs]
    return None


def task_push(connection_id: int, trigger: str = "event") -> int | None:
    from sync.services.outbound import sync_run_push

    if connection := _connection(connection_id):
        return sync_run_push(connection=connection, trigger=trigger).pk
    return None


def _fan_out(func: str) -> int:
    # One task per connection, so several workers sync several orgs at once.
    ids = _active_connection_ids()
    for connection_id in ids:
        async_task(func, connection_id, "schedule", group=func.rsplit(".", 1)[-1])
    return len(ids)


def schedule_refresh_all() -> int:
    return _fan_out("sync.tasks.task_refresh")


def schedule_delta_all() -> int:
    return _fan_out("sync.tasks.task_delta")


def schedule_push_all() -> int:
    return _fan_out("sync.tasks.task_push")


def enqueue_inbound(connection_id: int, *, full: bool = False, trigger: str = "admin") -> str:
    return async_task("sync.tasks.task_delta", connection_id, trigger, full, group="inbound")


def task_refused(func: str, *args, **kwargs) -> None:
    """Runs instead of a queued function that is not a stagemap task (stagemap_site.task_guard);
    the refused function's arguments are ignored, so the task fails and nothing else runs."""
    raise TaskRefused(TASK_REFUSED.format(func=func))
