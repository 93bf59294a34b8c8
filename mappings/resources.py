"""CSV round-trip of picklist value mappings, matched on natural keys."""

from __future__ import annotations

from collections import defaultdict

import tablib
from django.core.exceptions import ValidationError
from import_export import resources, widgets
from import_export.fields import Field

from mappings.csv_cells import escape_cell, unescape_cell
from mappings.models import PicklistValue, Stage
from mappings.services.mapping_import import (
    BAD_BOOLEAN,
    FALSE,
    OTHER_CONNECTION,
    TRUE,
    UNKNOWN_STAGE,
    UNKNOWN_VALUE,
)
from mappings.services.stages import stage_save
from mappings.services.values import MappingChange, MappingRuleError, picklist_values_apply

__all__ = [
    "BAD_BOOLEAN",
    "OTHER_CONNECTION",
    "UNKNOWN_STAGE",
    "UNKNOWN_VALUE",
    "PicklistValueMappingResource",
    "StageResource",
]

DUPLICATE_ROW = "The value “{value}” appears more than once in the file."
DUPLICATE_STAGE_KEY = "The stage key “{key}” appears more than once in the file."

COLUMNS = ("connection", "object", "field", "value", "label", "stage", "outbound")


class StageKeyWidget(widgets.Widget):
    """A stage by its key; the stages are read once per import."""

    def __init__(self):
        super().__init__()
        self._stages: dict[str, Stage] | None = None

    def clean(self, value, row=None, **kwargs):
        key = (value or "").strip()
        if not key:
            return None
        if self._stages is None:
            self._stages = {stage.key: stage for stage in Stage.objects.all()}
        stage = self._stages.get(key)
        if stage is None:
            raise ValueError(UNKNOWN_STAGE.format(key=key))
        return stage

    def render(self, value, obj=None, **kwargs):
        return value.key if value is not None else ""


class StrictBooleanWidget(widgets.BooleanWidget):
    TRUE = TRUE
    FALSE = FALSE

    def clean(self, value, row=None, **kwargs):
        if isinstance(value, bool):
            return value
        text = str(value if value is not None else "").strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise ValueError(BAD_BOOLEAN.format(value=value))


class _QuotedCellsResource(resources.ModelResource):
    """Every text cell is exported through escape_cell and imported through unescape_cell."""

    def export_field(self, field, instance, **kwargs):
        return escape_cell(super().export_field(field, instance, **kwargs))

    def import_data(self, dataset, *args, **kwargs):
        # A file with one bad row imports nothing, whichever front door calls this.
        kwargs["rollback_on_validation_errors"] = True
        return super().import_data(_unescaped(dataset), *args, **kwargs)


class PicklistValueMappingResource(_QuotedCellsResource):
    """Only stage and outbound are imported; rows name values Salesforce already reported.

    Every text cell is exported through escape_cell and imported through unescape_cell, in
    every format (the admin's CSV, TSV, XLSX, ... and export_mappings), so no cell runs as a
    spreadsheet formula and an exported file imports back unchanged.
    """

    connection_name = Field(
        attribute="field_mapping__connection__name", column_name="connection", readonly=True
    )
    object_name = Field(attribute="field_mapping__object_name", column_name="object", readonly=True)
    field_name = Field(attribute="field_mapping__field_name", column_name="field", readonly=True)
    value = Field(attribute="value", column_name="value", readonly=True)
    label = Field(attribute="label", column_name="label", readonly=True)
    stage = Field(attribute="stage", column_name="stage", widget=StageKeyWidget())
    outbound = Field(attribute="outbound", column_name="outbound", widget=StrictBooleanWidget())

    class Meta:
        model = PicklistValue
        fields = (
            "connection_name",
            "object_name",
            "field_name",
            "value",
            "label",
            "stage",
            "outbound",
        )
        export_order = fields
        import_id_fields = ("connection_name", "object_name", "field_name", "value")
        clean_model_instances = True
        use_transactions = True
        skip_unchanged = True
        report_skipped = True

    def __init__(self, connection=None, field_mapping=None, **kwargs):
        super().__init__(**kwargs)
        self.connection = connection
        self.field_mapping = field_mapping
        self._values: dict[tuple[str, str, str, str], PicklistValue] = {}
        self._pending: dict[int, tuple[PicklistValue, int, dict]] = {}

    def get_export_queryset(self, request=None, **kwargs):
        queryset = PicklistValue.objects.select_related("field_mapping__connection", "stage")
        if self.connection is not None:
            queryset = queryset.filter(field_mapping__connection=self.connection)
        if self.field_mapping is not None:
            queryset = queryset.filter(field_mapping=self.field_mapping)
        return queryset.order_by(
            "field_mapping__connection__name",
            "field_mapping__object_name",
            "field_mapping__field_name",
            "sort_order",
            "value",
        )

    def before_import(self, dataset, **kwargs):
        self._pending.clear()
        queryset = PicklistValue.objects.select_related("field_mapping__connection", "stage")
        if self.connection is not None:
            queryset = queryset.filter(field_mapping__connection=self.connection)
        elif "connection" in (dataset.headers or []):
            # Stripped, as get_or_init_instance strips the row's connection name.
            queryset = queryset.filter(
                field_mapping__connection__name__in={
                    str(name or "").strip() for name in dataset["connection"]
                }
            )
        self._values = {
            (
                value.field_mapping.connection.name,
                value.field_mapping.object_name,
                value.field_mapping.field_name,
                value.value,
            ): value
            for value in queryset
        }

    def get_or_init_instance(self, instance_loader, row):
        key = tuple(str(row.get(column) or "").strip() for column in COLUMNS[:3]) + (
            str(row.get("value") or ""),
        )
        if self.connection is not None and key[0] != self.connection.name:
            raise ValidationError(OTHER_CONNECTION.format(row=key[0], connection=self.connection))
        instance = self._values.get(key)
        if instance is None:
            raise ValidationError(
                UNKNOWN_VALUE.format(connection=key[0], object=key[1], field=key[2], value=key[3])
            )
        return instance, False

    def validate_instance(self, instance, import_validation_errors=None, validate_unique=True):
        errors = dict(import_validation_errors or {})
        if self._meta.clean_model_instances:
            # Rules that span rows (one outbound value per stage, one-to-one) are checked
            # over the whole file in after_import, against the file's final state.
            try:
                instance.full_clean(
                    exclude=errors.keys(), validate_unique=False, validate_constraints=False
                )
            except ValidationError as exc:
                errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def save_instance(self, instance, is_create, row, **kwargs):
        if instance.pk in self._pending:
            raise ValidationError(DUPLICATE_ROW.format(value=instance.value))
        self._pending[instance.pk] = (instance, kwargs.get("row_number"), dict(row))

    def after_import(self, dataset, result, **kwargs):
        acting_user = kwargs.get("user")
        by_field_mapping = defaultdict(dict)
        for instance, _number, _row in self._pending.values():
            by_field_mapping[instance.field_mapping][instance.pk] = MappingChange(
                stage=instance.stage, outbound=bool(instance.outbound)
            )
        for field_mapping, changes in by_field_mapping.items():
            try:
                picklist_values_apply(
                    field_mapping=field_mapping, changes=changes, acting_user=acting_user
                )
            except MappingRuleError as exc:
                for pk, messages in exc.by_value.items():
                    _instance, number, row = self._pending.get(pk, (None, 0, {}))
                    result.append_invalid_row(number, row, ValidationError({"stage": messages}))
        self._pending.clear()


class StageResource(_QuotedCellsResource):
    """Stages by key (key, name, order, category, active); saves go through stage_save."""

    active = Field(attribute="active", column_name="active", widget=StrictBooleanWidget())

    class Meta:
        model = Stage
        fields = ("key", "name", "order", "category", "active")
        export_order = fields
        import_id_fields = ("key",)
        clean_model_instances = True
        use_transactions = True
        skip_unchanged = True
        report_skipped = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._keys: set[str] = set()
        self._user = None

    def get_export_queryset(self, request=None, **kwargs):
        return Stage.objects.order_by("order", "name")

    def before_import(self, dataset, **kwargs):
        self._keys.clear()
        self._user = kwargs.get("user")

    def before_import_row(self, row, **kwargs):
        key = str(row.get("key") or "").strip()
        if key in self._keys:
            raise ValidationError(DUPLICATE_STAGE_KEY.format(key=key))
        self._keys.add(key)

    def do_instance_save(self, instance, is_create):
        stage_save(stage=instance, acting_user=self._user)


def _unescaped(dataset: tablib.Dataset) -> tablib.Dataset:
    copy = tablib.Dataset(headers=dataset.headers)
    if not dataset.headers:
        # No header row (a blank first line): import-export reports the missing key columns,
        # then would crash zipping rows with no headers.
        return copy
    for row in dataset:
        copy.append([unescape_cell(cell) for cell in row])
    return copy
