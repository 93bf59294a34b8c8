"""Map one picklist value of a field to a stage (or unmap it), as the admin's value table does."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import as_json, connection_named, field_mapping_named
from mappings.models import PicklistValue, Stage
from mappings.services.values import picklist_value_set_mapping

NO_STAGE = "none"
UNKNOWN_VALUE = "{field} has no value “{value}” (refresh the picklists if it is new)."
UNKNOWN_STAGE = "No stage with key “{key}” (use “none” to unmap the value)."
MSG_MAPPED = "{field} “{value}” → {stage}{outbound}."


class Command(BaseCommand):
    help = (
        "map_value NAME --object Lead --field Status VALUE STAGE_KEY [--outbound] [--json]; "
        "STAGE_KEY “none” unmaps the value. Records holding the value are re-applied."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("value", metavar="VALUE", help="The value's API name in Salesforce.")
        parser.add_argument("stage_key", metavar="STAGE_KEY")
        parser.add_argument("--object", dest="object_name", default="Lead")
        parser.add_argument("--field", dest="field_name", required=True)
        parser.add_argument(
            "--outbound", action="store_true", help="Also make it the value written for its stage."
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, value, stage_key, object_name, field_name, outbound, json,
               **options):
        field_mapping = field_mapping_named(connection_named(name), object_name, field_name)
        picklist_value = PicklistValue.objects.filter(
            field_mapping=field_mapping, value=value
        ).first()
        if picklist_value is None:
            raise CommandError(UNKNOWN_VALUE.format(field=field_mapping, value=value))
        stage = None
        if stage_key != NO_STAGE:
            stage = Stage.objects.filter(key=stage_key).first()
            if stage is None:
                raise CommandError(UNKNOWN_STAGE.format(key=stage_key))
        try:
            picklist_value = picklist_value_set_mapping(
                value=picklist_value, stage=stage, acting_user=None, outbound=outbound or None
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if json:
            self.stdout.write(as_json({
                "field": str(field_mapping),
                "value": picklist_value.value,
                "stage": stage.key if stage else None,
                "outbound": picklist_value.outbound,
            }))
            return
        self.stdout.write(self.style.SUCCESS(MSG_MAPPED.format(
            field=field_mapping,
            value=picklist_value.value,
            stage=stage.name if stage else "no stage",
            outbound=" (outbound)" if picklist_value.outbound else "",
        )))
