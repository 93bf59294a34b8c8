"""Admin forms: the field mapping with its paged value table, one value's mapping, merges."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlencode

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import escape

from connections.salesforce import SalesforceError
from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.selectors import VALUE_FILTERS, ValuesPage, picklist_values_page
from mappings.services.fields import (
    UPDATABLE_OPTIONS,
    field_mapping_placeholder_error,
    field_name_validator,
    object_name_validator,
    picklist_field_check,
    picklist_fields_describe,
)
from mappings.services.values import MappingChange, picklist_values_check

UNKNOWN_ROW = "A posted row is not one of this field's values: reload the page."
UNKNOWN_STAGE = "No such stage: reload the page."
CHANGED_MEANWHILE = (
    "Someone changed this value since the page was opened (now: {now}); nothing was saved. "
    "Check it and save again."
)
ERR_TOO_MANY_ROWS = "A save takes at most {limit} rows at once."
OFF_PAGE_ERROR = "“{value}”: {message}"
ERR_VALUE_RULES = "Some values break a mapping rule: see the messages next to their rows."
POSTED_ROW = re.compile(r"^v-(\d{1,18})-was$")
MAX_POSTED_ROWS = 300


class PicklistValueMappingForm(forms.ModelForm):
    """One value's stage and outbound flag (its own change page); the rules across the field's
    values are the service's (picklist_values_check)."""

    class Meta:
        model = PicklistValue
        fields = ["stage", "outbound"]

    def _get_validation_exclusions(self):
        exclusions = super()._get_validation_exclusions()
        exclusions.add("stage")
        return exclusions

    def validate_unique(self):
        # Constraints span rows: the service checks them against the field's other values.
        pass


@dataclass
class ValueRow:
    """A row of the value table as shown: the stored value, what is selected, its errors."""

    value: PicklistValue
    stage_pk: str
    outbound: bool
    stage_errors: list[str] = field(default_factory=list)
    outbound_errors: list[str] = field(default_factory=list)

    @property
    def was(self) -> str:
        return _state_token(self.value.stage_id, self.value.outbound)

    @property
    def errors(self) -> list[str]:
        return [*self.stage_errors, *self.outbound_errors]


def _state_token(stage_id, outbound: bool) -> str:
    return f"{stage_id or ''}|{int(bool(outbound))}"


class ValueTable:
    """The mapping page's value table: one page of values, and the rows a save posted.

    Rows post as `v-<id>-was` (the stage and flag the page showed), `v-<id>-stage` and
    `v-<id>-outbound`; the page sends only rows that changed (and without JavaScript, its
    page), so a field with thousands of values saves like one with ten. A row that someone
    else changed since the page was shown is refused, not overwritten.
    """

    def __init__(self, *, field_mapping: FieldMapping, query, stages: list[Stage]):
        self.field_mapping = field_mapping
        self.query = query
        self.stages = stages
        self._stages_by_pk = {str(stage.pk): stage for stage in stages}
        self.posted: dict[int, tuple[str, bool]] = {}
        self.changes: dict[int, MappingChange] = {}
        self.row_errors: dict[int, dict[str, list[str]]] = {}
        self.errors: list[str] = []

    @property
    def stage_choices(self) -> list[tuple[str, str]]:
        return [("", "— unmapped —")] + [
            (str(stage.pk), stage.name if stage.active else f"{stage.name} (inactive)")
            for stage in self.stages
        ]

    def read_post(self, data) -> None:
        """Turn the posted rows into changes; errors of a row are kept next to it."""
        pks = []
        for key in data:
            match = POSTED_ROW.match(key)
            if match:
                pks.append(int(match.group(1)))
        if not pks:
            return
        if len(pks) > MAX_POSTED_ROWS:
            self.errors.append(ERR_TOO_MANY_ROWS.format(limit=MAX_POSTED_ROWS))
            return
        values = {
            value.pk: value
            for value in PicklistValue.objects.filter(field_mapping=self.field_mapping,
                                                      pk__in=pks)
        }
        if len(values) != len(set(pks)):
            self.errors.append(UNKNOWN_ROW)
            return
        for pk in pks:
            value = values[pk]
            stage_pk = data.get(f"v-{pk}-stage", "")
            outbound = bool(data.get(f"v-{pk}-outbound"))
            self.posted[pk] = (stage_pk, outbound)
            if stage_pk and stage_pk not in self._stages_by_pk:
                self._row_error(pk, "stage", UNKNOWN_STAGE)
                continue
            was = data.get(f"v-{pk}-was", "")
            now = _state_token(value.stage_id, value.outbound)
            if _state_token(stage_pk, outbound) == was:
                continue
            if was != now:
                self._row_error(pk, "stage", CHANGED_MEANWHILE.format(
                    now=value.stage.name if value.stage else "unmapped"
                ))
                continue
            self.changes[pk] = MappingChange(
                stage=self._stages_by_pk.get(stage_pk), outbound=outbound
            )

    def check_rules(self, field_mapping: FieldMapping) -> None:
        """The mapping rules over the whole field as it will be (options as posted too)."""
        errors = picklist_values_check(field_mapping=field_mapping, changes=self.changes)
        if not errors:
            return
        names = dict(
            PicklistValue.objects.filter(pk__in=[k for k in errors if k not in self.posted])
            .values_list("pk", "value")
        )
        for pk, messages in errors.items():
            for message in messages:
                if pk in self.posted:
                    self._row_error(pk, "outbound" if "outbound" in message.lower() else "stage",
                                    message)
                else:
                    self.errors.append(OFF_PAGE_ERROR.format(value=names.get(pk, pk),
                                                             message=message))

    def _row_error(self, pk: int, column: str, message: str) -> None:
        self.row_errors.setdefault(pk, {}).setdefault(column, []).append(message)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.row_errors)

    @cached_property
    def page(self) -> ValuesPage:
        try:
            number = int(self.query.get("page", 1))
        except (TypeError, ValueError):
            number = 1
        return picklist_values_page(
            field_mapping=self.field_mapping,
            show=self.query.get("values", "all"),
            # PostgreSQL refuses NUL in a query; no value or label holds one.
            search=self.query.get("q", "").replace("\x00", ""),
            page=number,
        )

    @cached_property
    def rows(self) -> list[ValueRow]:
        rows = []
        for value in self.page.rows:
            stage_pk, outbound = self.posted.get(
                value.pk, (str(value.stage_id or ""), value.outbound)
            )
            errors = self.row_errors.get(value.pk, {})
            rows.append(ValueRow(value=value, stage_pk=stage_pk, outbound=outbound,
                                 stage_errors=errors.get("stage", []),
                                 outbound_errors=errors.get("outbound", [])))
        return rows

    def filters(self) -> list[dict]:
        page = self.page
        return [
            {"key": key, "label": label, "count": page.counts[key], "selected": key == page.show,
             "query": self._query(values=key, page=None)}
            for key, (label, _rule) in VALUE_FILTERS.items()
        ]

    @property
    def clear_query(self) -> str:
        return self._query(q="", page=None)

    def page_query(self, number: int) -> str:
        return self._query(page=number)

    @property
    def previous_query(self) -> str:
        return self.page_query(self.page.number - 1) if self.page.number > 1 else ""

    @property
    def next_query(self) -> str:
        page = self.page
        return self.page_query(page.number + 1) if page.number < page.pages else ""

    def _query(self, **changes) -> str:
        params = {"values": self.page.show, "q": self.page.search, "page": self.page.number}
        params.update(changes)
        return "?" + urlencode({k: v for k, v in params.items()
                                if v not in (None, "") and not (k == "values" and v == "all")
                                and not (k == "page" and v == 1)})


class FieldMappingForm(forms.ModelForm):
    """Adding a field checks with describe that it is a picklist of the object."""

    class Meta:
        model = FieldMapping
        fields = ["connection", "object_name", "field_name", *UPDATABLE_OPTIONS]

    # Set by the admin per request: the page's query string (filter, search, page) and the
    # stages read once for every row's dropdown.
    values_query: dict = {}
    stages: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None and "field_name" in self.fields:
            self._offer_picklist_fields()
        for name, validator in (
            ("object_name", object_name_validator),
            ("field_name", field_name_validator),
        ):
            if name in self.fields:
                self.fields[name].validators.append(validator)

    def _offer_picklist_fields(self):
        connection_id = self.initial.get("connection") or self.data.get("connection")
        object_name = self.initial.get("object_name") or self.data.get("object_name")
        if not connection_id or not object_name:
            self.fields["field_name"].help_text = (
                "API name of the picklist field. Open this page with ?connection=ID&object_name="
                "Lead to choose from the fields Salesforce reports."
            )
            return
        try:
            connection = self.fields["connection"].clean(connection_id)
        except ValidationError as exc:
            return self._explain_no_field_list("connection", exc)
        try:
            object_name_validator(object_name)
        except ValidationError as exc:
            return self._explain_no_field_list("object_name", exc)
        try:
            fields = picklist_fields_describe(connection=connection, object_name=object_name)
        except SalesforceError as exc:
            # The admin renders help text unescaped, and this text comes from Salesforce.
            message = escape(exc.message)
            self.fields["field_name"].help_text = f"Could not list the fields: {message}"
            return
        self.fields["field_name"] = forms.ChoiceField(
            choices=[(f.name, f"{f.label} ({f.name})") for f in fields],
            label=self.fields["field_name"].label,
        )

    def _explain_no_field_list(self, name: str, error: ValidationError) -> None:
        # A posted form reports the error when it is cleaned; a page opened with bad
        # parameters says next to the field why it offers no list.
        if not self.is_bound:
            self.fields[name].help_text = escape(" ".join(error.messages))

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        if self.instance.pk is None:
            try:
                field = picklist_field_check(
                    connection=cleaned["connection"],
                    object_name=cleaned["object_name"],
                    field_name=cleaned["field_name"],
                )
            except ValidationError as exc:
                self.add_error("field_name", exc)
                return cleaned
            self.instance.field_label = field.label
        error = field_mapping_placeholder_error(self.instance, cleaned)
        if error:
            self.add_error("external_placeholder_value", error)
        return cleaned

    @cached_property
    def value_table(self) -> ValueTable | None:
        if self.instance.pk is None:
            return None
        return ValueTable(field_mapping=self.instance, query=self.values_query,
                          stages=self.stages)

    def _post_clean(self):
        super()._post_clean()
        table = self.value_table
        if table is None or not self.is_bound:
            return
        table.read_post(self.data)
        # The rules see the values and the options as they will be after this save: one-to-one
        # switched on here may be satisfied by a row changed in the same submit.
        if not self.errors and not table.has_errors:
            table.check_rules(self.instance)
        if table.has_errors:
            self.add_error(None, [ERR_VALUE_RULES, *table.errors])


class StageMergeForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Stage.objects.filter(active=True), label="Merge into")

    def __init__(self, *args, source: Stage, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = Stage.objects.filter(active=True).exclude(pk=source.pk)


class AutomapForm(forms.Form):
    create_stages = forms.BooleanField(
        required=False, help_text="Create a stage for a value that matches none."
    )
