"""The admin as ops staff use it, in Chromium, against the live server and the emulated org."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.contrib.sessions.models import Session
from django_q.models import OrmQ
from playwright.sync_api import expect

from mappings.models import PicklistValue, Stage
from mappings.services.values import OUTBOUND_DUPLICATE
from sync.admin import SyncedRecordAdmin
from sync.admin_connections import SYNC_QUEUED
from sync.admin_outbound import MOVED
from sync.health import PROBLEM_NEVER_SYNCED, PROBLEM_UNMAPPED
from sync.models import SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from tests.sync.factories import lead_status_mapping

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "pw-123456"  # tests/conftest.py gives every role user this one


def log_in_with_the_form(page, user) -> None:
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def open_mapping(page, mapping) -> None:
    page.goto(f"/admin/mappings/fieldmapping/{mapping.pk}/change/")
    expect(page.get_by_role("heading", name="Salesforce values and their stages")).to_be_visible()


def value_row(page, value: str):
    return page.locator(f'tr.value-row[data-value="{value}"]')


def stages_of(mapping) -> dict[str, tuple[str | None, bool]]:
    return {
        value.value: (value.stage.key if value.stage else None, value.outbound)
        for value in PicklistValue.objects.filter(field_mapping=mapping).select_related("stage")
    }


def synced(connection) -> None:
    [run] = sync_run_inbound(connection=connection, object_name="Lead", full=True)
    assert run.status == SyncRun.Status.OK, run.error


def open_leads(emulator, status: str) -> list[dict]:
    return [lead for lead in emulator.org.records("Lead")
            if lead["Status"] == status and not lead["IsConverted"]]


def test_log_in_with_the_form(page, editor_user):
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.get_by_label("Username").fill(editor_user.username)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Please enter the correct username and password")).to_be_visible()
    assert not Session.objects.exists()

    log_in_with_the_form(page, editor_user)

    expect(page.get_by_role("heading", name="Salesforce stages and mappings")).to_be_visible()
    expect(page.get_by_role("link", name="Field mappings").first).to_be_visible()
    [session] = Session.objects.all()
    assert session.get_decoded()["_auth_user_id"] == str(editor_user.pk)


def test_map_an_unmapped_value_in_the_table_and_save(page, sign_in, editor_user, org_connection):
    mapping = lead_status_mapping(org_connection, unmapped=("Nurturing",))
    synced(org_connection)
    holding = SyncedRecord.objects.filter(raw_value="Nurturing", is_converted=False)
    assert holding.exists() and not holding.filter(stage__isnull=False).exists()
    sign_in(editor_user)
    open_mapping(page, mapping)

    page.get_by_role("link", name="Unmapped (1)").click()
    expect(page.locator("tr.value-row")).to_have_count(1)
    page.get_by_label("Stage of Nurturing").select_option(label="Contacted")
    page.get_by_role("button", name="Save and continue editing").click()

    expect(page.get_by_text("1 value(s) mapped anew.")).to_be_visible()
    expect(page.get_by_role("link", name="Unmapped (0)")).to_be_visible()
    nurturing = PicklistValue.objects.get(field_mapping=mapping, value="Nurturing")
    assert nurturing.stage.key == "contacted"
    assert nurturing.history.first().history_user == editor_user
    # The records already read get the stage without another sync.
    assert set(holding.values_list("stage__key", flat=True)) == {"contacted"}


def test_two_outbound_values_on_one_stage_are_refused_next_to_the_row(
    page, sign_in, editor_user, org_connection
):
    mapping = lead_status_mapping(org_connection)
    before = stages_of(mapping)
    assert before["Working - Contacted"] == ("contacted", True)
    assert before["Nurturing"] == ("contacted", False)
    sign_in(editor_user)
    open_mapping(page, mapping)

    page.get_by_label("Outbound value for its stage: Nurturing").check()
    page.get_by_role("button", name="Save and continue editing").click()

    message = OUTBOUND_DUPLICATE.format(other="Working - Contacted", stage="Contacted")
    expect(value_row(page, "Nurturing").locator("ul.errorlist")).to_contain_text(message)
    expect(page.get_by_text("Some values break a mapping rule")).to_be_visible()
    expect(page.get_by_label("Outbound value for its stage: Nurturing")).to_be_checked()
    assert stages_of(mapping) == before


def test_auto_map_previews_then_maps(page, sign_in, editor_user, org_connection):
    mapping = lead_status_mapping(org_connection, unmapped=("Working - Contacted", "Nurturing"))
    before = stages_of(mapping)
    sign_in(editor_user)
    open_mapping(page, mapping)

    page.get_by_role("link", name="Auto-map").click()
    preview = page.get_by_role("row").filter(has_text="Working - Contacted")
    expect(preview.first).to_contain_text("standard Salesforce status")
    expect(page.get_by_role("row").filter(has_text="Nurturing")).to_contain_text("no stage matches")
    assert stages_of(mapping) == before
    page.get_by_role("button", name="Apply auto-map").click()

    done = re.compile(r"Auto-map: 1 value\(s\) mapped, 1 outbound")
    expect(page.get_by_text(done)).to_be_visible()
    expect(page.get_by_role("link", name="Unmapped (1)")).to_be_visible()
    after = stages_of(mapping)
    assert after["Working - Contacted"] == ("contacted", True)
    assert after["Nurturing"] == (None, False)
    assert {k: v for k, v in after.items() if k != "Working - Contacted"} == {
        k: v for k, v in before.items() if k != "Working - Contacted"
    }


def test_csv_export_then_import_with_preview_and_confirm(
    page, sign_in, editor_user, org_connection
):
    mapping = lead_status_mapping(org_connection)
    sign_in(editor_user)
    page.goto("/admin/mappings/picklistvalue/export/")
    page.get_by_label("Format").select_option(label="csv")
    with page.expect_download() as download:
        page.get_by_role("button", name="Submit").click()
    text = download.value.path().read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    exported = {row["value"]: (row["stage"], row["outbound"] == "1") for row in rows}
    assert exported == stages_of(mapping)

    for row in rows:
        if row["value"] == "Nurturing":
            row["stage"] = "lost"
    changed = io.StringIO()
    writer = csv.DictWriter(changed, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    page.goto("/admin/mappings/picklistvalue/import/")
    page.get_by_label("File to import").set_input_files(
        files=[{"name": "mappings.csv", "mimeType": "text/csv",
                "buffer": changed.getvalue().encode("utf-8")}]
    )
    page.get_by_label("Format").select_option(label="csv")
    page.get_by_role("button", name="Submit").click()

    preview = page.get_by_role("row").filter(has_text="Nurturing")
    expect(preview).to_contain_text("Update")
    expect(preview).to_contain_text("lost")
    assert stages_of(mapping)["Nurturing"] == ("contacted", False)
    page.get_by_role("button", name="Confirm import").click()

    expect(page.get_by_text(re.compile(r"Import finished: 0 new, 1 updated"))).to_be_visible()
    assert stages_of(mapping)["Nurturing"] == ("lost", False)
    nurturing = PicklistValue.objects.get(field_mapping=mapping, value="Nurturing")
    assert nurturing.history.first().history_user == editor_user


def test_sync_now_runs_a_delta_sync_that_shows_under_sync_runs(
    page, sign_in, stagemap_admin_user, emulator, org_connection, tasks_run_inline
):
    lead_status_mapping(org_connection)
    synced(org_connection)
    [lead] = open_leads(emulator, "Open - Not Contacted")[:1]
    emulator.org.update_record("Lead", lead["Id"], {"Status": "MQL"})
    sign_in(stagemap_admin_user)
    page.goto(f"/admin/connections/connection/{org_connection.pk}/change/")

    page.get_by_role("button", name="Sync now").click()

    queued = SYNC_QUEUED.format(kind="Delta sync", names=org_connection.name)
    expect(page.get_by_text(queued)).to_be_visible()
    [run] = SyncRun.objects.filter(connection=org_connection, kind=SyncRun.Kind.DELTA)
    assert (run.status, run.trigger, run.object_name) == (
        SyncRun.Status.OK, SyncRun.Trigger.ADMIN, "Lead"
    ), run.error
    assert (run.fetched, run.updated) == (1, 1)
    record = SyncedRecord.objects.get(connection=org_connection, sf_id=lead["Id"])
    assert (record.raw_value, record.stage.key) == ("MQL", "in_progress")
    page.get_by_role("link", name="Sync runs").first.click()
    listed = page.get_by_role("row").filter(has_text=f"Delta sync #{run.pk}")
    expect(listed).to_contain_text("OK")
    expect(listed).to_contain_text("1 read, 1 updated")


def test_health_page_lists_each_connection_and_its_problems(
    page, sign_in, stagemap_admin_user, emulator, org_connection
):
    lead_status_mapping(org_connection, unmapped=("Nurturing",))
    synced(org_connection)
    sign_in(stagemap_admin_user)
    page.goto("/admin/connections/connection/")

    page.locator(".object-tools").get_by_role("link", name="Health").click()

    expect(page.get_by_role("heading", name="Health")).to_be_visible()
    expect(page.get_by_text("1 problem needs attention.")).to_be_visible()
    row = page.locator("#health tr.unhealthy").filter(has_text=org_connection.name)
    expect(row).to_contain_text(PROBLEM_UNMAPPED.format(count=1))
    expect(row).not_to_contain_text(PROBLEM_NEVER_SYNCED)
    cells = row.get_by_role("cell")
    expect(cells.nth(3)).to_have_text(str(len(emulator.org.records("Lead"))))
    expect(cells.nth(4)).to_have_text(str(len(open_leads(emulator, "Nurturing"))))
    expect(cells.nth(5)).to_have_text("1")


def test_move_to_stage_on_selected_records_and_the_push_that_follows(
    page, sign_in, editor_user, emulator, org_connection, tasks_run_inline
):
    lead_status_mapping(org_connection)
    synced(org_connection)
    holding = open_leads(emulator, "Open - Not Contacted")
    # The filtered list below shows them all on its first page.
    assert 2 <= len(holding) <= SyncedRecordAdmin.list_per_page
    picked = sorted(lead["Id"] for lead in holding)[:2]
    sign_in(editor_user)
    page.goto("/admin/sync/syncedrecord/?raw_value=Open+-+Not+Contacted&is_converted__exact=0")

    for sf_id in picked:
        page.get_by_label(f"Select this object for an action - Lead {sf_id}").check()
    page.locator("select[name=action]").select_option(label="Move to stage…")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_role("heading", name="Move records to a stage")).to_be_visible()
    page.get_by_label("Stage").select_option(label="Contacted")
    page.get_by_role("button", name="Move and push").click()

    expect(page.get_by_text(MOVED.format(count=2, stage="Contacted"))).to_be_visible()
    records = SyncedRecord.objects.filter(connection=org_connection, sf_id__in=picked)
    assert {(r.stage.key, r.outbound_state) for r in records} == {
        ("contacted", SyncedRecord.OutboundState.CLEAN)
    }
    in_org = {lead["Id"]: lead["Status"] for lead in emulator.org.records("Lead")}
    assert [in_org[sf_id] for sf_id in picked] == ["Working - Contacted"] * 2
    [push] = SyncRun.objects.filter(connection=org_connection, kind=SyncRun.Kind.PUSH)
    assert (push.status, push.pushed) == (SyncRun.Status.OK, 2), push.error
    page.goto("/admin/sync/syncrun/")
    expect(page.get_by_role("row").filter(has_text=f"Push #{push.pk}")).to_contain_text(
        "2 pushed"
    )


def test_a_viewer_sees_no_action_buttons_and_is_refused_when_posting_anyway(
    page, sign_in, viewer_user, org_connection
):
    mapping = lead_status_mapping(org_connection, unmapped=("Nurturing",))
    before = stages_of(mapping)
    nurturing = PicklistValue.objects.get(field_mapping=mapping, value="Nurturing")
    lost = Stage.objects.get(key="lost")
    sign_in(viewer_user)

    open_mapping(page, mapping)
    expect(page.get_by_label("Stage of Nurturing")).to_be_disabled()
    for name in ("Auto-map", "Refresh values now", "Save", "Save and continue editing"):
        expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    page.goto(f"/admin/connections/connection/{org_connection.pk}/change/")
    expect(page.get_by_role("heading", name="Funnel")).to_be_visible()
    for name in ("Sync now", "Full resync", "Push now", "Refresh values now", "Test connection"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    page.goto("/admin/sync/syncedrecord/")
    expect(page.get_by_role("option", name="Move to stage…")).to_have_count(0)

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    connection_url = f"/admin/connections/connection/{org_connection.pk}"
    mapping_url = f"/admin/mappings/fieldmapping/{mapping.pk}"
    posts = {
        f"{connection_url}/sync/": {},
        f"{connection_url}/push/": {},
        f"{connection_url}/refresh/": {},
        f"{mapping_url}/automap/": {},
        f"{mapping_url}/refresh/": {},
        f"{mapping_url}/change/": {f"v-{nurturing.pk}-stage": str(lost.pk)},
    }
    for url, form in posts.items():
        response = page.request.post(
            url, form={"csrfmiddlewaretoken": token, **form}, headers={"X-CSRFToken": token}
        )
        assert response.status == 403, url
        assert "CSRF" not in response.text(), url
    assert stages_of(mapping) == before
    assert not SyncRun.objects.exists() and not OrmQ.objects.exists()
