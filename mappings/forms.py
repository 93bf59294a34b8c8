"""Admin forms: the field mapping, its inline value table (with the shared rules) and merges."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.utils.html import escape

from connections.salesforce import SalesforceError
from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.services.fields import (
    UPDATABLE_OPTIONS,
    field_mapping_placeholder_error,
    field_name_validator,
    object_name_validator,
    picklist_field_check,
    picklist_fields_describe,
)
from mappings.services.values import ValueState, inbound_placeholder, mapping_errors

UNKNOWN_ROW = "This value is not one of this field's values."


class StageChoiceField(forms.TypedChoiceField):
    """A stage dropdown built from stages read once, so 500 rows cost no extra query."""

    def __init__(self, stages: list[Stage], **kwargs):
        by_pk = {str(stage.pk): stage for stage in stages}

        def coerce(pk):
            return by_pk[str(pk)]

        choices = [("", "— unmapped —")] + [
            (str(stage.pk), stage.name if stage.active else f"{stage.name} (inactive)")
            for stage in stages
        ]
        kwargs.setdefault("required", False)
        super().__init__(choices=choices, coerce=coerce, empty_value=None, **kwargs)


class KnownInstanceField(forms.Field):
    """The hidden primary key of a row, checked against the row's own instance (no query)."""

    widget = forms.HiddenInput

    def __init__(self, instance, **kwargs):
        self.instance = instance
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if self.instance is not None and str(self.instance.pk) == str(value):
            return self.instance
        raise ValidationError(UNKNOWN_ROW, code="invalid_choice")


class PicklistValueInlineForm(forms.ModelForm):
    class Meta:
        model = PicklistValue
        fields = ["stage", "outbound"]

    def _get_validation_exclusions(self):
        # The stage was checked against the stages read once; the formset checks the rules.
        exclusions = super()._get_validation_exclusions()
        exclusions.add("stage")
        return exclusions

    def validate_unique(self):
        # Constraints span rows: PicklistValueFormSet.clean checks them for the whole table.
        pass


class PicklistValueFormSet(BaseInlineFormSet):
    """The value table of a field mapping; rules that span rows are checked in `clean`."""

    def add_fields(self, form, index):
        super().add_fields(form, index)
        pk_name = self.model._meta.pk.name
        instance = None if form.instance._state.adding else form.instance
        initial = form.fields[pk_name].initial
        form.fields[pk_name] = KnownInstanceField(instance, initial=initial)

    def clean(self):
        super().clean()
        if any(form.errors for form in self.forms):
            return
        states, forms_by_key = [], {}
        for form in self.forms:
            value = form.instance
            if value.pk is None:
                continue
            original = self._originals.get(value.pk, (value.stage_id, value.outbound))
            stage = form.cleaned_data.get("stage")
            outbound = bool(form.cleaned_data.get("outbound"))
            states.append(
                ValueState(
                    key=value.pk,
                    value=value.value,
                    active=value.active,
                    removed=value.removed_at is not None,
                    stage=stage,
                    outbound=outbound,
                    stage_changed=(stage.pk if stage else None) != original[0],
                    outbound_changed=outbound != original[1],
                )
            )
            forms_by_key[value.pk] = form
        errors = mapping_errors(
            states=states,
            one_to_one=bool(self.instance.one_to_one),
            inbound_placeholder=inbound_placeholder(self.instance),
        )
        for key, messages in errors.items():
            form = forms_by_key[key]
            for message in messages:
                field = "outbound" if "outbound" in message.lower() else "stage"
                form.add_error(field, message)
        if errors:
            raise ValidationError(
                "Some values break a mapping rule: see the messages next to their rows.",
                code="rules",
            )

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        if not hasattr(self, "_originals"):
            self._originals = {}
        if form.instance.pk is not None:
            # Before the form's cleaning writes the posted values onto the instance.
            self._originals[form.instance.pk] = (form.instance.stage_id, form.instance.outbound)
        return form


class FieldMappingForm(forms.ModelForm):
    """Adding a field checks with describe that it is a picklist of the object."""

    class Meta:
        model = FieldMapping
        fields = ["connection", "object_name", "field_name", *UPDATABLE_OPTIONS]

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
        # One-to-one over the values is checked by the value table's formset, against the
        # values as they will be after this save (they may be fixed in the same submit).
        return cleaned


class StageMergeForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Stage.objects.filter(active=True), label="Merge into")

    def __init__(self, *args, source: Stage, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = Stage.objects.filter(active=True).exclude(pk=source.pk)


class AutomapForm(forms.Form):
    create_stages = forms.BooleanField(
        required=False, help_text="Create a stage for a value that matches none."
    )
