"""Set the stage of one synced record on stagemap's side; the change is pushed to Salesforce."""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from mappings.models import Stage
from sync.models import SyncedRecord
from sync.services.outbound import sync_run_push
from sync.services.record_stage import record_set_stage

UNKNOWN_CONNECTION = "Unknown connection {name}."
UNKNOWN_RECORD = "No synced record {sf_id} on {name}."
UNKNOWN_STAGE = "Unknown stage key {key}."


class Command(BaseCommand):
    help = "Move one record to a stage (a local change: its outbound fields are pushed)."

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME", help="Connection name.")
        parser.add_argument("sf_id", metavar="SALESFORCE_ID")
        parser.add_argument("stage_key", metavar="STAGE_KEY")
        parser.add_argument(
            "--push-now", action="store_true", help="Push at once instead of queueing the push."
        )
        parser.add_argument(
            "--allow-backward",
            action="store_true",
            help="Confirm a move back in the funnel on a forward-only field (kept in history).",
        )
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(
        self, *args, name, sf_id, stage_key, push_now, allow_backward, json: bool, **options
    ):
        connection = Connection.objects.filter(name=name).first()
        if connection is None:
            raise CommandError(UNKNOWN_CONNECTION.format(name=name))
        # Salesforce ids are case-sensitive in 15 characters; the 18-character form adds a suffix.
        records = SyncedRecord.objects.filter(connection=connection, sf_id__startswith=sf_id[:15])
        record = next((r for r in records if r.sf_id[:15] == sf_id[:15]), None)
        if record is None:
            raise CommandError(UNKNOWN_RECORD.format(sf_id=sf_id, name=name))
        stage = Stage.objects.filter(key=stage_key).first()
        if stage is None:
            raise CommandError(UNKNOWN_STAGE.format(key=stage_key))
        try:
            # --push-now pushes below: queueing a push as well would write the record twice.
            changed = record_set_stage(
                records=[record],
                stage=stage,
                acting_user=None,
                allow_backward=allow_backward,
                queue_push=not push_now,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        record.refresh_from_db()
        result = {
            "connection": name,
            "sf_id": record.sf_id,
            "stage": stage.key,
            "changed": bool(changed),
            "outbound_state": record.outbound_state,
        }
        if push_now and changed:
            run = sync_run_push(connection=connection)
            record.refresh_from_db()
            result.update(push_status=run.status, outbound_state=record.outbound_state)
        if json:
            self.stdout.write(_dumps(result))
            return
        if not changed:
            self.stdout.write(f"{record} is already in stage {stage.name}.")
            return
        self.stdout.write(self.style.SUCCESS(f"{record} moved to {stage.name}."))
        if "push_status" in result:
            self.stdout.write(f"Push: {result['push_status']}, record {record.outbound_state}.")
        elif record.outbound_state == SyncedRecord.OutboundState.PENDING:
            self.stdout.write("The push is queued.")


def _dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
