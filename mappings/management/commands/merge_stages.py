"""Merge one stage into another: values, outbound flags and records move; the source deactivates."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.models import Stage
from mappings.services.merge import stage_merge


class Command(BaseCommand):
    help = "merge_stages SOURCE_KEY TARGET_KEY"

    def add_arguments(self, parser):
        parser.add_argument("source")
        parser.add_argument("target")

    def handle(self, *args, source, target, **options):
        stages = {stage.key: stage for stage in Stage.objects.filter(key__in=[source, target])}
        for key in (source, target):
            if key not in stages:
                raise CommandError(f"No stage with key “{key}”.")
        try:
            moved = stage_merge(source=stages[source], target=stages[target], acting_user=None)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            self.style.SUCCESS(f"Merged {source} into {target}: {moved['values']} value(s) moved.")
        )
