"""Generated CSV and XLSX files fed to the mapping and stage imports, by command and by admin page.

Whatever the file, an import either refuses it with a message and changes nothing, or applies
exactly what it reported (and the same file again then changes nothing). No page answers 500 or
shows a traceback.
"""

import csv
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils.html import escape
from hypothesis import event, given
from hypothesis import strategies as st
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from mappings.models import PicklistValue, Stage
from tests.fuzz import fuzz
from tests.mappings.factories import ConnectionFactory, FieldMappingFactory, PicklistValueFactory

pytestmark = pytest.mark.django_db

FUZZ = fuzz(40)

CONNECTION = "Acme"
VALUES = ("MQL", "SQL", "Lost", "=SUM(A1)", "-2+3", "'=y", " padded ", "Ünïcødé")
STAGE_KEYS = ("new", "contacted", "in_progress", "converted", "lost")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252")
HIDDEN = r'<input type="hidden" name="(token|suffix|digest|file_name)" value="([^"]*)"'


# -- the data a test starts from and how it compares --------------------------------------------


@pytest.fixture
def lead_status(db):
    field_mapping = FieldMappingFactory(
        connection=ConnectionFactory(name=CONNECTION), object_name="Lead", field_name="Status"
    )
    for order, value in enumerate(VALUES):
        PicklistValueFactory(field_mapping=field_mapping, value=value, sort_order=order)
    new = Stage.objects.get(key="new")
    PicklistValue.objects.filter(value="MQL").update(stage=new, outbound=True)
    PicklistValue.objects.filter(value="Lost").update(stage=Stage.objects.get(key="lost"))
    return field_mapping


def _snapshot():
    values = set(PicklistValue.objects.values_list("field_mapping_id", "value", "stage_id",
                                                   "outbound"))
    stages = set(Stage.objects.values_list("key", "name", "order", "category", "active"))
    return values, stages


def _changed_values(before, after) -> int:
    return len(after[0] - before[0])


def _changed_stages(before, after) -> int:
    return len(after[1] - before[1])


class _Rollback(Exception):
    pass


def _isolated(check):
    """Each example starts from the fixture's data: its writes are rolled back after it."""
    try:
        with transaction.atomic():
            check()
            raise _Rollback
    except _Rollback:
        pass


# -- files ------------------------------------------------------------------------------------

FORMULA = st.builds(lambda head, tail: head + tail, st.sampled_from("=+-@\t\r'"),
                    st.text(max_size=12))
ODD_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(',"\'\n\r\t\x00;\\ \ufeff\u2028'), st.characters()),
    max_size=20,
)
HUGE = st.integers(min_value=1_000, max_value=20_000).map(lambda n: "x" * n)


def _cells(valid):
    return st.one_of(
        st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid),
        st.just(""), FORMULA, ODD_TEXT, HUGE,
    )


MAPPING_CELLS = {
    "connection": _cells((CONNECTION, "Other", " Acme ")),
    "object": _cells(("Lead", "Contact")),
    "field": _cells(("Status", "Rating__c")),
    "value": _cells(VALUES),
    "label": _cells(VALUES),
    "stage": _cells((*STAGE_KEYS, "", "nope")),
    "outbound": _cells(("0", "1", "yes", "no", "", "maybe")),
}
STAGE_CELLS = {
    "key": _cells((*STAGE_KEYS, "nurture", "bad key", "")),
    "name": _cells(("New", "Nurture", "Contacted", "")),
    "order": _cells(("0", "10", "35", "-1", "1e3", "99999999999999999999")),
    "category": _cells(("open", "Converted", "lost", "won")),
    "active": _cells(("1", "0", "yes", "no", "maybe")),
}


VALID_MAPPING_CELLS = {
    "connection": st.sampled_from((CONNECTION, f" {CONNECTION} ")),
    "object": st.just("Lead"),
    "field": st.just("Status"),
    "value": st.sampled_from(VALUES),
    "label": st.one_of(st.sampled_from(VALUES), ODD_TEXT),
    "stage": st.sampled_from((*STAGE_KEYS, "")),
    "outbound": st.sampled_from(("0", "0", "0", "no", "", "1")),
}
VALID_STAGE_CELLS = {
    "key": st.sampled_from((*STAGE_KEYS, "nurture", "won_back")),
    "name": st.sampled_from(("New", "Nurture", "Reached", "Won back", "=Formula", "Ünï")),
    "order": st.integers(0, 99).map(str),
    "category": st.sampled_from(("open", "converted", "lost", "open", "Open")),
    "active": st.sampled_from(("1", "0", "yes", "no")),
}


def _headers(columns):
    known = st.sampled_from(columns)
    return st.one_of(
        st.permutations(columns),
        st.permutations(columns).map(list),
        # A column left out, repeated, unknown, blank or in other case and spacing.
        st.lists(st.one_of(known, st.sampled_from(("extra", "", " Stage ", "VALUE", "KEY "))),
                 max_size=len(columns) + 2),
    )


@st.composite
def valid_csv_files(draw, cells):
    """Files a person could well upload: every column, cells of the right kind."""
    header = list(draw(st.permutations(tuple(cells))))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from((csv.QUOTE_MINIMAL, csv.QUOTE_ALL))),
                        lineterminator=draw(st.sampled_from(("\n", "\r\n"))))
    writer.writerow(header)
    # One row per value or stage key, mostly (a repeat is drawn now and then).
    natural_key = "value" if "value" in cells else "key"
    keys = draw(st.lists(cells[natural_key], min_size=1, max_size=4, unique=True))
    if draw(st.integers(0, 5)) == 0:
        keys.append(keys[0])
    for key in keys:
        writer.writerow([key if name == natural_key else draw(cells[name]) for name in header])
    return out.getvalue().encode(draw(st.sampled_from(("utf-8", "utf-8-sig"))))


@st.composite
def tables(draw, cells):
    header = list(draw(_headers(tuple(cells))))
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        width = draw(st.sampled_from((len(header), len(header), len(header) - 1,
                                      len(header) + 1)))
        row = []
        for index in range(max(width, 0)):
            name = header[index].strip().lower() if index < len(header) else ""
            row.append(draw(cells.get(name, ODD_TEXT)))
        rows.append(row)
    return header, rows


@st.composite
def csv_files(draw, cells):
    header, rows = draw(tables(cells))
    out = io.StringIO()
    quoting = draw(st.sampled_from((csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE)))
    writer = csv.writer(
        out, quoting=quoting, escapechar="\\",
        lineterminator=draw(st.sampled_from(("\n", "\r\n", "\r"))),
    )
    try:
        writer.writerow(header)
        writer.writerows(rows)
    except csv.Error:  # QUOTE_NONE cannot write a lone empty field
        out = io.StringIO()
        csv.writer(out).writerows([header, *rows])
    text = out.getvalue()
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    mutation = draw(st.sampled_from(("none", "none", "none", "cut", "insert", "quote")))
    if mutation != "none" and data:
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if mutation == "cut":
            data = data[:at]
        elif mutation == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        else:
            data = data[:at] + b'"' + data[at:]
    return data


def _xlsx_cell(cell):
    if isinstance(cell, str):
        return ILLEGAL_CHARACTERS_RE.sub("", cell)
    return cell


@st.composite
def xlsx_files(draw, cells):
    header, rows = draw(tables(cells))
    workbook = Workbook()
    sheet = workbook.active
    sheet.append([_xlsx_cell(name) for name in header])
    for row in rows:
        typed = [
            draw(st.one_of(st.just(cell), st.integers(-5, 5), st.booleans(), st.none(),
                           st.floats(allow_nan=False, allow_infinity=False)))
            if draw(st.integers(0, 4)) == 0 else cell
            for cell in row
        ]
        sheet.append([_xlsx_cell(cell) for cell in typed])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def files(cells, valid):
    return st.one_of(
        st.tuples(st.just("fuzz.csv"), valid_csv_files(valid)),
        st.tuples(st.just("fuzz.csv"), valid_csv_files(valid)),
        st.tuples(st.just("fuzz.csv"), valid_csv_files(valid)),
        st.tuples(st.just("fuzz.csv"), csv_files(cells)),
        st.tuples(st.just("fuzz.csv"), csv_files(cells)),
        st.tuples(st.just("fuzz.csv"), csv_files(cells)),
        st.tuples(st.just("fuzz.xlsx"), xlsx_files(cells)),
        st.tuples(st.sampled_from(("fuzz.csv", "fuzz.xlsx")), st.binary(max_size=300)),
        st.tuples(st.sampled_from(("fuzz.csv", "fuzz.xlsx")), st.just(b"")),
    )


# -- the commands -----------------------------------------------------------------------------


def _run(command, *args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except CommandError as exc:
        message = str(exc)
        assert message.strip() and "Traceback" not in message + out.getvalue()
        return False, out.getvalue()
    return True, out.getvalue()


def _totals(output: str) -> list[int]:
    """Changed rows (mappings), or new and updated stages, from the command's closing line."""
    found = re.search(r"row\(s\) read: (\d+) (?:changed|new, (\d+) updated)", output)
    return [int(n) for n in found.groups() if n is not None]


def _dry_run_then_apply(command, *args):
    """The command's dry run (nothing may change), then the real run, which must succeed
    exactly when the dry run did and change nothing when it fails. Returns the snapshots
    before and after, the dry run's output and the real run's (None when it refused)."""
    before = _snapshot()
    ok, dry = _run(command, *args, "--dry-run")
    assert _snapshot() == before
    applied, output = _run(command, *args)
    after = _snapshot()
    assert applied == ok
    event("applied" if applied else "refused")
    if not applied:
        assert after == before
        return before, after, dry, None
    return before, after, dry, output


@FUZZ
@given(file=files(MAPPING_CELLS, VALID_MAPPING_CELLS))
def test_import_mappings_command_refuses_or_applies_what_it_says(lead_status, tmp_path, file):
    name, data = file
    path = tmp_path / name
    path.write_bytes(data)

    def check():
        before, after, dry, output = _dry_run_then_apply("import_mappings", CONNECTION, str(path))
        if output is None:
            return
        (changed,) = _totals(output)
        assert _totals(dry) == [changed]
        assert _changed_values(before, after) == changed
        again, output = _run("import_mappings", CONNECTION, str(path), "--dry-run")
        assert again and _totals(output) == [0]

    _isolated(check)


@FUZZ
@given(file=files(STAGE_CELLS, VALID_STAGE_CELLS))
def test_import_stages_command_refuses_or_applies_what_it_says(db, tmp_path, file):
    name, data = file
    path = tmp_path / name
    path.write_bytes(data)

    def check():
        before, after, dry, output = _dry_run_then_apply("import_stages", str(path))
        if output is None:
            return
        created, updated = _totals(output)
        assert _totals(dry) == [created, updated]
        assert _changed_stages(before, after) == created + updated
        again, output = _run("import_stages", str(path), "--dry-run")
        assert again and _totals(output) == [0, 0]

    _isolated(check)


# -- the admin pages --------------------------------------------------------------------------


def _shows_an_error(preview) -> None:
    result = preview.context.get("result")
    assert preview.context["form"].errors or (
        result is not None and (result.has_errors() or result.has_validation_errors())
    )


def _page(response) -> str:
    assert response.status_code != 500
    html = response.content.decode()
    assert "Traceback" not in html
    return html


@FUZZ
@given(file=files(MAPPING_CELLS, VALID_MAPPING_CELLS))
def test_the_mapping_import_page_refuses_or_applies_the_preview(lead_status, editor_client,
                                                                file):
    name, data = file
    url = f"/admin/mappings/fieldmapping/{lead_status.pk}/"

    def check():
        before = _snapshot()
        preview = editor_client.post(url + "import/",
                                     {"import_file": SimpleUploadedFile(name, data)})
        html = _page(preview)
        assert preview.status_code == 200
        assert _snapshot() == before
        outcome = preview.context.get("outcome")
        fields = dict(re.findall(HIDDEN, html))
        event("preview ok" if outcome is not None and outcome.ok else "refused")
        if outcome is None or not outcome.ok or not fields.get("token"):
            assert "Confirm import" not in html
            if outcome is None:
                assert preview.context["form"].errors
            elif not outcome.ok:
                assert escape(outcome.errors[0]) in html
            return
        done = editor_client.post(url + "import-confirm/", fields)
        _page(done)
        assert done.status_code == 302
        assert _changed_values(before, _snapshot()) == outcome.totals["changed"]

    _isolated(check)


def _import_through_the_page(client, admin_url: str, file) -> tuple:
    """Preview `file` on an import-export page (nothing may change), then confirm it when the
    page offers that. Returns the snapshot before, the preview and whether it was confirmed."""
    name, data = file
    before = _snapshot()
    preview = client.post(
        admin_url + "import/",
        {"import_file": SimpleUploadedFile(name, data),
         "format": "1" if name.endswith(".xlsx") else "0", "resource": "0"},
    )
    _page(preview)
    assert preview.status_code == 200
    assert _snapshot() == before
    confirm = preview.context.get("confirm_form")
    event("preview ok" if confirm is not None else "refused")
    if confirm is None:
        _shows_an_error(preview)
        return before, preview, False
    done = client.post(admin_url + "process_import/", {**confirm.initial})
    _page(done)
    assert done.status_code == 302
    return before, preview, True


@FUZZ
@given(file=files(STAGE_CELLS, VALID_STAGE_CELLS))
def test_the_stage_import_page_refuses_or_applies_the_preview(editor_client, file):
    def check():
        before, preview, confirmed = _import_through_the_page(
            editor_client, "/admin/mappings/stage/", file)
        if confirmed:
            totals = preview.context["result"].totals
            assert _changed_stages(before, _snapshot()) == totals["new"] + totals["update"]

    _isolated(check)


@FUZZ
@given(file=files(MAPPING_CELLS, VALID_MAPPING_CELLS))
def test_the_value_list_import_page_refuses_or_applies_the_preview(lead_status, editor_client,
                                                                   file):
    def check():
        before, preview, confirmed = _import_through_the_page(
            editor_client, "/admin/mappings/picklistvalue/", file)
        if confirmed:
            # Every row that is not skipped names a value and sets its stage and outbound flag.
            assert _changed_values(before, _snapshot()) <= len(preview.context["result"].rows)

    _isolated(check)
