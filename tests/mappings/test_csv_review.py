"""Review of the CSV/XLSX imports: a change made while a file is read, files without a header row
and errors that are not about one row, on the commands' services and the admin's import pages."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from mappings.models import PicklistValue, Stage
from mappings.services.mapping_import import CHANGED_SINCE_PREVIEW, picklist_values_import
from mappings.services.stage_transfer import STAGES_CHANGED_WHILE_READ, stages_import
from mappings.services.tabular import CHUNK_ROWS, LINE_TOO_LONG, MAX_LINE_CHARS, NOT_UTF8
from mappings.services.values import picklist_value_set_mapping
from tests.mappings.factories import PicklistValueFactory
from tests.mappings.factories import stage as stage_named

pytestmark = pytest.mark.django_db

HEADER = "connection,object,field,value,label,stage,outbound\n"
STAGE_HEADER = "key,name,order,category,active\n"


class _ChangedWhileRead(io.BytesIO):
    """A file that, once read past `offset`, lets someone else change the database (once)."""

    def __init__(self, data: bytes, *, offset: int, change):
        super().__init__(data)
        self.offset = offset
        self.change = change

    def read(self, size=-1):
        if self.change is not None and self.tell() >= self.offset:
            change, self.change = self.change, None
            change()
        return super().read(size)

    def read1(self, size=-1):
        return self.read(size)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@pytest.fixture
def values(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="SQL")
    PicklistValueFactory(field_mapping=lead_status, value="Lost", stage=stage_named("lost"))
    return lead_status


def _mapping():
    return {
        v.value: (v.stage.key if v.stage else "", v.outbound)
        for v in PicklistValue.objects.select_related("stage")
    }


def _stages():
    return {s.key: (s.name, s.order, s.category, s.active) for s in Stage.objects.all()}


def test_a_value_changed_after_its_chunk_was_read_is_not_overwritten_by_the_confirm(values):
    # SQL's row is in the first chunk; the file goes on for another chunk of rows that keep Lost.
    first = HEADER + "Acme,Lead,Status,SQL,SQL,lost,0\n"
    data = (first + "Acme,Lead,Status,Lost,Lost,lost,0\n" * (CHUNK_ROWS + 600)).encode()
    preview = picklist_values_import(
        source=io.BytesIO(data), name="m.csv", field_mapping=values, acting_user=None,
        dry_run=True,
    )
    assert preview.ok and preview.totals["changed"] == 1

    def someone_maps_sql():
        picklist_value_set_mapping(
            value=PicklistValue.objects.get(value="SQL"), stage=stage_named("contacted"),
            acting_user=None,
        )

    # Past the first chunk's rows and the text reader's read-ahead: the chunk's query has run.
    offset = len(first) + len("Acme,Lead,Status,Lost,Lost,lost,0\n") * CHUNK_ROWS + 8192
    source = _ChangedWhileRead(data, offset=offset, change=someone_maps_sql)
    outcome = picklist_values_import(
        source=source, name="m.csv", field_mapping=values, acting_user=None,
        expected_digest=preview.digest,
    )

    assert source.change is None  # the other person's save did happen while the file was read
    assert outcome.errors == [CHANGED_SINCE_PREVIEW] and not outcome.applied
    assert _mapping()["SQL"] == ("contacted", False)


def test_a_confirm_without_a_concurrent_change_still_applies(values):
    data = (HEADER + "Acme,Lead,Status,SQL,SQL,lost,0\n").encode()
    preview = picklist_values_import(
        source=io.BytesIO(data), name="m.csv", field_mapping=values, acting_user=None,
        dry_run=True,
    )
    outcome = picklist_values_import(
        source=io.BytesIO(data), name="m.csv", field_mapping=values, acting_user=None,
        expected_digest=preview.digest,
    )
    assert outcome.applied and _mapping()["SQL"] == ("lost", False)


def test_a_stage_created_by_someone_else_while_the_file_is_read_is_a_clear_error(db):
    data = (STAGE_HEADER + "nurture,Nurture,35,open,1\ncontacted,Reached,20,open,1\n").encode()
    before = {**_stages(), "nurture": ("Theirs", 36, "open", True)}

    def someone_adds_nurture():
        Stage.objects.create(key="nurture", name="Theirs", order=36)

    outcome = stages_import(
        source=_ChangedWhileRead(data, offset=0, change=someone_adds_nurture), name="s.csv",
        acting_user=None,
    )

    assert not outcome.applied
    assert len(outcome.errors) == 1
    assert outcome.errors[0].startswith(STAGES_CHANGED_WHILE_READ.split("{")[0])
    assert _stages() == before  # the other stage rows of the file were not saved either


# -- the import-export pages of the stage and value lists ---------------------------------------


@pytest.mark.parametrize("data", [b'\n""\n', b"\n\nkey,name\n", b"\r\nx\r\n"],
                         ids=["blank first line", "blank lines", "crlf"])
def test_a_stage_file_without_a_header_row_is_refused_by_the_import_page(editor_client, data):
    before = _stages()
    response = editor_client.post(
        "/admin/mappings/stage/import/",
        {"import_file": SimpleUploadedFile("s.csv", data), "format": "0", "resource": "0"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Traceback" not in html
    assert "not present in the file headers: key" in html
    assert not response.context.get("confirm_form")
    assert _stages() == before


def test_a_stage_file_without_the_key_column_shows_the_message_not_a_traceback(editor_client):
    before = _stages()
    response = editor_client.post(
        "/admin/mappings/stage/import/",
        {"import_file": SimpleUploadedFile("s.csv", b"name,order\nX,1\n"), "format": "0",
         "resource": "0"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "not present in the file headers: key" in html
    assert "Traceback" not in html and "import_export/resources.py" not in html
    assert _stages() == before


def test_a_value_file_without_its_key_columns_shows_the_message_not_a_traceback(editor_client,
                                                                                 values):
    before = _mapping()
    response = editor_client.post(
        "/admin/mappings/picklistvalue/import/",
        {"import_file": SimpleUploadedFile("v.csv", b"stage,outbound\nlost,0\n"),
         "format": "0", "resource": "0"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "not present in the file headers" in html
    assert "Traceback" not in html and "import_export/resources.py" not in html
    assert _mapping() == before


def test_the_value_list_import_reads_a_connection_name_with_spaces_as_the_mapping_page_does(
    editor_client, values
):
    data = (HEADER + " Acme ,Lead,Status,SQL,SQL,lost,0\n").encode()
    preview = editor_client.post(
        "/admin/mappings/picklistvalue/import/",
        {"import_file": SimpleUploadedFile("v.csv", data), "format": "0", "resource": "0"},
    )
    confirm = preview.context["confirm_form"]
    assert confirm is not None, [row.error_dict for row in preview.context["result"].invalid_rows]

    done = editor_client.post("/admin/mappings/picklistvalue/process_import/",
                              {**confirm.initial})

    assert done.status_code == 302
    assert _mapping()["SQL"] == ("lost", False)


def test_the_value_list_import_needs_the_change_permission_as_the_mapping_page_does(client,
                                                                                    values):
    user = get_user_model().objects.create_user("importer", "i@example.com", "pw-123456",
                                                is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="mappings",
        codename__in=("view_picklistvalue", "import_picklistvalue"),
    ))
    client.force_login(user)
    data = (HEADER + "Acme,Lead,Status,SQL,SQL,lost,0\n").encode()

    assert client.get("/admin/mappings/picklistvalue/import/").status_code == 403
    response = client.post(
        "/admin/mappings/picklistvalue/import/",
        {"import_file": SimpleUploadedFile("v.csv", data), "format": "0", "resource": "0"},
    )
    assert response.status_code == 403
    assert client.post("/admin/mappings/picklistvalue/process_import/", {}).status_code == 403
    assert _mapping()["SQL"] == ("", False)


def test_an_editor_still_imports_on_the_value_list(editor_client, values):
    assert editor_client.get("/admin/mappings/picklistvalue/import/").status_code == 200


def test_a_stage_file_with_an_endless_line_is_not_called_a_mappings_file(db):
    before = _stages()
    data = (STAGE_HEADER + "x" * (MAX_LINE_CHARS + 10) + "\n").encode()
    outcome = stages_import(source=io.BytesIO(data), name="s.csv", acting_user=None)
    assert outcome.errors == [LINE_TOO_LONG.format(file="s.csv", line=2, limit=MAX_LINE_CHARS)]
    assert "mappings" not in outcome.errors[0]
    assert _stages() == before


def test_the_stage_command_says_why_a_file_is_unreadable_not_to_fix_its_rows(db, tmp_path):
    path = tmp_path / "stages.csv"
    path.write_bytes(STAGE_HEADER.encode("utf-16"))
    with pytest.raises(CommandError) as raised:
        call_command("import_stages", str(path), stdout=io.StringIO())
    assert str(raised.value) == NOT_UTF8.format(file=str(path))
    assert raised.value.returncode == 1
