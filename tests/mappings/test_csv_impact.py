"""Mapping import with its impact: the streaming service, the mapping page's buttons, commands."""

import csv
import io
import json
import math
import re
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape
from openpyxl import Workbook, load_workbook

from mappings.admin import MSG_UPLOAD_GONE
from mappings.models import FieldMapping, PicklistValue
from mappings.services import tabular
from mappings.services.mapping_import import (
    BAD_BOOLEAN,
    CHANGED_SINCE_PREVIEW,
    DISAGREEING_ROWS,
    OTHER_CONNECTION,
    OTHER_FIELD,
    RULE_BROKEN,
    UNKNOWN_STAGE,
    UNKNOWN_VALUE,
    picklist_values_import,
)
from mappings.services.tabular import (
    CHUNK_ROWS,
    EMPTY_FILE,
    LINE_TOO_LONG,
    MAX_LINE_CHARS,
    MISSING_COLUMNS,
    NOT_UTF8,
    UNKNOWN_COLUMNS,
    XLSX_TOO_LARGE,
)
from mappings.services.transfer import mappings_export
from mappings.services.values import OUTBOUND_DUPLICATE, picklist_value_set_mapping
from tests.mappings.factories import ConnectionFactory, FieldMappingFactory, PicklistValueFactory
from tests.mappings.factories import stage as stage_named
from tests.sync.factories import SyncedRecordFactory

pytestmark = pytest.mark.django_db

HEADER = "connection,object,field,value,label,stage,outbound\n"


@pytest.fixture
def values(lead_status):
    PicklistValueFactory(
        field_mapping=lead_status, value="MQL", sort_order=1, stage=stage_named("new"),
        outbound=True,
    )
    PicklistValueFactory(field_mapping=lead_status, value="SQL", sort_order=2)
    PicklistValueFactory(field_mapping=lead_status, value="Lost", sort_order=3)
    return lead_status


@pytest.fixture
def records(values):
    """Stored records: MQL twice at new and once at contacted, SQL three times unmapped."""
    by_value = {v.value: v for v in values.values.all()}
    made = []
    for value, stage_key, count in (("MQL", "new", 2), ("MQL", "contacted", 1), ("SQL", None, 3)):
        for _ in range(count):
            made.append(
                SyncedRecordFactory(
                    connection=values.connection,
                    raw_value=value,
                    picklist_value=by_value[value],
                    stage=stage_named(stage_key) if stage_key else None,
                )
            )
    return made


def _mapping():
    return {
        v.value: (v.stage.key if v.stage else "", v.outbound)
        for v in PicklistValue.objects.select_related("stage")
    }


def _import(text, *, connection=None, field_mapping=None, name="m.csv", **kwargs):
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    return picklist_values_import(
        source=io.BytesIO(data), name=name, connection=connection, field_mapping=field_mapping,
        acting_user=kwargs.pop("acting_user", None), **kwargs,
    )


def _csv(*rows):
    return HEADER + "".join(f"Acme,Lead,Status,{row}\n" for row in rows)


# -- the preview and its impact ----------------------------------------------------------------


def test_the_preview_lists_each_changed_row_with_the_records_that_move(values, records):
    before = _mapping()
    outcome = _import(
        _csv("MQL,MQL,contacted,1", "SQL,SQL,contacted,0", "Lost,Lost,,0"),
        connection=values.connection, dry_run=True,
    )

    assert outcome.ok, outcome.errors
    assert _mapping() == before
    by_value = {row.value: row for row in outcome.rows}
    assert set(by_value) == {"MQL", "SQL"}
    mql, sql = by_value["MQL"], by_value["SQL"]
    assert (mql.line, mql.old_stage, mql.new_stage, mql.old_outbound, mql.new_outbound) == (
        2, "new", "contacted", True, True
    )
    # Two MQL records are at new and move; the one already at contacted stays.
    assert mql.records == 2
    assert (sql.line, sql.old_stage, sql.new_stage, sql.records) == (3, "", "contacted", 3)
    assert outcome.totals == {
        "rows": 3, "changed": 2, "unchanged": 1, "errors": 0, "records": 5,
    }


def test_a_changed_row_reads_as_old_to_new_with_its_records(values, records):
    outcome = _import(_csv("SQL,SQL,in_progress,1"), connection=values.connection, dry_run=True)
    assert [row.describe() for row in outcome.rows] == [
        "line 2: Lead.Status “SQL”: unmapped → in_progress, outbound no → yes, 3 records move"
    ]


def test_an_outbound_only_change_moves_no_record(values, records):
    outcome = _import(_csv("MQL,MQL,new,0"), connection=values.connection, dry_run=True)
    assert [(row.stage_changed, row.outbound_changed, row.records) for row in outcome.rows] == [
        (False, True, 0)
    ]
    assert outcome.rows[0].describe().endswith("stage new stays, outbound yes → no, 0 records move")


def test_records_of_a_field_that_decides_no_stage_do_not_move(connection):
    outbound_only = FieldMappingFactory(
        connection=connection, object_name="Lead", field_name="Rating__c",
        direction=FieldMapping.Direction.OUTBOUND,
    )
    hot = PicklistValueFactory(field_mapping=outbound_only, value="Hot")
    SyncedRecordFactory(connection=connection, raw_value="Hot", picklist_value=hot)
    text = HEADER + "Acme,Lead,Rating__c,Hot,Hot,lost,0\n"
    outcome = _import(text, connection=connection, dry_run=True)
    assert outcome.ok, outcome.errors
    assert [(row.value, row.records) for row in outcome.rows] == [("Hot", 0)]


def test_the_preview_lists_at_most_the_limit_and_counts_the_rest(values, records):
    outcome = _import(
        _csv("MQL,MQL,lost,1", "SQL,SQL,contacted,0", "Lost,Lost,lost,0"),
        connection=values.connection, dry_run=True, preview_limit=2,
    )
    assert [row.value for row in outcome.rows] == ["MQL", "SQL"]
    assert outcome.more_rows == 1
    # Records of rows past the limit still count in the total.
    assert outcome.totals["records"] == 3 + 3


def test_the_import_applies_with_history_and_reports_what_it_did(values, records, admin_user):
    outcome = _import(
        _csv("MQL,MQL,contacted,1", "SQL,SQL,lost,0"),
        connection=values.connection, acting_user=admin_user,
    )
    assert outcome.ok and outcome.applied
    assert _mapping() == {"MQL": ("contacted", True), "SQL": ("lost", False), "Lost": ("", False)}
    assert PicklistValue.objects.get(value="SQL").history.first().history_user == admin_user


def test_formula_cells_are_unescaped_on_import(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="=SUM(A1)")
    outcome = _import(_csv("'=SUM(A1),x,lost,0"), connection=lead_status.connection)
    assert outcome.ok, outcome.errors
    assert _mapping() == {"=SUM(A1)": ("lost", False)}


# -- rows that are refused ---------------------------------------------------------------------


def test_two_rows_that_disagree_are_refused_naming_both_lines(values):
    before = _mapping()
    outcome = _import(
        _csv("MQL,MQL,contacted,1", "SQL,SQL,lost,0", "MQL,MQL,lost,1"),
        connection=values.connection,
    )
    assert outcome.errors == [
        DISAGREEING_ROWS.format(
            first=2, second=4, value="MQL", difference="stage contacted vs lost"
        )
    ]
    assert _mapping() == before


def test_a_row_that_keeps_a_value_disagrees_with_a_later_row_that_changes_it(values):
    before = _mapping()
    outcome = _import(
        _csv("MQL,MQL,new,1", "SQL,SQL,lost,0", "MQL,MQL,lost,0"), connection=values.connection
    )
    assert outcome.errors == [
        DISAGREEING_ROWS.format(
            first=2, second=4, value="MQL", difference="stage new vs lost, outbound yes vs no"
        )
    ]
    assert _mapping() == before


def test_identical_repeated_rows_are_accepted_once(values):
    outcome = _import(_csv("SQL,SQL,lost,0", "SQL,SQL,lost,0"), connection=values.connection)
    assert outcome.ok, outcome.errors
    assert (outcome.totals["changed"], outcome.totals["unchanged"]) == (1, 1)
    assert _mapping()["SQL"] == ("lost", False)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Acme,Lead,Status,SQL,SQL,nowhere,0", UNKNOWN_STAGE.format(key="nowhere")),
        (
            "Acme,Lead,Status,Ghost,Ghost,lost,0",
            UNKNOWN_VALUE.format(connection="Acme", object="Lead", field="Status", value="Ghost"),
        ),
        (
            "Acme,Lead,Nope__c,SQL,SQL,lost,0",
            UNKNOWN_VALUE.format(connection="Acme", object="Lead", field="Nope__c", value="SQL"),
        ),
        ("Acme,Lead,Status,SQL,SQL,lost,maybe", BAD_BOOLEAN.format(value="maybe")),
        ("Other,Lead,Status,SQL,SQL,lost,0", OTHER_CONNECTION.format(row="Other",
                                                                     connection="Acme")),
    ],
)
def test_one_bad_row_and_nothing_is_written(values, row, message):
    before = _mapping()
    text = _csv("Lost,Lost,lost,0") + row + "\n"
    outcome = _import(text, connection=values.connection)
    assert outcome.errors == [f"line 3: {message}"]
    assert not outcome.applied
    assert _mapping() == before


def test_a_field_page_refuses_rows_of_another_field(values):
    other = FieldMappingFactory(connection=values.connection, field_name="Rating__c",
                                direction=FieldMapping.Direction.OUTBOUND)
    PicklistValueFactory(field_mapping=other, value="Hot")
    text = _csv("SQL,SQL,lost,0") + "Acme,Lead,Rating__c,Hot,Hot,lost,0\n"
    outcome = _import(text, field_mapping=values)
    assert outcome.errors == [
        "line 3: " + OTHER_FIELD.format(row="Lead.Rating__c", field="Lead.Status")
    ]
    assert _mapping()["SQL"] == ("", False)


def test_rules_across_rows_are_reported_by_line(values):
    outcome = _import(_csv("SQL,SQL,new,1"), connection=values.connection)
    assert outcome.errors == [
        RULE_BROKEN.format(
            line=2, value="SQL", message=OUTBOUND_DUPLICATE.format(other="MQL", stage="New")
        )
    ]
    assert _mapping()["SQL"] == ("", False)


def test_many_bad_rows_are_reported_up_to_a_limit(values):
    text = _csv(*["Ghost,Ghost,lost,0"] * 250)
    outcome = _import(text, connection=values.connection)
    assert len(outcome.errors) == 201
    assert outcome.errors[-1] == "… and 50 more error(s)."
    assert outcome.totals["errors"] == 250


# -- files that cannot be read -----------------------------------------------------------------


def _zip_without_workbook() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    return out.getvalue()


BAD_FILES = [
    ("latin-1.csv", _csv("Qualifié,Qualifié,lost,0").encode("latin-1"), "is not UTF-8"),
    ("utf16.csv", _csv("SQL,SQL,lost,0").encode("utf-16"), "is not UTF-8"),
    ("utf16le.csv", _csv("SQL,SQL,lost,0").encode("utf-16-le"), "is not UTF-8"),
    ("binary.csv", bytes(range(256)) * 8, "is not UTF-8"),
    ("empty.csv", b"", "is empty"),
    ("columns.csv", b"connection,object,value\nAcme,Lead,SQL\n", "lacks the column(s)"),
    ("extra.csv", (HEADER.strip() + ",secret\n").encode(), "does not know: secret"),
    ("quotes.csv", (HEADER + 'Acme,Lead,Status,"SQL"x,SQL,lost,0\n').encode(), "readable CSV"),
    ("long.csv", HEADER.encode() + b"a" * (MAX_LINE_CHARS + 10) + b"\n", "is longer than"),
    ("field.csv", HEADER.encode() + b'"' + b"a" * 200_000 + b'"\n', "readable CSV"),
    ("text.xlsx", HEADER.encode(), "not a zip file"),
    ("other.xlsx", _zip_without_workbook(), "not a readable XLSX"),
    ("cut.xlsx", b"PK\x03\x04" + b"\x00" * 40, "not a readable XLSX"),
]


@pytest.mark.parametrize(("name", "data", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_an_unreadable_file_says_why_and_changes_nothing(values, name, data, words):
    before = _mapping()
    outcome = _import(data, connection=values.connection, name=name)
    assert outcome.unreadable
    assert len(outcome.errors) == 1 and words in outcome.errors[0], outcome.errors
    assert _mapping() == before


def test_the_unreadable_messages_are_the_module_constants(values):
    assert _import(b"\xff\xfe", name="x.csv").errors == [NOT_UTF8.format(file="x.csv")]
    assert _import(b"", name="x.csv").errors == [
        EMPTY_FILE.format(file="x.csv", columns="connection, object, field, value, stage, "
                          "outbound")
    ]
    assert _import(b"connection,object\n").errors == [
        MISSING_COLUMNS.format(columns="field, value, stage, outbound")
    ]
    assert _import(HEADER.strip() + ",x\n").errors == [
        UNKNOWN_COLUMNS.format(columns="x", allowed="connection, object, field, value, stage, "
                               "outbound, label")
    ]
    long = HEADER + "b" * (MAX_LINE_CHARS + 1)
    assert _import(long).errors == [
        LINE_TOO_LONG.format(file="m.csv", line=2, limit=MAX_LINE_CHARS)
    ]


def test_a_bom_and_crlf_line_ends_are_read(values):
    data = "\ufeff" + _csv("SQL,SQL,lost,0").replace("\n", "\r\n")
    outcome = _import(data, connection=values.connection)
    assert outcome.ok, outcome.errors
    assert _mapping()["SQL"] == ("lost", False)


# -- XLSX --------------------------------------------------------------------------------------


def _xlsx_bytes(rows) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def test_xlsx_round_trip_quotes_formulas_and_imports_back(values):
    PicklistValueFactory(field_mapping=values, value="=SUM(A1)", sort_order=4)
    content = mappings_export(field_mapping=values, file_format="xlsx")
    sheet = load_workbook(io.BytesIO(content)).active
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0] == ["connection", "object", "field", "value", "label", "stage", "outbound"]
    formula_row = next(row for row in rows if row[3] == "'=SUM(A1)")
    assert sheet.cell(row=rows.index(formula_row) + 1, column=4).data_type == "s"

    for row in rows[1:]:
        if row[3] in ("SQL", "'=SUM(A1)"):
            row[5] = "lost"
    outcome = _import(_xlsx_bytes(rows), field_mapping=values, name="edited.xlsx")

    assert outcome.ok, outcome.errors
    assert {row.value for row in outcome.rows} == {"SQL", "=SUM(A1)"}
    assert _mapping()["=SUM(A1)"] == ("lost", False)
    assert _mapping()["SQL"] == ("lost", False)


def test_xlsx_cells_may_be_numbers_and_booleans(values):
    PicklistValueFactory(field_mapping=values, value="42")
    data = _xlsx_bytes(
        [HEADER.strip().split(","), ["Acme", "Lead", "Status", 42, None, "lost", True]]
    )
    outcome = _import(data, connection=values.connection, name="numbers.xlsx")
    assert outcome.ok, outcome.errors
    assert _mapping()["42"] == ("lost", True)


def test_an_xlsx_that_expands_too_far_is_refused_before_it_is_parsed(values, monkeypatch):
    # openpyxl writes its strings inline in the sheet: the whole expanded size is the limit hit.
    monkeypatch.setattr(tabular, "MAX_XLSX_EXPANDED", 20_000)
    rows = [HEADER.strip().split(",")] + [
        ["Acme", "Lead", "Status", f"value {i}", f"label {i}", "", "0"] for i in range(100)
    ]
    outcome = _import(_xlsx_bytes(rows), connection=values.connection, name="big.xlsx")
    assert outcome.unreadable
    assert outcome.errors == [XLSX_TOO_LARGE.format(file="big.xlsx", limit=0, strings=100)]


def test_an_xlsx_file_is_recognised_by_its_content(values):
    data = _xlsx_bytes([HEADER.strip().split(","), ["Acme", "Lead", "Status", "SQL", "", "lost",
                                                    0]])
    outcome = _import(data, connection=values.connection, name="download")
    assert outcome.ok, outcome.errors
    assert [row.value for row in outcome.rows] == ["SQL"]


# -- one query per chunk -----------------------------------------------------------------------


def _many(field_mapping, count: int) -> str:
    PicklistValue.objects.bulk_create(
        PicklistValue(field_mapping=field_mapping, value=f"V{i:05}", sort_order=i)
        for i in range(count)
    )
    where = f"Acme,{field_mapping.object_name},{field_mapping.field_name}"
    return HEADER + "".join(f"{where},V{i:05},,lost,0\n" for i in range(count))


def _queries_of_dry_run(field_mapping, text):
    with CaptureQueriesContext(db_connection) as ctx:
        outcome = _import(text, connection=field_mapping.connection, dry_run=True)
    assert outcome.ok, outcome.errors[:3]
    return len(ctx.captured_queries), outcome


def test_queries_grow_with_the_chunks_not_the_rows(connection):
    # Both decide the stage of their object, so every chunk also counts records.
    small = FieldMappingFactory(connection=connection, object_name="Account", field_name="Tier")
    large = FieldMappingFactory(connection=connection, object_name="Contact", field_name="Tier")
    small_text, large_text = _many(small, 100), _many(large, 3000)

    small_queries, small_outcome = _queries_of_dry_run(small, small_text)
    large_queries, large_outcome = _queries_of_dry_run(large, large_text)

    assert small_outcome.totals["changed"] == 100
    assert large_outcome.totals["changed"] == 3000
    chunks = math.ceil(3000 / CHUNK_ROWS) - math.ceil(100 / CHUNK_ROWS)
    # Per chunk: one query for the values, one for the records they hold.
    assert large_queries - small_queries == 2 * chunks


# -- the command -------------------------------------------------------------------------------


def test_the_command_dry_run_prints_each_change_and_the_totals(values, records, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(_csv("MQL,MQL,contacted,1", "SQL,SQL,in_progress,0", "Lost,Lost,,0"))
    out = io.StringIO()
    call_command("import_mappings", "Acme", str(path), "--dry-run", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "line 2: Lead.Status “MQL”: new → contacted, outbound yes, 2 records move",
        "line 3: Lead.Status “SQL”: unmapped → in_progress, outbound no, 3 records move",
    ]
    assert lines[2] == (
        "Dry run, nothing saved: 3 row(s) read: 2 changed, 1 unchanged; "
        "5 stored record(s) will change stage."
    )
    assert _mapping()["SQL"] == ("", False)


def test_the_command_json_has_rows_and_totals(values, records, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(_csv("SQL,SQL,in_progress,0"))
    out = io.StringIO()
    call_command("import_mappings", "Acme", str(path), "--dry-run", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["ok"] and data["dry_run"] and not data["applied"]
    assert data["totals"] == {"rows": 1, "changed": 1, "unchanged": 0, "errors": 0, "records": 3}
    assert [(r["line"], r["value"], r["old_stage"], r["new_stage"], r["records"])
            for r in data["rows"]] == [(2, "SQL", "", "in_progress", 3)]
    assert data["rows"][0]["text"].startswith("line 2: Lead.Status “SQL”")


def test_the_command_refuses_disagreeing_rows_and_exits_1(values, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(_csv("SQL,SQL,lost,0", "SQL,SQL,new,0"))
    out = io.StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("import_mappings", "Acme", str(path), stdout=out)
    assert exc.value.returncode == 1
    assert "lines 2 and 3 both set “SQL”: stage lost vs new." in out.getvalue()
    assert _mapping()["SQL"] == ("", False)


@pytest.mark.parametrize(
    ("name", "data", "words"), BAD_FILES[:6], ids=[b[0] for b in BAD_FILES[:6]]
)
def test_the_command_says_why_a_file_is_unreadable(values, tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CommandError) as exc:
        call_command("import_mappings", "Acme", str(path), stdout=io.StringIO())
    assert words in str(exc.value)


def test_the_command_reads_and_writes_xlsx(values, tmp_path):
    path = tmp_path / "m.xlsx"
    call_command("export_mappings", "Acme", "-o", str(path), stderr=io.StringIO())
    workbook = load_workbook(path)
    for row in workbook.active.iter_rows(min_row=2):
        if row[3].value == "Lost":
            row[5].value = "lost"
    workbook.save(path)
    call_command("import_mappings", "Acme", str(path), stdout=io.StringIO())
    assert _mapping()["Lost"] == ("lost", False)


# -- the mapping page --------------------------------------------------------------------------


def _url(field_mapping, name):
    return f"/admin/mappings/fieldmapping/{field_mapping.pk}/{name}/"


def _rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _write(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _confirm_fields(html: str) -> dict:
    return dict(re.findall(r'<input type="hidden" name="(token|suffix|digest|file_name)" '
                           r'value="([^"]*)"', html))


def test_the_mapping_page_has_its_own_buttons(admin_client, values):
    page = admin_client.get(f"/admin/mappings/fieldmapping/{values.pk}/change/").content.decode()
    for name, label in (("export-csv", "Export CSV"), ("export-xlsx", "Export XLSX"),
                        ("import", "Import…"), ("automap", "Auto-map")):
        assert f'href="{_url(values, name)}">{label}</a>' in page


def test_export_import_preview_confirm_in_the_admin(admin_client, admin_user, values, records):
    other = FieldMappingFactory(connection=values.connection, field_name="Rating__c",
                                direction=FieldMapping.Direction.OUTBOUND)
    PicklistValueFactory(field_mapping=other, value="Hot")
    response = admin_client.get(_url(values, "export-csv"))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="acme-lead-status-mappings.csv"'
    rows = _rows_of(response.content.decode())
    assert {row["value"] for row in rows} == {"MQL", "SQL", "Lost"}  # this field's values only

    for row in rows:
        if row["value"] == "SQL":
            row["stage"], row["outbound"] = "in_progress", "1"
    upload = SimpleUploadedFile("edited.csv", _write(rows))
    preview = admin_client.post(_url(values, "import"), {"import_file": upload})

    assert preview.status_code == 200
    html = preview.content.decode()
    assert "Confirm import" in html
    assert [(r.value, r.old_stage, r.new_stage, r.records) for r in preview.context["outcome"].rows
            ] == [("SQL", "", "in_progress", 3)]
    assert "<strong>3 stored records</strong> will change stage" in html
    assert _mapping()["SQL"] == ("", False)

    done = admin_client.post(_url(values, "import-confirm"), _confirm_fields(html))

    assert done.status_code == 302
    assert done["Location"] == f"/admin/mappings/fieldmapping/{values.pk}/change/"
    assert _mapping()["SQL"] == ("in_progress", True)
    assert PicklistValue.objects.get(value="SQL").history.first().history_user == admin_user
    # The file is used once.
    again = admin_client.post(_url(values, "import-confirm"), _confirm_fields(html))
    assert again.status_code == 302 and again["Location"] == _url(values, "import")
    assert MSG_UPLOAD_GONE in [str(m) for m in get_messages(again.wsgi_request)]


def test_confirm_refuses_when_the_mappings_changed_since_the_preview(admin_client, values):
    upload = SimpleUploadedFile("m.csv", _csv("SQL,SQL,lost,0").encode())
    html = admin_client.post(_url(values, "import"), {"import_file": upload}).content.decode()
    picklist_value_set_mapping(
        value=PicklistValue.objects.get(value="SQL"), stage=stage_named("contacted"),
        acting_user=None,
    )

    response = admin_client.post(_url(values, "import-confirm"), _confirm_fields(html))

    assert response.status_code == 200
    assert CHANGED_SINCE_PREVIEW in response.content.decode()
    assert _mapping()["SQL"] == ("contacted", False)


def test_confirm_refuses_a_digest_other_than_the_previewed_one(admin_client, values):
    upload = SimpleUploadedFile("m.csv", _csv("SQL,SQL,lost,0").encode())
    html = admin_client.post(_url(values, "import"), {"import_file": upload}).content.decode()
    fields = {**_confirm_fields(html), "digest": "0" * 64}
    response = admin_client.post(_url(values, "import-confirm"), fields)
    assert CHANGED_SINCE_PREVIEW in response.content.decode()
    assert _mapping()["SQL"] == ("", False)


def test_the_upload_of_another_person_is_not_found(admin_client, client, values,
                                                    stagemap_admin_user):
    upload = SimpleUploadedFile("m.csv", _csv("SQL,SQL,lost,0").encode())
    html = admin_client.post(_url(values, "import"), {"import_file": upload}).content.decode()
    client.force_login(stagemap_admin_user)
    response = client.post(_url(values, "import-confirm"), _confirm_fields(html))
    assert response.status_code == 302 and response["Location"] == _url(values, "import")
    assert _mapping()["SQL"] == ("", False)


UPLOADED_BAD_FILES = [bad for bad in BAD_FILES if bad[1]]


@pytest.mark.parametrize(
    ("name", "data", "words"), UPLOADED_BAD_FILES, ids=[b[0] for b in UPLOADED_BAD_FILES]
)
def test_a_bad_upload_shows_a_message_not_a_traceback(admin_client, values, name, data, words):
    before = _mapping()
    response = admin_client.post(
        _url(values, "import"), {"import_file": SimpleUploadedFile(name, data)}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nothing was imported" in html and "Traceback" not in html
    assert words in response.context["outcome"].errors[0]
    assert "Confirm import" not in html
    assert _mapping() == before


def test_an_empty_upload_is_refused_by_the_form(admin_client, values):
    response = admin_client.post(
        _url(values, "import"), {"import_file": SimpleUploadedFile("m.csv", b"")}
    )
    assert response.status_code == 200
    assert "The submitted file is empty." in response.content.decode()
    assert "Confirm import" not in response.content.decode()


def test_an_upload_that_is_not_csv_or_xlsx_is_refused_by_the_form(admin_client, values):
    response = admin_client.post(
        _url(values, "import"), {"import_file": SimpleUploadedFile("m.pdf", b"%PDF-1.4")}
    )
    assert response.status_code == 200
    assert "Upload a .csv (UTF-8) or .xlsx file." in response.content.decode()


def test_the_preview_of_rows_of_another_field_lists_the_error(admin_client, values):
    data = (HEADER + "Acme,Lead,Rating__c,Hot,Hot,lost,0\n").encode()
    response = admin_client.post(
        _url(values, "import"), {"import_file": SimpleUploadedFile("m.csv", data)}
    )
    assert escape(OTHER_FIELD.format(row="Lead.Rating__c", field="Lead.Status")) in (
        response.content.decode()
    )


def test_xlsx_export_from_the_mapping_page(admin_client, values):
    response = admin_client.get(_url(values, "export-xlsx"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(response.content)).active
    assert [row[3] for row in sheet.iter_rows(min_row=2, values_only=True)] == [
        "MQL", "SQL", "Lost"
    ]


# -- permissions -------------------------------------------------------------------------------


def _staff_with(*codenames):
    user = get_user_model().objects.create_user("limited", "l@example.com", "pw-123456",
                                                is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="mappings",
                                                        codename__in=codenames))
    return user


def test_a_viewer_exports_but_cannot_import(viewer_client, values):
    assert viewer_client.get(_url(values, "export-csv")).status_code == 200
    assert viewer_client.get(_url(values, "import")).status_code == 403
    upload = SimpleUploadedFile("m.csv", _csv("SQL,SQL,lost,0").encode())
    assert viewer_client.post(_url(values, "import"), {"import_file": upload}).status_code == 403
    assert viewer_client.post(_url(values, "import-confirm"), {}).status_code == 403
    page = viewer_client.get(f"/admin/mappings/fieldmapping/{values.pk}/change/").content.decode()
    assert "Import…" not in page and "Export CSV" in page


def test_an_editor_imports(editor_client, values):
    assert editor_client.get(_url(values, "import")).status_code == 200


@pytest.mark.parametrize(
    "codenames",
    [
        ("view_fieldmapping", "change_fieldmapping", "change_picklistvalue"),
        ("view_fieldmapping", "import_picklistvalue"),
    ],
    ids=["no import permission", "no change permission"],
)
def test_import_needs_both_the_import_and_the_change_permission(client, values, codenames):
    client.force_login(_staff_with(*codenames))
    assert client.get(_url(values, "import")).status_code == 403
    assert client.post(_url(values, "import-confirm"), {}).status_code == 403
    page = client.get(f"/admin/mappings/fieldmapping/{values.pk}/change/").content.decode()
    assert "Import…" not in page


def test_export_needs_the_view_permission(client, values):
    client.force_login(_staff_with("view_stage"))
    assert client.get(_url(values, "export-csv")).status_code == 403
    assert client.get(_url(values, "export-xlsx")).status_code == 403


def test_confirm_takes_only_post(admin_client, values):
    assert admin_client.get(_url(values, "import-confirm")).status_code == 405


def test_an_unknown_field_mapping_is_a_404(admin_client, values):
    assert admin_client.get("/admin/mappings/fieldmapping/999999/import/").status_code == 404
    assert admin_client.get("/admin/mappings/fieldmapping/nope/export-csv/").status_code == 404


def test_connection_scope_of_another_org(values):
    other = ConnectionFactory(name="Other")
    outcome = _import(_csv("SQL,SQL,lost,0"), connection=other)
    assert outcome.errors == ["line 2: " + OTHER_CONNECTION.format(row="Acme",
                                                                   connection="Other")]
