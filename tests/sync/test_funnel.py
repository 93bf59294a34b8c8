"""The funnel picture: records per stage and unmapped, on the connection and health pages."""

import html
import re
import xml.etree.ElementTree as ET

import pytest
from django.db import connection as db
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mappings.models import Stage
from sync.funnel import (
    UNMAPPED_LABEL,
    UNMAPPED_VALUES_SHOWN,
    connection_funnel,
    connections_funnels,
)
from sync.models import SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from tests.mappings.factories import StageFactory
from tests.sync.factories import (  # noqa: F401 (org_connection_fixture is a fixture)
    ConnectionFactory,
    SyncedRecordFactory,
    lead_status_mapping,
    org_connection_fixture,
    stage,
)

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
BAR_LENGTH = 400  # the largest bar, in the template's viewBox units
XSS = "<script>alert(1)</script>"


def _records(connection, count: int, **fields) -> list[SyncedRecord]:
    return SyncedRecordFactory.create_batch(count, connection=connection, **fields)


def _counts(funnel) -> dict[str, int]:
    return {bar.label: bar.count for bar in funnel.bars}


def _render(funnel) -> str:
    return render_to_string("admin/sync/funnel.html", {"funnel": funnel})


def _svg(page: str) -> ET.Element:
    """The first funnel chart of the page, parsed as XML (so it must be well-formed SVG)."""
    start = page.rindex("<svg", 0, page.index('class="funnel-chart"'))
    end = page.index("</svg>", start) + len("</svg>")
    return ET.fromstring(page[start:end])


def _bars(svg: ET.Element) -> list[dict]:
    bars = []
    for group in svg.iter(f"{SVG}g"):
        label, count = group.findall(f"{SVG}text")
        bars.append({
            "label": label.text,
            "count": int(count.text),
            "width": float(group.find(f"{SVG}rect").get("width")),
            "title": group.find(f"{SVG}title").text,
            "href": html.unescape(next(a for a in svg.iter(f"{SVG}a") if group in list(a))
                                  .get("href")),
        })
    return bars


def _value_links(page: str) -> dict[str, str]:
    """Unmapped value (as shown) → its link, from the funnel's table of unmapped values."""
    table = page[page.index('class="funnel-unmapped-values"'):]
    table = table[:table.index("</table>")]
    return {
        html.unescape(text): html.unescape(href)
        for href, text in re.findall(r'<a href="([^"]+)">([^<]*)</a>', table)
    }


def _listed(client, url: str) -> set[int]:
    response = client.get(url)
    assert response.status_code == 200
    return {record.pk for record in response.context["cl"].result_list}


def test_counts_live_records_of_the_connection_per_stage():
    connection = ConnectionFactory()
    _records(connection, 3, stage=stage("new"))
    _records(connection, 1, stage=stage("contacted"))
    _records(connection, 2, stage=stage("lost"))
    _records(connection, 2, raw_value="MQL")
    _records(connection, 1, raw_value="SQL")
    _records(connection, 4, stage=stage("new"), is_deleted=True)
    _records(connection, 5, raw_value="MQL", is_deleted=True)
    other = ConnectionFactory()
    _records(other, 6, stage=stage("contacted"))
    _records(other, 7, raw_value="MQL")

    funnel = connection_funnel(connection=connection)

    assert _counts(funnel) == {
        "New": 3, "Contacted": 1, "In Progress": 0, "Converted": 0, "Lost": 2, UNMAPPED_LABEL: 3,
    }
    assert [(v.object_name, v.raw_value, v.count) for v in funnel.unmapped_values] == [
        ("Lead", "MQL", 2), ("Lead", "SQL", 1),
    ]
    assert (funnel.total, funnel.largest, funnel.unmapped_count) == (9, 3, 3)
    assert _counts(connection_funnel(connection=other))["Contacted"] == 6


def test_bars_follow_the_stage_order_and_unmapped_comes_last():
    StageFactory(key="qualified", name="Qualified", order=25)
    Stage.objects.filter(key="lost").update(order=1)
    funnel = connection_funnel(connection=ConnectionFactory())

    assert [bar.label for bar in funnel.bars] == [
        "Lost", "New", "Contacted", "Qualified", "In Progress", "Converted", UNMAPPED_LABEL,
    ]
    rendered = [bar["label"] for bar in _bars(_svg(_render(funnel)))]
    assert rendered == [bar.label for bar in funnel.bars]


def test_an_inactive_stage_shows_only_while_records_sit_in_it():
    connection = ConnectionFactory()
    old = StageFactory(key="old", name="Old", order=35, active=False)
    assert "Old (inactive)" not in _counts(connection_funnel(connection=connection))

    _records(connection, 2, stage=old)
    _records(ConnectionFactory(), 1, stage=old)
    labels = [bar.label for bar in connection_funnel(connection=connection).bars]
    assert labels.index("Old (inactive)") == labels.index("In Progress") + 1
    assert _counts(connection_funnel(connection=connection))["Old (inactive)"] == 2


def test_opportunities_without_a_stage_are_counted_apart_from_unmapped():
    connection = ConnectionFactory()
    _records(connection, 2, object_name="Opportunity", raw_value="Prospecting")
    _records(connection, 1, object_name="Opportunity", raw_value="Won", stage=stage("converted"))
    _records(connection, 1, raw_value="MQL")

    funnel = connection_funnel(connection=connection)

    assert funnel.opportunities_without_stage == 2
    assert (funnel.unmapped_count, _counts(funnel)["Converted"]) == (1, 1)
    assert [v.raw_value for v in funnel.unmapped_values] == ["MQL"]
    assert "2 opportunities without a stage" in _render(funnel)


def test_unmapped_values_most_records_first_capped_with_how_many_more():
    connection = ConnectionFactory()
    extra = 3
    SyncedRecord.objects.bulk_create([
        SyncedRecord(connection=connection, object_name="Lead", sf_id=f"00Qbulk{n:011d}",
                     raw_value=f"Value {n:03d}")
        for n in range(UNMAPPED_VALUES_SHOWN + extra)
    ])
    _records(connection, 3, raw_value="Popular")
    _records(connection, 2, object_name="Contact", raw_value="Popular")

    funnel = connection_funnel(connection=connection)

    assert len(funnel.unmapped_values) == UNMAPPED_VALUES_SHOWN
    # Two more values than created in bulk: "Popular" of Lead and of Contact.
    assert funnel.more_unmapped_values == extra + 2
    assert [(v.object_name, v.raw_value, v.count) for v in funnel.unmapped_values[:3]] == [
        ("Lead", "Popular", 3), ("Contact", "Popular", 2), ("Lead", "Value 000", 1),
    ]
    assert funnel.unmapped_count == UNMAPPED_VALUES_SHOWN + extra + 5
    assert f"and {extra + 2} more unmapped values" in _render(funnel)


def test_bar_widths_are_proportional_to_the_largest_bar():
    connection = ConnectionFactory()
    _records(connection, 7, stage=stage("new"))
    _records(connection, 3, stage=stage("contacted"))
    _records(connection, 1, stage=stage("lost"))
    _records(connection, 5, raw_value="MQL")

    bars = _bars(_svg(_render(connection_funnel(connection=connection))))

    largest = max(bar["count"] for bar in bars)
    assert largest == 7
    for bar in bars:
        # Widths are whole viewBox units: within half a unit of the exact proportion.
        assert abs(bar["width"] - BAR_LENGTH * bar["count"] / largest) <= 0.5, bar
        assert bar["title"] == f"{bar['label']}: {bar['count']} record{'s' * (bar['count'] != 1)}"
    assert [bar["count"] for bar in bars] == [7, 3, 0, 0, 1, 5]


def test_an_empty_funnel_draws_zero_width_bars():
    bars = _bars(_svg(_render(connection_funnel(connection=ConnectionFactory()))))
    assert {(bar["count"], bar["width"]) for bar in bars} == {(0, 0.0)}


def test_the_chart_is_an_accessible_image_without_script_or_external_resource():
    connection = ConnectionFactory(name=f"Org {XSS}")
    StageFactory(key="evil", name=XSS, order=5)
    _records(connection, 2, stage=Stage.objects.get(key="evil"))
    _records(connection, 1, raw_value=XSS)

    page = _render(connection_funnel(connection=connection))

    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # labels, titles, values
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    svg = _svg(page)
    assert svg.get("role") == "img"
    assert svg.get("aria-label") == (
        f"Records per stage of Org {XSS}: {XSS} 2, New 0, Contacted 0, In Progress 0, "
        f"Converted 0, Lost 0, {UNMAPPED_LABEL} 1"
    )
    assert _bars(svg)[0]["label"] == XSS
    assert set(_value_links(page)) == {XSS}


def test_unmapped_value_links_list_exactly_the_records_holding_the_value(admin_client):
    connection = ConnectionFactory()
    odd = "A & B / C+D = 100%"
    expected = {
        ("Lead", "MQL"): _records(connection, 3, raw_value="MQL"),
        ("Contact", "MQL"): _records(connection, 1, object_name="Contact", raw_value="MQL"),
        ("Lead", odd): _records(connection, 2, raw_value=odd),
        ("Lead", ""): _records(connection, 1, raw_value=""),
    }
    # Not in any list: mapped, deleted, or another connection's.
    _records(connection, 2, raw_value="MQL", stage=stage("new"))
    _records(connection, 2, raw_value="MQL", is_deleted=True)
    _records(ConnectionFactory(), 2, raw_value="MQL")

    funnel = connection_funnel(connection=connection)
    links = _value_links(_render(funnel))

    shown = [(v.object_name, v.raw_value or "(empty)") for v in funnel.unmapped_values]
    assert sorted(links) == sorted({value for _, value in shown})
    for value in funnel.unmapped_values:
        records = expected[(value.object_name, value.raw_value)]
        assert value.count == len(records)
    # The same text in two objects is two rows, each linked to its object's records.
    page = _render(funnel)
    mql_links = [html.unescape(href) for href in re.findall(r'<a href="([^"]+)">MQL</a>', page)]
    assert len(mql_links) == 2
    for href in mql_links:
        obj = "Contact" if "object_name__exact=Contact" in href else "Lead"
        assert _listed(admin_client, href) == {r.pk for r in expected[(obj, "MQL")]}
    assert _listed(admin_client, links[odd]) == {r.pk for r in expected[("Lead", odd)]}
    assert _listed(admin_client, links["(empty)"]) == {r.pk for r in expected[("Lead", "")]}


def test_bar_links_list_the_records_of_the_bar(admin_client):
    connection = ConnectionFactory()
    new = _records(connection, 2, stage=stage("new"))
    unmapped = _records(connection, 3, raw_value="MQL")
    _records(connection, 1, stage=stage("new"), is_deleted=True)
    _records(ConnectionFactory(), 1, stage=stage("new"))

    bars = {bar["label"]: bar for bar in _bars(_svg(_render(connection_funnel(
        connection=connection))))}

    unmapped_href = bars[UNMAPPED_LABEL]["href"]
    assert f"?connection__id__exact={connection.pk}&unmapped=yes" in unmapped_href
    assert _listed(admin_client, unmapped_href) == {r.pk for r in unmapped}
    assert _listed(admin_client, bars["New"]["href"]) == {r.pk for r in new}
    assert _listed(admin_client, bars["Lost"]["href"]) == set()


@pytest.mark.parametrize("client_fixture", ["admin_client", "viewer_client"])
def test_shown_on_the_connection_page_and_the_health_page(request, client_fixture):
    client = request.getfixturevalue(client_fixture)
    connection = ConnectionFactory(name="Funnel org")
    _records(connection, 2, stage=stage("contacted"))
    _records(connection, 1, raw_value="Nurturing")
    ConnectionFactory(name="Second org")

    change = client.get(reverse("admin:connections_connection_change", args=[connection.pk]))
    assert change.status_code == 200
    page = change.content.decode()
    assert page.count('class="funnel-chart"') == 1
    contacted = next(bar for bar in _bars(_svg(page)) if bar["label"] == "Contacted")
    assert contacted["count"] == 2
    assert set(_value_links(page)) == {"Nurturing"}

    health = client.get(reverse("admin:connections_connection_health"))
    assert health.status_code == 200
    page = health.content.decode()
    assert page.count('class="funnel-chart"') == 2
    assert "Records per stage of Funnel org: New 0, Contacted 2," in page
    assert "Records per stage of Second org: New 0, Contacted 0," in page


def _queries(function) -> int:
    with CaptureQueriesContext(db) as context:
        function()
    return len(context.captured_queries)


def test_funnels_cost_the_same_queries_for_few_or_many_records_and_connections():
    first = ConnectionFactory()
    _records(first, 1, stage=stage("new"))
    one = _queries(lambda: connection_funnel(connection=first))
    few = _queries(lambda: connections_funnels(connections=[first]))

    many = [first, *(ConnectionFactory() for _ in range(5))]
    for index, connection in enumerate(many):
        for key in ("new", "contacted", "lost"):
            _records(connection, index + 2, stage=stage(key))
        _records(connection, index + 1, raw_value=f"Value {index}")
        _records(connection, 1, object_name="Opportunity", raw_value="Prospecting")
    StageFactory(key="gone", name="Gone", active=False)

    assert _queries(lambda: connection_funnel(connection=first)) == one
    assert _queries(lambda: connections_funnels(connections=many)) == few
    assert len(connections_funnels(connections=many)) == len(many)


def test_the_connection_page_costs_the_same_queries_for_few_or_many_records(admin_client):
    connection = ConnectionFactory()
    url = reverse("admin:connections_connection_change", args=[connection.pk])
    admin_client.get(url)  # warm the session and content types
    with CaptureQueriesContext(db) as few:
        assert admin_client.get(url).status_code == 200
    for key in ("new", "contacted", "in_progress"):
        _records(connection, 5, stage=stage(key))
    for n in range(5):
        _records(connection, 2, raw_value=f"Value {n}")
    with CaptureQueriesContext(db) as many:
        response = admin_client.get(url)
    assert len(many.captured_queries) == len(few.captured_queries)
    assert len(_value_links(response.content.decode())) == 5


def test_funnel_of_leads_synced_from_the_emulator_matches_the_database(emulator, org_connection):
    lead_status_mapping(org_connection, unmapped=("MQL",))
    [run] = sync_run_inbound(connection=org_connection, object_name="Lead")
    assert run.status == SyncRun.Status.OK, run.error

    funnel = connection_funnel(connection=org_connection)

    live = SyncedRecord.objects.filter(connection=org_connection, is_deleted=False)
    assert live.exists()
    by_stage = {bar.stage.pk: bar.count for bar in funnel.bars if not bar.unmapped}
    assert by_stage == {s.pk: live.filter(stage=s).count() for s in Stage.objects.all()}
    assert funnel.unmapped_count == live.filter(stage__isnull=True).count()
    assert funnel.total == live.count()
    mql = [r for r in emulator.org.records("Lead") if r["Status"] == "MQL" and not r["IsConverted"]]
    assert mql
    assert [(v.object_name, v.raw_value, v.count) for v in funnel.unmapped_values] == [
        ("Lead", "MQL", len(mql))
    ]
