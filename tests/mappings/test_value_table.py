"""The mapping page's value table at size: pages, filters and search, each value shown once, a
save that takes only the rows that changed, and rows someone else changed meanwhile refused."""

import re

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape

from mappings.forms import CHANGED_MEANWHILE, ERR_VALUE_RULES, UNKNOWN_ROW, UNKNOWN_STAGE
from mappings.models import PicklistValue
from mappings.selectors import VALUES_PER_PAGE
from tests.mappings.factories import FieldMappingFactory, PicklistValueFactory, stage

pytestmark = pytest.mark.django_db


def _page(field_mapping, query=""):
    return f"/admin/mappings/fieldmapping/{field_mapping.pk}/change/{query}"


def _values(field_mapping, count, *, mapped_every=2):
    """`count` values; every `mapped_every`-th one (from the first) is unmapped."""
    return PicklistValue.objects.bulk_create(
        PicklistValue(
            field_mapping=field_mapping, value=f"V{i:05}", label=f"Label {i}", sort_order=i,
            stage=None if i % mapped_every == 0 else stage("new"),
        )
        for i in range(count)
    )


def _shown(response) -> list[str]:
    return re.findall(r'data-value="([^"]+)"', response.content.decode())


def _options(field_mapping):
    return {"direction": field_mapping.direction,
            "conflict_policy": field_mapping.conflict_policy, "active": "on"}


def _row(value, stage_key, outbound=False, *, was=None):
    value.refresh_from_db()
    data = {
        f"v-{value.pk}-was": was if was is not None
        else f"{value.stage_id or ''}|{int(value.outbound)}",
        f"v-{value.pk}-stage": str(stage(stage_key).pk) if stage_key else "",
    }
    if outbound:
        data[f"v-{value.pk}-outbound"] = "on"
    return data


def test_the_table_pages_unmapped_values_first(admin_client, lead_status):
    _values(lead_status, 250)
    first = admin_client.get(_page(lead_status))
    shown = _shown(first)
    assert len(shown) == VALUES_PER_PAGE
    # 125 unmapped values (the even ones) come first, in Salesforce's order.
    assert shown[:3] == ["V00000", "V00002", "V00004"]
    assert "page 1 of 3" in first.content.decode()

    second = admin_client.get(_page(lead_status, "?page=2"))
    assert _shown(second)[:26] == [f"V{i:05}" for i in range(200, 250, 2)] + ["V00001"]
    last = admin_client.get(_page(lead_status, "?page=99"))
    assert "page 3 of 3" in last.content.decode() and len(_shown(last)) == 50
    assert _shown(admin_client.get(_page(lead_status, "?page=abc"))) == shown


def test_filters_and_search_by_value_or_label(admin_client, lead_status):
    _values(lead_status, 30, mapped_every=3)
    PicklistValueFactory(field_mapping=lead_status, value="Qualifié", label="Qualified lead",
                         stage=stage("in_progress"), sort_order=99)

    unmapped = admin_client.get(_page(lead_status, "?values=unmapped"))
    assert _shown(unmapped) == [f"V{i:05}" for i in range(0, 30, 3)]
    assert "Unmapped (10)" in unmapped.content.decode()
    assert "Mapped (21)" in unmapped.content.decode()
    # "Label 2" and "Label 20" to "Label 29": the unmapped ones (every third) first.
    assert _shown(admin_client.get(_page(lead_status, "?q=label 2"))) == [
        "V00021", "V00024", "V00027",
        "V00002", "V00020", "V00022", "V00023", "V00025", "V00026", "V00028", "V00029",
    ]
    assert _shown(admin_client.get(_page(lead_status, "?q=QUALIFIED"))) == ["Qualifié"]
    assert _shown(admin_client.get(_page(lead_status, "?q=qualifié&values=unmapped"))) == []
    assert "No value matches." in admin_client.get(_page(lead_status, "?q=zzz")).content.decode()


def test_each_row_shows_the_value_once_and_the_label_where_it_differs(admin_client, lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="Working", label="Working")
    PicklistValueFactory(field_mapping=lead_status, value="MQL", label="Marketing qualified")
    content = admin_client.get(_page(lead_status)).content.decode()
    rows = dict(re.findall(r'data-value="([^"]+)">(.*?)</tr>', content, flags=re.S))
    assert rows["Working"].count(">Working<") == 1
    assert "Marketing qualified" in rows["MQL"] and rows["MQL"].count(">MQL<") == 1


def test_a_save_takes_only_the_changed_rows_of_a_big_field(admin_client, lead_status, admin_user):
    values = _values(lead_status, 3000)
    target = values[2998]  # on the last page, never shown on the first
    before = PicklistValue.history.count()

    response = admin_client.post(
        _page(lead_status), {**_options(lead_status), **_row(target, "lost")}
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    target.refresh_from_db()
    assert target.stage == stage("lost")
    assert PicklistValue.history.count() == before + 1
    assert PicklistValue.objects.filter(stage__isnull=True).count() == 1499


def test_a_full_page_posted_without_the_script_saves_only_what_changed(admin_client, lead_status):
    values = _values(lead_status, 120)
    page_rows = {}
    for value in values[:VALUES_PER_PAGE]:
        page_rows.update(_row(value, value.stage.key if value.stage else ""))
    page_rows.update(_row(values[0], "contacted"))
    before = PicklistValue.history.count()

    response = admin_client.post(_page(lead_status), {**_options(lead_status), **page_rows})

    assert response.status_code == 302
    assert PicklistValue.history.count() == before + 1
    values[0].refresh_from_db()
    assert values[0].stage == stage("contacted")


def test_saving_costs_the_same_queries_for_a_small_and_a_big_field(admin_client, connection):
    counts = []
    admin_client.get("/admin/mappings/fieldmapping/")  # warm the content type cache
    for name, size in (("Small__c", 10), ("Big__c", 2000)):
        field_mapping = FieldMappingFactory(connection=connection, field_name=name,
                                            direction="outbound")
        values = _values(field_mapping, size)
        data = {**_options(field_mapping), **_row(values[1], "lost"), **_row(values[3], "lost")}
        with CaptureQueriesContext(db_connection) as queries:
            response = admin_client.post(_page(field_mapping), data)
        assert response.status_code == 302
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_row_changed_meanwhile_is_refused_and_nothing_is_saved(admin_client, lead_status):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    sql = PicklistValueFactory(field_mapping=lead_status, value="SQL")
    shown_mql = _row(mql, "new")  # the page showed MQL unmapped ...
    PicklistValue.objects.filter(pk=mql.pk).update(stage=stage("lost"))  # ... someone mapped it

    response = admin_client.post(
        _page(lead_status), {**_options(lead_status), **shown_mql, **_row(sql, "contacted")}
    )

    assert response.status_code == 200
    table = response.context["adminform"].form.value_table
    [row] = [row for row in table.rows if row.value.value == "MQL"]
    assert row.stage_errors == [CHANGED_MEANWHILE.format(now="Lost")]
    assert ERR_VALUE_RULES in response.content.decode()
    mql.refresh_from_db()
    sql.refresh_from_db()
    assert mql.stage == stage("lost") and sql.stage is None


@pytest.mark.parametrize("problem", ["another_field", "unknown_stage"])
def test_a_forged_row_is_refused_whole(admin_client, lead_status, connection, problem):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    other = FieldMappingFactory(connection=connection, field_name="Other__c", direction="outbound")
    foreign = PicklistValueFactory(field_mapping=other, value="Foreign")
    data = {**_options(lead_status), **_row(mql, "new")}
    if problem == "another_field":
        data.update(_row(foreign, "lost"))
        expected = UNKNOWN_ROW
    else:
        data[f"v-{mql.pk}-stage"] = "999999"
        expected = UNKNOWN_STAGE

    response = admin_client.post(_page(lead_status), data)

    assert response.status_code == 200
    assert escape(expected) in response.content.decode()
    assert not PicklistValue.objects.filter(stage__isnull=False).exists()


def test_save_and_continue_returns_to_the_same_page_of_values(admin_client, lead_status):
    values = _values(lead_status, 150)
    response = admin_client.post(
        _page(lead_status, "?values=unmapped&page=1&q=V0"),
        {**_options(lead_status), **_row(values[0], "new"), "_continue": "1"},
    )
    assert response.status_code == 302
    assert response["Location"].endswith("?values=unmapped&page=1&q=V0")


def test_a_viewer_sees_the_table_without_controls_and_cannot_post(viewer_client, lead_status):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    page = viewer_client.get(_page(lead_status))
    assert page.status_code == 200
    content = page.content.decode()
    assert 'data-value="MQL"' in content
    assert re.search(r'<select name="v-\d+-stage"[^>]* disabled', content)

    refused = viewer_client.post(_page(lead_status), {**_options(lead_status),
                                                      **_row(mql, "new")})
    assert refused.status_code == 403
    mql.refresh_from_db()
    assert mql.stage is None
