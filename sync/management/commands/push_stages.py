"""Push pending stage changes of one or more connections to Salesforce."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from sync.management.commands._exit import exit_for_runs
from sync.models import SyncRun
from sync.services.outbound import sync_run_push

UNKNOWN_CONNECTIONS = "Unknown connection(s): {names}."
NAME_OR_ALL = "Give one or more connection names, or --all."
FAILED_STATUSES = (SyncRun.Status.FAILED, SyncRun.Status.STOPPED_BUDGET)


class Command(BaseCommand):
    help = "Write stage changes made in stagemap to the outbound Salesforce fields."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Connection names.")
        parser.add_argument("--all", action="store_true", help="Every connection not paused.")
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be written; write nothing."
        )
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, names, all, dry_run, json: bool, **options):
        as_json = json
        if all == bool(names):
            raise CommandError(NAME_OR_ALL)
        if all:
            connections = list(Connection.objects.exclude(status=Connection.Status.PAUSED))
        else:
            connections = list(Connection.objects.filter(name__in=names))
            missing = sorted(set(names) - {c.name for c in connections})
            if missing:
                raise CommandError(UNKNOWN_CONNECTIONS.format(names=", ".join(missing)))
        runs = [
            sync_run_push(connection=connection, dry_run=dry_run, trigger=SyncRun.Trigger.COMMAND)
            for connection in connections
        ]
        if as_json:
            self.stdout.write(_json_dumps([_run_json(run) for run in runs]))
        else:
            for run in runs:
                self._print_run(run)
        exit_for_runs([(run.status, run.connection.name) for run in runs])

    def _print_run(self, run: SyncRun) -> None:
        style = self.style.SUCCESS if run.status in ("ok",) else self.style.WARNING
        if run.status in FAILED_STATUSES:
            style = self.style.ERROR
        header = (
            f"{run.connection.name}: {'dry run, ' if run.dry_run else ''}"
            f"{run.get_status_display()} — pushed {run.pushed}, failed {run.failed}, "
            f"{run.details.get('conflicts', 0)} conflict(s), {run.api_calls} API call(s)"
        )
        self.stdout.write(style(header))
        if run.error:
            self.stdout.write(f"  {run.error}")
        if run.dry_run:
            if not run.plan:
                self.stdout.write("  nothing to write")
            for item in run.plan:
                self.stdout.write(
                    f"  {item.object_name} {item.sf_id} {item.field}: "
                    f"{item.old if item.old is not None else '(empty)'} → "
                    f"{item.new if item.new is not None else '(empty)'}"
                )


def _run_json(run: SyncRun) -> dict:
    return {
        "connection": run.connection.name,
        "run": run.pk,
        "status": run.status,
        "dry_run": run.dry_run,
        "pushed": run.pushed,
        "failed": run.failed,
        "api_calls": run.api_calls,
        "details": run.details,
        "error": run.error,
        "plan": [item.as_dict() for item in getattr(run, "plan", [])],
    }


def _json_dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
