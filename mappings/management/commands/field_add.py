"""Map one more Salesforce picklist field of a connection."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import connection_named
from mappings.models import FieldMapping
from mappings.services.fields import field_mapping_create
from mappings.services.refresh import picklist_refresh


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
        self.stdout.write(self.style.SUCCESS(f"Added {field_mapping} ({direction})."))
        if not options["no_refresh"]:
            refresh = picklist_refresh(connection=connection, field_mappings=[field_mapping])
            if refresh.error:
                raise CommandError(refresh.error)
            self.stdout.write(f"Read {refresh.added} value(s); all arrive unmapped.")
