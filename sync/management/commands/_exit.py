"""Exit codes of the commands that run syncs and pushes (README, "Exit codes")."""

from django.core.management.base import CommandError

from sync.models import SyncRun

EXIT_FAILED = 1
EXIT_BUDGET = 3

RUNS_FAILED = "{count} run(s) failed: {names}."
RUNS_STOPPED = "{count} run(s) stopped by the API budget: {names}; they go on once it allows."


def exit_for_runs(runs: list[tuple[str, str]]) -> None:
    """Raise the command's exit for runs given as (status, connection name): 1 when any failed,
    3 when the others finished and some stopped on the API budget, nothing when all finished."""
    for status, message, code in (
        (SyncRun.Status.FAILED, RUNS_FAILED, EXIT_FAILED),
        (SyncRun.Status.STOPPED_BUDGET, RUNS_STOPPED, EXIT_BUDGET),
    ):
        names = sorted({name for run_status, name in runs if run_status == status})
        count = sum(1 for run_status, _ in runs if run_status == status)
        if count:
            raise CommandError(
                message.format(count=count, names=", ".join(names)), returncode=code
            )
