"""Merge one stage into another: values, outbound flags and records move; the source deactivates."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import as_json
from mappings.models import Stage
from mappings.services.merge import stage_merge

UNKNOWN_STAGE = "No stage with key “{key}”."
MSG_MERGED = "Merged {source} into {target}: {values} value(s) and {records} record(s) moved."


class Command(BaseCommand):
    help = "merge_stages SOURCE_KEY TARGET_KEY"

    def add_arguments(self, parser):
        parser.add_argument("source")
        parser.add_argument("target")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, source, target, json, **options):
        stages = {stage.key: stage for stage in Stage.objects.filter(key__in=[source, target])}
        for key in (source, target):
            if key not in stages:
                raise CommandError(UNKNOWN_STAGE.format(key=key))
        try:
            moved = stage_merge(source=stages[source], target=stages[target], acting_user=None)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if json:
            self.stdout.write(as_json({"source": source, "target": target, **moved}))
            return
        self.stdout.write(self.style.SUCCESS(MSG_MERGED.format(
            source=source, target=target, values=moved["values"], records=moved["records"]
        )))
