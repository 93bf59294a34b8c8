"""Bad names and files: a form error or a command error with a message, never a 500."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms import ModelChoiceField
from django.utils.html import escape

from mappings.models import FieldMapping, PicklistValue
from mappings.services.fields import API_NAME_MAX_LENGTH, BAD_API_NAME
from mappings.services.tabular import NOT_UTF8
from tests.mappings.factories import (
    ConnectionFactory,
    FieldMappingFactory,
    PicklistValueFactory,
)

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/mappings/fieldmapping/add/"
BAD_OBJECT = BAD_API_NAME.format(kind="object", max_length=API_NAME_MAX_LENGTH)
BAD_FIELD = BAD_API_NAME.format(kind="field", max_length=API_NAME_MAX_LENGTH)
UNKNOWN_CONNECTION = str(ModelChoiceField.default_error_messages["invalid_choice"])

BAD_NAMES = [
    "Lead WHERE",
    "Status, (SELECT Id FROM Account)",
    "Lead;",
    "Lead/../limits",
    "L" * 300,
    "Léad",
    "Лид",
    "_Lead",
    "Lead__",
    "Lead___c",
]
# A form strips surrounding whitespace and requires a value; a command passes them as they are.
BAD_NAMES_FOR_COMMANDS = [*BAD_NAMES, "", "Lead\n", " Lead"]


@pytest.fixture(params=["admin_client", "editor_client"])
def staff_client(request):
    return request.getfixturevalue(request.param)


def _add_form(connection_id, object_name, field_name):
    return {
        "connection": connection_id,
        "object_name": object_name,
        "field_name": field_name,
        "direction": "outbound",
        "conflict_policy": "salesforce_wins",
        "active": "on",
        "values-TOTAL_FORMS": "0",
        "values-INITIAL_FORMS": "0",
        "values-MIN_NUM_FORMS": "0",
        "values-MAX_NUM_FORMS": "1000",
    }


def _mappings():
    return set(FieldMapping.objects.values_list("connection_id", "object_name", "field_name"))


@pytest.mark.parametrize("object_name", BAD_NAMES)
def test_add_page_opened_with_a_bad_object_name_says_so(
    staff_client, sf_connection, emulator, object_name
):
    response = staff_client.get(
        ADD_URL, {"connection": sf_connection.pk, "object_name": object_name}
    )
    assert response.status_code == 200
    assert escape(BAD_OBJECT) in response.content.decode()
    assert emulator.org.count_requests("describe") == 0


@pytest.mark.parametrize("connection_id", ["abc", "999999", "1 OR 1=1"])
def test_add_page_opened_with_a_bad_connection_says_so(staff_client, sf_connection, connection_id):
    response = staff_client.get(ADD_URL, {"connection": connection_id, "object_name": "Lead"})
    assert response.status_code == 200
    assert escape(UNKNOWN_CONNECTION) in response.content.decode()


@pytest.mark.parametrize("object_name", BAD_NAMES)
def test_posting_a_bad_object_name_is_a_form_error(
    staff_client, sf_connection, emulator, object_name
):
    before = _mappings()
    response = staff_client.post(ADD_URL, _add_form(sf_connection.pk, object_name, "Status"))
    assert response.status_code == 200
    assert BAD_OBJECT in response.context["adminform"].form.errors["object_name"]
    assert escape(BAD_OBJECT) in response.content.decode()
    assert _mappings() == before
    assert emulator.org.count_requests("describe") == 0


@pytest.mark.parametrize("field_name", BAD_NAMES)
def test_posting_a_bad_field_name_is_a_form_error(
    staff_client, sf_connection, emulator, field_name
):
    before = _mappings()
    response = staff_client.post(ADD_URL, _add_form(sf_connection.pk, "Lead WHERE", field_name))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert BAD_OBJECT in errors["object_name"]
    assert BAD_FIELD in errors["field_name"]
    assert _mappings() == before
    assert emulator.org.count_requests("describe") == 0


@pytest.mark.parametrize("connection_id", ["abc", "1 OR 1=1"])
def test_posting_a_bad_connection_is_a_form_error(staff_client, sf_connection, connection_id):
    before = _mappings()
    response = staff_client.post(ADD_URL, _add_form(connection_id, "Lead", "Lifecycle_Stage__c"))
    assert response.status_code == 200
    assert UNKNOWN_CONNECTION in response.context["adminform"].form.errors["connection"]
    assert _mappings() == before


@pytest.mark.parametrize(("option", "message"), [("--object", BAD_OBJECT), ("--field", BAD_FIELD)])
@pytest.mark.parametrize("name", BAD_NAMES_FOR_COMMANDS)
def test_field_add_refuses_a_bad_name(sf_connection, emulator, option, message, name):
    names = {"--object": "Lead", "--field": "Lifecycle_Stage__c", option: name}
    before = _mappings()
    with pytest.raises(CommandError) as exc:
        call_command(
            "field_add",
            sf_connection.name,
            "--object",
            names["--object"],
            "--field",
            names["--field"],
            "--direction",
            "outbound",
        )
    assert str(exc.value) == message
    assert _mappings() == before
    assert emulator.org.count_requests("describe") == 0


@pytest.mark.parametrize(
    ("encoding", "value"),
    [
        ("latin-1", "Qualifié"),
        ("utf-16", "Qualifié"),
        ("utf-16-le", "Qualifié"),
        ("utf-16-be", "Qualifié"),
        # Plain ASCII in UTF-16 without a BOM is valid UTF-8 byte by byte.
        ("utf-16-le", "Qualified"),
    ],
)
def test_import_mappings_refuses_a_file_that_is_not_utf8(tmp_path, encoding, value):
    connection = ConnectionFactory(name="Acme")
    lead_status = FieldMappingFactory(
        connection=connection, object_name="Lead", field_name="Status"
    )
    PicklistValueFactory(field_mapping=lead_status, value=value)
    path = tmp_path / "mappings.csv"
    path.write_bytes(
        (
            "connection,object,field,value,label,stage,outbound\n"
            f"Acme,Lead,Status,{value},{value},contacted,1\n"
        ).encode(encoding)
    )
    with pytest.raises(CommandError) as exc:
        call_command("import_mappings", "Acme", str(path))
    assert str(exc.value) == NOT_UTF8.format(file=path)
    assert list(PicklistValue.objects.values_list("value", "stage", "outbound")) == [
        (value, None, False)
    ]
