"""Map one more Salesforce picklist field of a connection."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import as_json, connection_named
from mappings.models import FieldMapping
from mappings.services.fields import field_mapping_create
from mappings.services.refresh import picklist_refresh

MSG_ADDED = "Added {field} ({direction})."
MSG_READ = "Read {count} value(s); all arrive unmapped."


class Command(BaseCommand):
    help = "Add a field mapping: NAME --object Lead --field Lifecycle_Stage__c --direction outbound"

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--object", dest="object_name", default="Lead")
        parser.add_argument("--field", dest="field_name", required=True)
        parser.add_argument("--direction", choices=FieldMapping.Direction.values, default="both")
        parser.add_argument("--inactive", action="store_true", help="Add it switched off.")
        parser.add_argument(
            "--no-refresh", action="store_true", help="Do not read its values right away."
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, object_name, field_name, direction, inactive, **options):
        connection = connection_named(name)
        try:
            field_mapping = field_mapping_create(
                connection=connection,
                object_name=object_name,
                field_name=field_name,
                direction=direction,
                active=not inactive,
                acting_user=None,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if not options["json"]:
            self.stdout.write(
                self.style.SUCCESS(MSG_ADDED.format(field=field_mapping, direction=direction))
            )
        read = None
        if not options["no_refresh"]:
            refresh = picklist_refresh(connection=connection, field_mappings=[field_mapping])
            if refresh.error:
                raise CommandError(refresh.error)
            read = refresh.added
        if options["json"]:
            self.stdout.write(as_json({
                "field": str(field_mapping),
                "object": field_mapping.object_name,
                "field_name": field_mapping.field_name,
                "label": field_mapping.field_label,
                "direction": field_mapping.direction,
                "active": field_mapping.active,
                "values_read": read,
            }))
        elif read is not None:
            self.stdout.write(MSG_READ.format(count=read))
