"""Map unmapped values to stages by the auto-map rules."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import as_json, connection_named
from mappings.models import FieldMapping
from mappings.services.automap import field_mappings_automap


class Command(BaseCommand):
    help = "Auto-map NAME [--object Lead --field Status] [--create-stages] [--dry-run] [--json]"

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--object", dest="object_name")
        parser.add_argument("--field", dest="field_name")
        parser.add_argument("--create-stages", action="store_true")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, object_name, field_name, create_stages, dry_run, json, **opts):
        connection = connection_named(name)
        field_mappings = FieldMapping.objects.filter(connection=connection)
        if object_name:
            field_mappings = field_mappings.filter(object_name=object_name)
        if field_name:
            field_mappings = field_mappings.filter(field_name=field_name)
        else:
            field_mappings = field_mappings.filter(active=True)
        field_mappings = list(field_mappings)
        if not field_mappings:
            raise CommandError("No field mapping matches.")
        try:
            result = field_mappings_automap(
                field_mappings=field_mappings,
                create_stages=create_stages,
                dry_run=dry_run,
                acting_user=None,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if json:
            self.stdout.write(as_json(result.as_dict()))
            return
        prefix = "Would " if dry_run else ""
        for action in result.actions:
            verb = {
                "map": f"map to {action.stage}",
                "outbound": f"make outbound for {action.stage}",
                "create_stage": f"create stage {action.stage}",
                "skip": "leave unmapped",
            }[action.action]
            self.stdout.write(f"{prefix}{verb}: {action.field} “{action.value}” ({action.reason})")
        self.stdout.write(
            self.style.SUCCESS(
                f"{'Dry run: ' if dry_run else ''}{result.mapped} mapped, {result.outbound} "
                f"outbound, {len(result.created_stages)} stage(s) created, {result.skipped} left."
            )
        )
