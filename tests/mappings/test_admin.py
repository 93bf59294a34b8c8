"""The mapping page, the field mapping list, their buttons and CSV import in the admin."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mappings.models import FieldMapping, PicklistRefresh, PicklistValue
from mappings.services.values import (
    ONE_TO_ONE_TAKEN,
    OUTBOUND_DUPLICATE,
    OUTBOUND_INACTIVE,
    OUTBOUND_UNMAPPED,
)
from tests.mappings.factories import (
    ConnectionFactory,
    FieldMappingFactory,
    PicklistValueFactory,
    stage,
)

pytestmark = pytest.mark.django_db


def _page(field_mapping):
    return f"/admin/mappings/fieldmapping/{field_mapping.pk}/change/"


def _values(field_mapping, count):
    from sync.models import SyncedRecord  # tests may use sync to attach records

    stages = [None, stage("new"), stage("lost")]
    values = PicklistValue.objects.bulk_create(
        PicklistValue(
            field_mapping=field_mapping,
            value=f"V{i:04}",
            label=f"Value {i}",
            sort_order=i,
            stage=stages[i % 3],
        )
        for i in range(count)
    )
    SyncedRecord.objects.bulk_create(
        SyncedRecord(
            connection=field_mapping.connection,
            object_name="Lead",
            sf_id=f"00Q{field_mapping.pk:05}{i:010}",
            picklist_value=values[i],
        )
        for i in range(0, count, 2)
    )
    return values


def _queries(client, url):
    with CaptureQueriesContext(db_connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries), response


def test_mapping_page_renders_in_a_constant_number_of_queries(admin_client, connection):
    small = FieldMappingFactory(connection=connection, field_name="Small__c", direction="outbound")
    large = FieldMappingFactory(connection=connection, field_name="Large__c", direction="outbound")
    _values(small, 5)
    _values(large, 500)

    admin_client.get(_page(small))  # warm the content type cache
    small_count, _ = _queries(admin_client, _page(small))
    large_count, response = _queries(admin_client, _page(large))

    assert large_count == small_count
    # One page of the table, unmapped values first.
    rows = re.findall(r'data-value="(V\d+)"', response.content.decode())
    assert len(rows) == 100
    assert rows[:3] == ["V0000", "V0003", "V0006"]
    assert "page 1 of 5" in response.content.decode()


def test_mapping_page_shows_rows_in_order_with_counts_and_highlights(admin_client, lead_status):
    from sync.models import SyncedRecord

    PicklistValueFactory(field_mapping=lead_status, value="Zeta", sort_order=1)
    alpha = PicklistValueFactory(
        field_mapping=lead_status, value="Alpha", sort_order=2, stage=stage("new"), converted=True
    )
    PicklistValueFactory(
        field_mapping=lead_status, value="Gone", sort_order=0, removed_at=timezone.now()
    )
    for i in range(3):
        SyncedRecord.objects.create(
            connection=lead_status.connection,
            object_name="Lead",
            sf_id=f"00Q00000000000{i}AAA",
            picklist_value=alpha,
        )

    content = admin_client.get(_page(lead_status)).content.decode()

    assert content.index("Zeta") < content.index("Alpha") < content.index("Gone")
    assert "value-unmapped" in content and "value-removed" in content
    assert re.search(r'field-records_count">3</td>', content)
    assert "Refresh values now" in content and "Auto-map" in content


def _post_data(field_mapping, rows, *, every_row=False, **fields):
    """The change form as the page posts it: only the rows in `rows` (value: (stage key,
    outbound)), as the page's script sends them, or with `every_row` the whole first page."""
    data = {
        "direction": field_mapping.direction,
        "conflict_policy": field_mapping.conflict_policy,
        "active": "on",
        **fields,
    }
    values = PicklistValue.objects.filter(field_mapping=field_mapping).select_related("stage")
    for value in values:
        if value.value not in rows and not every_row:
            continue
        stage_key, outbound = rows.get(
            value.value, (value.stage.key if value.stage else "", value.outbound)
        )
        data[f"v-{value.pk}-was"] = f"{value.stage_id or ''}|{int(value.outbound)}"
        data[f"v-{value.pk}-stage"] = str(stage(stage_key).pk) if stage_key else ""
        if outbound:
            data[f"v-{value.pk}-outbound"] = "on"
    return data


def _row_errors(response, value: str) -> list[str]:
    table = response.context["adminform"].form.value_table
    [row] = [row for row in table.rows if row.value.value == value]
    return row.errors


def test_saving_the_table_maps_values_with_history(admin_client, lead_status, admin_user):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", sort_order=1)
    PicklistValueFactory(field_mapping=lead_status, value="SQL", sort_order=2)

    response = admin_client.post(
        _page(lead_status), _post_data(lead_status, {"MQL": ("new", True), "SQL": ("new", False)})
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    mql = PicklistValue.objects.get(value="MQL")
    assert (mql.stage.key, mql.outbound) == ("new", True)
    assert mql.history.first().history_user == admin_user


@pytest.mark.parametrize(
    "setup, rows, field, message",
    [
        ({}, {"MQL": ("", True)}, "outbound", OUTBOUND_UNMAPPED),
        (
            {"SQL": ("new", True)},
            {"MQL": ("new", True)},
            "outbound",
            OUTBOUND_DUPLICATE.format(other="SQL", stage="New"),
        ),
        (
            {"MQL": dict(active=False)},
            {"MQL": ("lost", True)},
            "outbound",
            OUTBOUND_INACTIVE.format(value="MQL"),
        ),
    ],
)
def test_rule_errors_show_next_to_their_row(admin_client, lead_status, setup, rows, field, message):
    for order, value in enumerate(["MQL", "SQL"]):
        extra = setup.get(value, {})
        if isinstance(extra, tuple):
            extra = {"stage": stage(extra[0]), "outbound": extra[1]}
        PicklistValueFactory(field_mapping=lead_status, value=value, sort_order=order, **extra)

    response = admin_client.post(_page(lead_status), _post_data(lead_status, rows))

    assert response.status_code == 200
    table = response.context["adminform"].form.value_table
    [mql] = [row for row in table.rows if row.value.value == "MQL"]
    assert getattr(mql, f"{field}_errors") == [message]
    assert message in response.content.decode()
    assert not PicklistValue.objects.filter(value="MQL", outbound=True).exists()


def test_one_to_one_errors_show_next_to_the_row(admin_client, lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", sort_order=1, stage=stage("new"))
    PicklistValueFactory(field_mapping=lead_status, value="SQL", sort_order=2)

    response = admin_client.post(
        _page(lead_status), _post_data(lead_status, {"SQL": ("new", False)}, one_to_one="on")
    )

    assert _row_errors(response, "SQL") == [ONE_TO_ONE_TAKEN.format(stage="New", other="MQL")]
    lead_status.refresh_from_db()
    assert not lead_status.one_to_one


def test_saving_500_rows_costs_a_constant_number_of_queries(admin_client, connection):
    counts = []
    admin_client.get("/admin/mappings/fieldmapping/")  # warm the content type cache
    for name, size in (("Small__c", 5), ("Large__c", 500)):
        field_mapping = FieldMappingFactory(
            connection=connection, field_name=name, direction="outbound"
        )
        _values(field_mapping, size)
        data = _post_data(field_mapping, {"V0000": ("contacted", False)})
        with CaptureQueriesContext(db_connection) as ctx:
            response = admin_client.post(_page(field_mapping), data)
        assert response.status_code == 302
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_field_mapping_list_counts_in_constant_queries(admin_client):
    def make(n):
        for i in range(n):
            field_mapping = FieldMappingFactory(connection=ConnectionFactory(name=f"Org {n}-{i}"))
            _values(field_mapping, 6)

    make(1)
    admin_client.get("/admin/mappings/fieldmapping/")  # warm the content type cache
    small, _ = _queries(admin_client, "/admin/mappings/fieldmapping/")
    make(20)
    large, response = _queries(admin_client, "/admin/mappings/fieldmapping/")
    assert small == large
    # 6 values: 2 unmapped (V0000, V0003), records on V0000, V0002, V0004 → 1 unmapped record.
    row = response.context["cl"].result_list[0]
    assert (row.n_unmapped, row.n_values, row.n_unmapped_records) == (2, 6, 1)
    assert b"2 / 6" in response.content


def test_refresh_button(admin_client, lead_status, fake_sf):
    url = f"/admin/mappings/fieldmapping/{lead_status.pk}/refresh/"
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    assert response.status_code == 302
    assert lead_status.values.count() == 6
    assert PicklistRefresh.objects.get().acting_user.username == "admin"


def test_refresh_button_needs_change_permission(viewer_client, lead_status, fake_sf):
    response = viewer_client.post(f"/admin/mappings/fieldmapping/{lead_status.pk}/refresh/")
    assert response.status_code == 403
    assert not lead_status.values.exists()


def test_automap_button_previews_then_applies(admin_client, lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="Working - Contacted")
    url = f"/admin/mappings/fieldmapping/{lead_status.pk}/automap/"

    preview = admin_client.get(url)
    assert preview.status_code == 200
    assert b"Working - Contacted" in preview.content
    assert not PicklistValue.objects.filter(stage__isnull=False).exists()

    assert admin_client.post(url).status_code == 302
    assert PicklistValue.objects.get().stage == stage("contacted")


def test_add_form_checks_the_field_with_describe(admin_client, connection, fake_sf):
    url = "/admin/mappings/fieldmapping/add/"
    page = admin_client.get(url, {"connection": connection.pk, "object_name": "Lead"})
    assert b"Lifecycle Stage (Lifecycle_Stage__c)" in page.content
    response = admin_client.post(
        url,
        {
            "connection": connection.pk,
            "object_name": "Lead",
            "field_name": "Lifecycle_Stage__c",
            "direction": "outbound",
            "conflict_policy": "salesforce_wins",
            "active": "on",
            "values-TOTAL_FORMS": "0",
            "values-INITIAL_FORMS": "0",
            "values-MIN_NUM_FORMS": "0",
            "values-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302
    added = FieldMapping.objects.get(field_name="Lifecycle_Stage__c")
    assert added.field_label == "Lifecycle Stage"


def test_csv_import_needs_the_import_permission(client, editor_user, lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL")
    editor_user.user_permissions.clear()
    editor_user.groups.clear()
    editor_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_picklistvalue", "change_picklistvalue"])
    )
    client.force_login(editor_user)
    assert client.get("/admin/mappings/picklistvalue/import/").status_code == 403

    editor_user.user_permissions.add(Permission.objects.get(codename="import_picklistvalue"))
    assert client.get("/admin/mappings/picklistvalue/import/").status_code == 200


def test_csv_import_with_preview_in_the_admin(admin_client, lead_status, admin_user):
    PicklistValueFactory(field_mapping=lead_status, value="MQL")
    upload = SimpleUploadedFile(
        "m.csv",
        b"connection,object,field,value,label,stage,outbound\nAcme,Lead,Status,MQL,MQL,new,1\n",
    )
    preview = admin_client.post(
        "/admin/mappings/picklistvalue/import/",
        {"import_file": upload, "format": "0", "resource": "0"},
    )
    assert preview.status_code == 200
    assert not PicklistValue.objects.filter(stage__isnull=False).exists()
    confirm = preview.context["confirm_form"]
    assert confirm is not None
    done = admin_client.post("/admin/mappings/picklistvalue/process_import/", {**confirm.initial})
    assert done.status_code == 302
    mql = PicklistValue.objects.get(value="MQL")
    assert (mql.stage.key, mql.outbound) == ("new", True)
    assert mql.history.first().history_user == admin_user


def test_csv_import_preview_shows_a_bad_row(admin_client, lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL")
    upload = SimpleUploadedFile(
        "m.csv",
        b"connection,object,field,value,label,stage,outbound\nAcme,Lead,Status,MQL,MQL,nope,1\n",
    )
    preview = admin_client.post(
        "/admin/mappings/picklistvalue/import/",
        {"import_file": upload, "format": "0", "resource": "0"},
    )
    assert preview.status_code == 200
    assert "confirm_form" not in preview.context or preview.context["confirm_form"] is None
    assert "Unknown stage key" in preview.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/mappings/fieldmapping/",
        "/admin/mappings/fieldmapping/?q=Status",
        "/admin/mappings/picklistvalue/",
        "/admin/mappings/picklistvalue/?q=MQL",
        "/admin/mappings/picklistvalue/export/",
        "/admin/mappings/picklistrefresh/",
        "/admin/mappings/fieldmapping/add/",
    ],
)
def test_admin_pages_load(admin_client, lead_status, url):
    PicklistValueFactory(field_mapping=lead_status, value="MQL")
    assert admin_client.get(url).status_code == 200


def test_picklist_value_change_page_edits_only_the_mapping(admin_client, lead_status):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    url = f"/admin/mappings/picklistvalue/{mql.pk}/change/"
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"stage": "", "outbound": "on"})
    assert response.status_code == 200
    assert OUTBOUND_UNMAPPED in response.content.decode()
    response = admin_client.post(url, {"stage": stage("new").pk, "value": "Hacked"})
    assert response.status_code == 302
    mql.refresh_from_db()
    assert (mql.value, mql.stage.key) == ("MQL", "new")


def test_switching_on_one_to_one_over_a_crowded_stage_blames_the_rows(admin_client, lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", sort_order=1, stage=stage("new"))
    PicklistValueFactory(field_mapping=lead_status, value="SQL", sort_order=2, stage=stage("new"))

    refused = admin_client.post(_page(lead_status), _post_data(lead_status, {}, one_to_one="on"))

    # No row was posted: the rule names the value it blames above the table.
    assert ONE_TO_ONE_TAKEN.format(stage="New", other="MQL") in refused.content.decode()
    assert refused.status_code == 200
    lead_status.refresh_from_db()
    assert not lead_status.one_to_one

    fixed = admin_client.post(
        _page(lead_status),
        _post_data(lead_status, {"SQL": ("contacted", False)}, one_to_one="on"),
    )
    assert fixed.status_code == 302
    lead_status.refresh_from_db()
    assert lead_status.one_to_one
