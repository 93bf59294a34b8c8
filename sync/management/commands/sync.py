"""Run the inbound sync (full or delta) for one, several or all connections."""

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from sync.management.commands._exit import exit_for_runs
from sync.models import SyncRun
from sync.services.inbound import sync_run_inbound

UNKNOWN_CONNECTION = "Unknown connection(s): {names}."
NO_CONNECTION = "Name one or more connections, or use --all."
NOTHING_TO_SYNC = "{name}: no active field mapping, nothing to sync."

COUNTS = ("fetched", "created", "updated", "unchanged", "unmapped", "deleted", "api_calls")


class ProgressLine:
    """A one-line progress display on stderr, redrawn in place (no dependency)."""

    def __init__(self, stream, connection_name: str):
        self.stream = stream
        self.connection_name = connection_name
        self.started = time.monotonic()

    def __call__(self, *, object_name: str, fetched: int, run=None, **kwargs) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r{self.connection_name} · {object_name}: {fetched:,} records "
            f"({fetched / elapsed:,.0f}/s)\033[K"
        )
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


def run_summary(run: SyncRun) -> dict:
    return {
        "connection": run.connection.name,
        "object": run.object_name,
        "run_id": run.pk,
        "kind": run.kind,
        "status": run.status,
        "dry_run": run.dry_run,
        **{name: getattr(run, name) for name in COUNTS},
        "seconds": round(run.duration_seconds or 0, 2),
        "error": run.error,
    }


class Command(BaseCommand):
    help = "Pull records from Salesforce: a full sync the first time (or with --full), then deltas."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Connection names.")
        parser.add_argument("--all", action="store_true", help="Every connection not paused.")
        parser.add_argument("--full", action="store_true", help="Re-read everything.")
        parser.add_argument("--object", dest="object_name", help="Only this object, e.g. Lead.")
        parser.add_argument("--dry-run", action="store_true", help="Read and count, write nothing.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, names, all, full, object_name, dry_run, json: bool, **options):
        if all:
            connections = list(Connection.objects.exclude(status=Connection.Status.PAUSED))
        elif names:
            connections = list(Connection.objects.filter(name__in=names))
            missing = sorted(set(names) - {c.name for c in connections})
            if missing:
                raise CommandError(UNKNOWN_CONNECTION.format(names=", ".join(missing)))
        else:
            raise CommandError(NO_CONNECTION)

        tty = not json and sys.stdout.isatty() and sys.stderr.isatty()
        summaries = []
        for connection in connections:
            progress = ProgressLine(sys.stderr, connection.name) if tty else None
            try:
                runs = sync_run_inbound(
                    connection=connection,
                    full=full,
                    object_name=object_name,
                    dry_run=dry_run,
                    trigger=SyncRun.Trigger.COMMAND,
                    progress=progress,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            finally:
                if progress:
                    progress.done()
            if not runs and not json:
                self.stdout.write(NOTHING_TO_SYNC.format(name=connection.name))
            for run in runs:
                summary = run_summary(run)
                summaries.append(summary)
                if not json:
                    self._print(summary)

        if json:
            self.stdout.write(_dumps(summaries))
        exit_for_runs([(s["status"], s["connection"]) for s in summaries])

    def _print(self, s: dict) -> None:
        style = self.style.SUCCESS if s["status"] == SyncRun.Status.OK else self.style.WARNING
        if s["status"] == SyncRun.Status.FAILED:
            style = self.style.ERROR
        kind = f"{s['kind']}, dry run" if s["dry_run"] else s["kind"]
        head = f"{s['connection']} · {s['object']} ({kind})"
        self.stdout.write(style(f"{head}: {s['status']}"))
        self.stdout.write(
            "  fetched {fetched}, created {created}, updated {updated}, unchanged {unchanged}, "
            "unmapped {unmapped}, deleted {deleted}, API calls {api_calls}, "
            "{seconds} s".format(**s)
        )
        if s["error"]:
            self.stdout.write(f"  {s['error']}")


def _dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
