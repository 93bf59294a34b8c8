"""Stages exported and imported by key (key, name, order, category, active): service, commands,
the stage list's import/export pages."""

import csv
import io
import json

import pytest
import tablib
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from openpyxl import load_workbook

from mappings.models import Stage
from mappings.resources import DUPLICATE_STAGE_KEY, StageResource
from mappings.services.stage_transfer import (
    BAD_ACTIVE,
    BAD_CATEGORY,
    BAD_ORDER,
    DUPLICATE_KEY,
    stages_export,
    stages_import,
)
from mappings.services.tabular import MISSING_COLUMNS

pytestmark = pytest.mark.django_db

HEADER = "key,name,order,category,active\n"


def _stages():
    return {s.key: (s.name, s.order, s.category, s.active) for s in Stage.objects.all()}


def _import(text, *, name="stages.csv", **kwargs):
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    return stages_import(
        source=io.BytesIO(data), name=name, acting_user=kwargs.pop("acting_user", None),
        **kwargs,
    )


def _edited_export() -> str:
    rows = list(csv.DictReader(io.StringIO(stages_export())))
    for row in rows:
        if row["key"] == "contacted":
            row["name"], row["order"] = "Reached", "25"
        if row["key"] == "lost":
            row["active"] = "no"
    rows.append({"key": "nurture", "name": "Nurture", "order": "35", "category": "open",
                 "active": "yes"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_the_export_has_the_stage_columns_in_funnel_order(db):
    lines = stages_export().splitlines()
    assert lines[0] == HEADER.strip()
    assert lines[1:] == [
        f"{s.key},{s.name},{s.order},{s.category},{1 if s.active else 0}"
        for s in Stage.objects.order_by("order", "name")
    ]


def test_a_dry_run_previews_creates_and_updates_and_changes_nothing(db):
    before = _stages()
    outcome = _import(_edited_export(), dry_run=True)
    assert outcome.ok, outcome.errors
    assert _stages() == before
    assert {(row.key, row.action) for row in outcome.rows} == {
        ("contacted", "update"), ("lost", "update"), ("nurture", "create")
    }
    contacted = next(row for row in outcome.rows if row.key == "contacted")
    assert contacted.changes == {"name": ("Contacted", "Reached"), "order": (20, 25)}
    assert contacted.describe().endswith("contacted: name Contacted → Reached, order 20 → 25")
    assert outcome.totals == {"rows": 6, "create": 1, "update": 2, "unchanged": 3}


def test_the_import_saves_through_stage_save_with_history(admin_user):
    outcome = _import(_edited_export(), acting_user=admin_user)
    assert outcome.ok and outcome.applied
    stages = _stages()
    assert stages["contacted"] == ("Reached", 25, "open", True)
    assert stages["lost"][3] is False
    assert stages["nurture"] == ("Nurture", 35, "open", True)
    assert Stage.objects.get(key="nurture").history.first().history_user == admin_user
    assert Stage.objects.get(key="contacted").history.first().history_user == admin_user


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("new,New again,5,open,1", DUPLICATE_KEY.format(line=3, key="new", first=2)),
        ("mql,MQL,5,pipeline,1", BAD_CATEGORY.format(line=3, value="pipeline",
                                                    choices="open, converted, lost")),
        ("mql,MQL,five,open,1", BAD_ORDER.format(line=3, value="five")),
        ("mql,MQL,-1,open,1", BAD_ORDER.format(line=3, value="-1")),
        ("mql,MQL,5,open,maybe", BAD_ACTIVE.format(line=3, value="maybe")),
        ("not a slug,MQL,5,open,1", "line 3: key: "),
        ("mql,,5,open,1", "line 3: name: "),
    ],
)
def test_one_bad_row_and_no_stage_changes(db, row, message):
    before = _stages()
    outcome = _import(HEADER + "new,Fresh,10,open,1\n" + row + "\n")
    assert not outcome.ok and not outcome.applied
    assert any(error.startswith(message) for error in outcome.errors), outcome.errors
    assert _stages() == before


def test_a_category_may_be_given_by_its_label(db):
    outcome = _import(HEADER + "won,Won,60,Converted,1\n")
    assert outcome.ok, outcome.errors
    assert _stages()["won"] == ("Won", 60, "converted", True)


def test_a_stage_file_without_the_columns_is_refused(db):
    outcome = _import("key,name\nnew,New\n")
    assert outcome.errors == [MISSING_COLUMNS.format(columns="order, category, active")]


def test_xlsx_round_trip(db, tmp_path):
    content = stages_export(file_format="xlsx")
    workbook = load_workbook(io.BytesIO(content))
    sheet = workbook.active
    header = [cell.value for cell in sheet[1]]
    assert header == ["key", "name", "order", "category", "active"]
    for row in sheet.iter_rows(min_row=2):
        if row[0].value == "new":
            row[1].value = "Fresh lead"
            row[2].value = 11
    out = io.BytesIO()
    workbook.save(out)

    outcome = _import(out.getvalue(), name="stages.xlsx")

    assert outcome.ok, outcome.errors
    assert [(row.key, row.changes) for row in outcome.rows] == [
        ("new", {"name": ("New", "Fresh lead"), "order": (10, 11)})
    ]
    assert _stages()["new"][:2] == ("Fresh lead", 11)


def test_the_commands_round_trip_with_dry_run_and_json(db, tmp_path):
    path = tmp_path / "stages.csv"
    call_command("export_stages", "-o", str(path), stderr=io.StringIO())
    text = path.read_text()
    path.write_text(text.replace("in_progress,In Progress,30", "in_progress,Working,30"))

    out = io.StringIO()
    call_command("import_stages", str(path), "--dry-run", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["ok"] and not data["applied"]
    assert [(row["key"], row["changes"]) for row in data["rows"]] == [
        ("in_progress", {"name": ["In Progress", "Working"]})
    ]
    assert _stages()["in_progress"][0] == "In Progress"

    out = io.StringIO()
    call_command("import_stages", str(path), stdout=out)
    assert "Imported: 5 row(s) read: 0 new, 1 updated, 4 unchanged." in out.getvalue()
    assert _stages()["in_progress"][0] == "Working"


def test_the_import_command_exits_1_on_a_bad_row(db, tmp_path):
    path = tmp_path / "stages.csv"
    path.write_text(HEADER + "new,New,ten,open,1\n")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_stages", str(path), stdout=out)
    assert BAD_ORDER.format(line=2, value="ten") in out.getvalue()


def test_the_stage_export_command_writes_xlsx(db, tmp_path):
    path = tmp_path / "stages.xlsx"
    call_command("export_stages", "-o", str(path), stderr=io.StringIO())
    keys = [row[0] for row in load_workbook(path).active.iter_rows(min_row=2, values_only=True)]
    assert keys == list(Stage.objects.order_by("order", "name").values_list("key", flat=True))


# -- the stage list's import/export pages (django-import-export over StageResource) -------------


def test_the_resource_refuses_a_repeated_key(db):
    dataset = tablib.Dataset(headers=["key", "name", "order", "category", "active"])
    dataset.append(["new", "New", "10", "open", "1"])
    dataset.append(["new", "Other", "11", "open", "1"])
    result = StageResource().import_data(dataset, dry_run=True)
    assert result.has_validation_errors()
    messages = [str(m) for row in result.invalid_rows for ms in row.error_dict.values()
                for m in ms]
    assert DUPLICATE_STAGE_KEY.format(key="new") in messages


def test_admin_stage_export_and_import_through_the_pages(admin_client, admin_user):
    export = admin_client.post("/admin/mappings/stage/export/", {"format": "0", "resource": "0",
                                                                 "stageresource_key": "on",
                                                                 "stageresource_name": "on",
                                                                 "stageresource_order": "on",
                                                                 "stageresource_category": "on",
                                                                 "stageresource_active": "on"})
    assert export.status_code == 200
    text = export.content.decode("utf-8-sig")
    assert text.splitlines()[0] == HEADER.strip()
    edited = text.replace("Contacted,20", "Reached,20")
    preview = admin_client.post(
        "/admin/mappings/stage/import/",
        {"import_file": SimpleUploadedFile("s.csv", edited.encode()), "format": "0",
         "resource": "0"},
    )
    confirm = preview.context["confirm_form"]
    assert confirm is not None, preview.content.decode()[:2000]
    done = admin_client.post("/admin/mappings/stage/process_import/", {**confirm.initial})
    assert done.status_code == 302
    stage = Stage.objects.get(key="contacted")
    assert stage.name == "Reached"
    assert stage.history.first().history_user == admin_user


def test_the_stage_list_offers_import_and_export(admin_client):
    page = admin_client.get("/admin/mappings/stage/").content.decode()
    assert "/admin/mappings/stage/import/" in page and ">Import</a>" in page
    assert "/admin/mappings/stage/export/" in page and ">Export</a>" in page


def test_a_viewer_exports_stages_but_cannot_import(viewer_client):
    assert viewer_client.get("/admin/mappings/stage/export/").status_code == 200
    assert viewer_client.get("/admin/mappings/stage/import/").status_code == 403


def test_an_editor_imports_stages(editor_client):
    assert editor_client.get("/admin/mappings/stage/import/").status_code == 200
