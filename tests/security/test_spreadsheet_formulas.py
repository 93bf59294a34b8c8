"""Spreadsheet formulas in exports: every CSV/spreadsheet export quotes them, imports undo it."""

import csv
import io
import itertools
import json
import random

import pytest
import tablib
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from mappings.csv_cells import TRIGGERS, escape_cell, unescape_cell
from mappings.models import PicklistValue
from mappings.resources import UNKNOWN_VALUE, PicklistValueMappingResource
from mappings.services.transfer import mappings_export, mappings_import
from tests.mappings.factories import (
    ConnectionFactory,
    FieldMappingFactory,
    PicklistValueFactory,
    stage,
)
from tests.sync.factories import emulator_connection, lead_status_mapping

MALICIOUS = "=cmd|' /C calc'!A0"
# Legitimate values that look like formulas, and one that already starts with a quote.
TRICKY = ("-2+3", "=SUM(A1)", "@x", "'=y")
EXPORT_URL = "/admin/mappings/picklistvalue/export/"
IMPORT_URL = "/admin/mappings/picklistvalue/import/"


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _rows(text: str, delimiter: str = ",") -> list[dict]:
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def _runs_as_formula(cell) -> bool:
    return isinstance(cell, str) and cell != "" and cell[0] in TRIGGERS


def _stages() -> dict[str, str]:
    return {v.value: v.stage.key for v in PicklistValue.objects.select_related("stage")}


@pytest.fixture
def lead_status(db):
    return FieldMappingFactory(
        connection=ConnectionFactory(name="Acme"), object_name="Lead", field_name="Status"
    )


@pytest.fixture
def tricky_values(lead_status):
    for order, value in enumerate((*TRICKY, MALICIOUS, "'hello", "MQL")):
        PicklistValueFactory(
            field_mapping=lead_status, value=value, sort_order=order, stage=stage("new")
        )
    return lead_status


# The rule itself, over many strings.


def _samples():
    alphabet = "'=+-@\t\rab \n\""
    for length in range(5):
        for chars in itertools.product(alphabet, repeat=length):
            yield "".join(chars)
    generator = random.Random(12)
    for _ in range(5000):
        yield "".join(
            generator.choice(alphabet + "xyz0|!") for _ in range(generator.randint(1, 12))
        )


def test_unescape_undoes_escape_for_every_string():
    for text in _samples():
        assert unescape_cell(escape_cell(text)) == text, repr(text)


def test_an_escaped_cell_never_starts_with_a_trigger_character():
    for text in _samples():
        escaped = escape_cell(text)
        assert not escaped or escaped[0] not in TRIGGERS, repr(text)
        if text and text[0] in TRIGGERS:
            assert escaped == "'" + text


def test_escape_leaves_plain_values_and_non_text_alone():
    assert escape_cell("'hello") == "'hello"
    assert escape_cell("'=y") == "''=y"
    assert unescape_cell("=SUM(A1)") == "=SUM(A1)"  # typed without the quote
    assert unescape_cell("'hello") == "'hello"
    for value in (None, True, 3, -2.5):
        assert escape_cell(value) == value
        assert unescape_cell(value) == value


# Every export path.


def test_commands_quote_a_formula_from_salesforce(db, emulator, settings):
    settings.STAGEMAP_SYNC_OPPORTUNITIES = False
    connection = emulator_connection(emulator, settings)
    lead_status_mapping(connection)
    emulator.org.add_picklist_value("Lead", "Status", MALICIOUS)
    emulator.org.create_record("Lead", {"LastName": "Mallory", "Company": "X", "Status": MALICIOUS})
    _call("refresh_picklists", connection.name)
    _call("sync", connection.name, "--object", "Lead")

    mappings = _rows(_call("export_mappings", connection.name))
    [mapping_row] = [row for row in mappings if "calc" in row["value"]]
    assert mapping_row["value"] == "'" + MALICIOUS
    assert mapping_row["label"] == "'" + MALICIOUS

    records = _rows(_call("export_records", connection.name, "--format", "csv"))
    assert [r["raw_value"] for r in records if "calc" in r["raw_value"]] == ["'" + MALICIOUS]
    assert not [cell for r in records for cell in r.values() if _runs_as_formula(cell)]

    # JSON is read by programs, not spreadsheets: the value stays raw there.
    data = json.loads(_call("export_records", connection.name, "--format", "json"))
    assert [r["raw_value"] for r in data if "calc" in r["raw_value"]] == [MALICIOUS]


def _admin_export(client, extension: str) -> bytes:
    formats = admin.site._registry[PicklistValue].get_export_formats()
    offered = [fmt().get_extension() for fmt in formats]
    if extension not in offered:
        pytest.skip(f"the admin does not offer {extension} exports (offered: {offered})")
    data = {"format": str(offered.index(extension)), "resource": "0"}
    for name in PicklistValueMappingResource().get_export_order():
        data[f"picklistvaluemappingresource_{name}"] = "on"
    response = client.post(EXPORT_URL, data)
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith(f'.{extension}"')
    return response.content


@pytest.mark.parametrize("extension", ["csv", "tsv", "xlsx", "xls", "ods"])
def test_admin_export_quotes_formulas(admin_client, tricky_values, extension):
    content = _admin_export(admin_client, extension)
    if extension in ("csv", "tsv"):
        rows = _rows(content.decode("utf-8-sig"), "," if extension == "csv" else "\t")
        values = [row["value"] for row in rows]
    elif extension == "xlsx":
        openpyxl = pytest.importorskip("openpyxl")
        sheet = openpyxl.load_workbook(io.BytesIO(content)).active
        header = [cell.value for cell in next(sheet.iter_rows(max_row=1))]
        column = header.index("value")
        values = [row[column].value for row in sheet.iter_rows(min_row=2)]
        assert all(row[column].data_type == "s" for row in sheet.iter_rows(min_row=2))
    else:
        values = tablib.Dataset().load(content, format=extension)["value"]
    assert "'" + MALICIOUS in values
    assert MALICIOUS not in values
    assert not [value for value in values if _runs_as_formula(value)]


# Export, then import: every value matches and the changed stage is applied.


def _change_stage(text: str, value: str, key: str) -> str:
    rows = _rows(text)
    for row in rows:
        if unescape_cell(row["value"]) == value:
            row["stage"] = key
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_round_trip_through_the_import_service(tricky_values, admin_user):
    text = mappings_export(connection=tricky_values.connection)
    assert {row["value"] for row in _rows(text)} >= {"'-2+3", "'=SUM(A1)", "'@x", "''=y"}

    outcome = mappings_import(
        connection=tricky_values.connection,
        data=_change_stage(text, "=SUM(A1)", "contacted"),
        acting_user=admin_user,
    )

    assert outcome.errors == []
    assert outcome.totals["changed"] == 1
    assert outcome.totals["unchanged"] == 6
    assert _stages() == {
        "-2+3": "new",
        "=SUM(A1)": "contacted",
        "@x": "new",
        "'=y": "new",
        MALICIOUS: "new",
        "'hello": "new",
        "MQL": "new",
    }


@pytest.mark.parametrize("value", TRICKY)
def test_round_trip_through_the_commands(tricky_values, tmp_path, value):
    path = tmp_path / "mappings.csv"
    call_command("export_mappings", "Acme", "-o", str(path), stderr=io.StringIO())
    assert "'" + value in path.read_text(encoding="utf-8")
    path.write_text(_change_stage(path.read_text(encoding="utf-8"), value, "lost"))

    output = _call("import_mappings", "Acme", str(path))

    assert "Imported" in output
    unknown = UNKNOWN_VALUE.format(connection="Acme", object="Lead", field="Status", value=value)
    assert unknown not in output
    assert {v: k for v, k in _stages().items() if k == "lost"} == {value: "lost"}


def test_round_trip_through_the_admin(admin_client, tricky_values):
    text = _admin_export(admin_client, "csv").decode("utf-8-sig")
    assert "'=SUM(A1)" in text
    upload = SimpleUploadedFile("m.csv", _change_stage(text, "'=y", "converted").encode("utf-8"))
    preview = admin_client.post(IMPORT_URL, {"import_file": upload, "format": "0", "resource": "0"})
    confirm = preview.context["confirm_form"]
    assert confirm is not None, preview.content.decode()[:2000]

    done = admin_client.post("/admin/mappings/picklistvalue/process_import/", {**confirm.initial})

    assert done.status_code == 302
    assert {v: k for v, k in _stages().items() if k == "converted"} == {"'=y": "converted"}
