"""The task queue runs stagemap's own task functions (sync.tasks) and nothing else."""

import importlib
import inspect
import logging
import pydoc
from functools import partial

from django_q.signals import call_hook

TASK_MODULE = "sync.tasks"
REFUSAL_FUNC = f"{TASK_MODULE}.task_refused"

REFUSED_TASK_LOG = "refused task function %s: only functions of sync.tasks run"
REFUSED_HOOK_LOG = "refused task hook %s: only functions of sync.tasks run"

logger = logging.getLogger(__name__)


def _func_name(func) -> str:
    if isinstance(func, str):
        return func
    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(func)


def task_func_allowed(func) -> bool:
    """True for a public function defined in sync.tasks, given by its dotted path or itself."""
    module, _, name = _func_name(func).rpartition(".")
    if module != TASK_MODULE or not name.isidentifier() or name.startswith("_"):
        return False
    target = getattr(importlib.import_module(TASK_MODULE), name, None)
    if not inspect.isfunction(target) or target.__module__ != TASK_MODULE:
        return False
    return target is func if callable(func) else True


def task_refuse_on_enqueue(sender, task: dict, **kwargs) -> None:
    """pre_enqueue receiver: a refused function becomes a task that fails with the reason.

    It must not raise: the scheduler enqueues every due schedule in one transaction, so an
    exception here would stop all the others."""
    func = task.get("func")
    if not task_func_allowed(func):
        name = _func_name(func)
        logger.error(REFUSED_TASK_LOG, name)
        task["func"], task["args"], task["kwargs"] = REFUSAL_FUNC, (name,), {}
    hook = task.get("hook")
    if hook and not task_func_allowed(hook):
        logger.error(REFUSED_HOOK_LOG, _func_name(hook))
        task["hook"] = None


def task_locate(path: str):
    """django_q.worker's locator for a function given by name (a queued row from anywhere)."""
    if task_func_allowed(path):
        return pydoc.locate(path)
    logger.error(REFUSED_TASK_LOG, path)
    return partial(pydoc.locate(REFUSAL_FUNC), path)


class _GuardedPydoc:
    # django_q.worker resolves a string func with its module global `pydoc.locate`, before any
    # signal it sends; a pre_execute receiver cannot replace the function, only kill the worker.
    locate = staticmethod(task_locate)


def worker_locator_install() -> None:
    import django_q.worker as q_worker

    q_worker.pydoc = _GuardedPydoc


def task_hook_guarded(sender, instance, **kwargs) -> None:
    """Stands in for django_q.signals.call_hook, which imports and calls any saved hook path."""
    if instance.hook and not task_func_allowed(instance.hook):
        logger.error(REFUSED_HOOK_LOG, instance.hook)
        return
    call_hook(sender, instance, **kwargs)
