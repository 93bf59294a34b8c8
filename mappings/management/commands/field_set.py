"""Change the options of a mapped field (direction, rules, empty values), as the admin does."""

from argparse import BooleanOptionalAction

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import as_json, connection_named, field_mapping_named
from mappings.models import FieldMapping
from mappings.services.fields import field_mapping_update

NOTHING_TO_CHANGE = "Give at least one option to change (see --help)."
MSG_UNCHANGED = "{field}: nothing changed."
MSG_CHANGED = "{field}: {changes}."
FLAGS = ("forward_only", "skip_empty_inbound", "skip_empty_outbound", "mirror")
SHOWN = ("direction", "active", "conflict_policy", "one_to_one", *FLAGS)


def options_of(field_mapping: FieldMapping) -> dict:
    return {name: getattr(field_mapping, name) for name in SHOWN}


class Command(BaseCommand):
    help = (
        "field_set NAME --object Lead --field Status [--direction D] [--conflict-policy P] "
        "[--[no-]forward-only] [--[no-]skip-empty-inbound] [--[no-]skip-empty-outbound] "
        "[--[no-]mirror] [--json]"
    )

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--object", dest="object_name", default="Lead")
        parser.add_argument("--field", dest="field_name", required=True)
        parser.add_argument("--direction", choices=FieldMapping.Direction.values)
        parser.add_argument("--conflict-policy", choices=FieldMapping.ConflictPolicy.values)
        for flag in FLAGS:
            parser.add_argument(f"--{flag.replace('_', '-')}", action=BooleanOptionalAction)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, object_name, field_name, json, **options):
        given = {
            key: options[key]
            for key in ("direction", "conflict_policy", *FLAGS)
            if options[key] is not None
        }
        if not given:
            raise CommandError(NOTHING_TO_CHANGE)
        field_mapping = field_mapping_named(connection_named(name), object_name, field_name)
        before = options_of(field_mapping)
        try:
            field_mapping = field_mapping_update(
                field_mapping=field_mapping, acting_user=None, **given
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        after = options_of(field_mapping)
        changed = [key for key in SHOWN if before[key] != after[key]]
        if json:
            self.stdout.write(as_json({"field": str(field_mapping), **after, "changed": changed}))
            return
        if not changed:
            self.stdout.write(MSG_UNCHANGED.format(field=field_mapping))
            return
        changes = [f"{key} {before[key]} → {after[key]}" for key in changed]
        self.stdout.write(
            self.style.SUCCESS(MSG_CHANGED.format(field=field_mapping, changes=", ".join(changes)))
        )
