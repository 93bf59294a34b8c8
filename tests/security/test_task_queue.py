"""Issue 12, item 1: nobody but a superuser writes a schedule or task, and the worker runs
stagemap's own task functions only, whoever wrote the row."""

import logging
import shlex
from datetime import timedelta
from multiprocessing import Event, Value

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Failure, OrmQ, Schedule, Success, Task
from django_q.monitor import monitor
from django_q.pusher import pusher
from django_q.queues import Queue
from django_q.scheduler import scheduler
from django_q.signing import SignedPackage
from django_q.tasks import async_task
from django_q.worker import worker

from stagemap_site.permissions import ADMINS, groups_sync_permissions
from stagemap_site.task_guard import REFUSED_HOOK_LOG, REFUSED_TASK_LOG
from sync.tasks import TASK_REFUSED

pytestmark = pytest.mark.django_db
# The scheduler, worker and monitor close stale database connections between tasks, as they do in
# production; inside a test transaction that would close it for good, so these tests commit.
queue_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)

HOOK_CALLS = []


def record_hook(task):
    """A hook outside sync.tasks: it must never be called."""
    HOOK_CALLS.append(task.pk)


def _schedule_form(func: str, **changes) -> dict:
    now = timezone.now()
    data = {
        "name": "pwn", "func": func, "hook": "", "args": "", "kwargs": "",
        "schedule_type": Schedule.ONCE, "minutes": "", "repeats": "-1",
        "next_run_0": now.strftime("%Y-%m-%d"), "next_run_1": now.strftime("%H:%M:%S"),
        "cron": "", "cluster": "", "intended_date_kwarg": "",
    }
    data.update(changes)
    return data


def _due_schedule(func: str, **fields) -> Schedule:
    return Schedule.objects.create(
        func=func, schedule_type=Schedule.ONCE, repeats=-1,
        next_run=timezone.now() - timedelta(minutes=1), **fields,
    )


def _marker_args(marker) -> str:
    return repr((f"touch {shlex.quote(str(marker))}",))


def _run_queue() -> None:
    """What a qcluster does, in this process: scheduler, pusher, one worker, monitor."""
    broker = get_broker()
    scheduler(broker=broker)
    task_queue, result_queue = Queue(), Queue()
    stop = Event()
    stop.set()
    while broker.queue_size():
        pusher(task_queue, stop, broker=broker)
    task_queue.put("STOP")
    worker(task_queue, result_queue, Value("f", -1))
    result_queue.put("STOP")
    monitor(result_queue, broker=broker)


def _error_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_stagemap_admin_cannot_add_a_schedule(stagemap_admin_client):
    response = stagemap_admin_client.post(
        "/admin/django_q/schedule/add/", _schedule_form("os.system", args="'id'")
    )

    assert response.status_code == 403
    assert not Schedule.objects.exists()


def test_stagemap_admin_cannot_change_a_schedule(stagemap_admin_client):
    schedule = _due_schedule("sync.tasks.schedule_push_all", name="stagemap: push sweep")

    response = stagemap_admin_client.post(
        f"/admin/django_q/schedule/{schedule.pk}/change/",
        _schedule_form("os.system", name="stagemap: push sweep", args="'id'"),
    )

    assert response.status_code == 403
    assert Schedule.objects.get().func == "sync.tasks.schedule_push_all"


def test_a_user_granted_schedule_permissions_still_cannot_write_one(client):
    user = get_user_model().objects.create_user("granted", "g@example.com", "pw-123456")
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q"))
    client.force_login(user)
    schedule = _due_schedule("sync.tasks.schedule_push_all")

    add = client.post("/admin/django_q/schedule/add/", _schedule_form("os.system"))
    change = client.post(
        f"/admin/django_q/schedule/{schedule.pk}/change/", _schedule_form("os.system")
    )

    assert (add.status_code, change.status_code) == (403, 403)
    assert list(Schedule.objects.values_list("func", flat=True)) == [
        "sync.tasks.schedule_push_all"
    ]


def test_a_superuser_still_adds_a_schedule(admin_client):
    response = admin_client.post(
        "/admin/django_q/schedule/add/", _schedule_form("sync.tasks.schedule_push_all")
    )

    assert response.status_code == 302
    assert Schedule.objects.get().func == "sync.tasks.schedule_push_all"


def test_stagemap_admin_views_the_queue_and_deletes_a_failure(stagemap_admin_client):
    failure = Failure.objects.create(
        id="f" * 32, name="failed-task", func="sync.tasks.task_push", args=(1,),
        started=timezone.now(), stopped=timezone.now(), success=False,
    )
    for page in ("schedule", "success", "failure", "ormq"):
        assert stagemap_admin_client.get(f"/admin/django_q/{page}/").status_code == 200

    response = stagemap_admin_client.post(
        f"/admin/django_q/failure/{failure.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Failure.objects.exists()


def test_stagemap_admin_cannot_resubmit_a_failed_task(stagemap_admin_client):
    failure = Failure.objects.create(
        id="e" * 32, name="failed-task", func="sync.tasks.task_push", args=(1,),
        started=timezone.now(), stopped=timezone.now(), success=False,
    )

    stagemap_admin_client.post(
        "/admin/django_q/failure/",
        {"action": "resubmit_tasks", "_selected_action": [failure.pk]},
    )
    stagemap_admin_client.post(
        "/admin/django_q/failure/",
        {"action": "resubmit_task", "_selected_action": [failure.pk]},
    )

    assert not OrmQ.objects.exists()
    assert Failure.objects.filter(pk=failure.pk).exists()


def test_group_sync_takes_task_queue_writes_away_from_an_old_install():
    admins = Group.objects.get(name=ADMINS)
    admins.permissions.add(*Permission.objects.filter(content_type__app_label="django_q"))

    groups_sync_permissions()

    held = set(
        Permission.objects.filter(group__name__startswith="stagemap ")
        .filter(content_type__app_label="django_q")
        .values_list("codename", flat=True)
    )
    assert held == {
        "view_schedule", "view_task", "view_success", "view_failure", "view_ormq",
        "delete_failure",
    }


@queue_db
def test_worker_refuses_an_os_system_schedule_written_through_the_orm(tmp_path, caplog):
    marker = tmp_path / "pwned"
    _due_schedule("os.system", args=_marker_args(marker))

    _run_queue()

    assert not marker.exists()
    failure = Failure.objects.get()
    assert failure.func == "sync.tasks.task_refused"
    assert TASK_REFUSED.format(func="os.system") in failure.result
    assert REFUSED_TASK_LOG % "os.system" in _error_messages(caplog)


@queue_db
def test_a_refused_schedule_does_not_block_the_others(tmp_path):
    _due_schedule("os.system", args=_marker_args(tmp_path / "pwned"), name="a")
    _due_schedule("sync.tasks.schedule_push_all", name="b")

    _run_queue()

    assert Success.objects.get().func == "sync.tasks.schedule_push_all"
    assert Failure.objects.get().func == "sync.tasks.task_refused"
    assert not Schedule.objects.exists()


@queue_db
def test_a_stagemap_task_still_runs_through_the_queue():
    _due_schedule("sync.tasks.schedule_push_all")

    _run_queue()

    success = Success.objects.get()
    assert (success.func, success.result) == ("sync.tasks.schedule_push_all", 0)
    assert not Failure.objects.exists()


@queue_db
@pytest.mark.parametrize("func", ["os.system", "sync.tasks.async_task", "sync.tasks._fan_out"])
def test_worker_refuses_a_package_put_on_the_broker_directly(func, tmp_path, caplog):
    # Past the enqueue guard, as a row written straight into the broker would be.
    marker = tmp_path / "pwned"
    task = {
        "id": "d" * 32, "name": "direct", "func": func,
        "args": (f"touch {shlex.quote(str(marker))}",), "kwargs": {},
        "started": timezone.now(),
    }
    get_broker().enqueue(SignedPackage.dumps(task))

    _run_queue()

    assert not marker.exists()
    failure = Failure.objects.get()
    assert TASK_REFUSED.format(func=func) in failure.result
    assert REFUSED_TASK_LOG % func in _error_messages(caplog)


@queue_db
def test_a_queued_callable_outside_sync_tasks_is_refused(tmp_path):
    import os

    marker = tmp_path / "pwned"
    async_task(os.system, f"touch {shlex.quote(str(marker))}")

    _run_queue()

    assert not marker.exists()
    assert TASK_REFUSED.format(func="posix.system") in Failure.objects.get().result


@queue_db
def test_a_schedule_hook_outside_sync_tasks_is_dropped(caplog):
    _due_schedule("sync.tasks.schedule_push_all", hook="os.system")

    _run_queue()

    assert Success.objects.get().hook is None
    assert REFUSED_HOOK_LOG % "os.system" in _error_messages(caplog)


def test_a_task_row_with_a_foreign_hook_does_not_call_it(caplog):
    HOOK_CALLS.clear()
    hook = f"{__name__}.record_hook"

    Task.objects.create(
        id="c" * 32, name="written-by-hand", func="sync.tasks.task_push", hook=hook,
        args=(1,), started=timezone.now(), stopped=timezone.now(), success=True,
    )

    assert HOOK_CALLS == []
    assert REFUSED_HOOK_LOG % hook in _error_messages(caplog)
