"""Issue 12, item 7: a malformed Salesforce answer fails the refresh, sync or push with a clear
error and a finish time, writes nothing half-way, and a query never pages on forever."""

import math
import re

import pytest

from connections.models import Connection
from connections.salesforce import (
    DETAIL_NO_VALUE,
    DETAIL_TYPE,
    ERR_MALFORMED,
    ERR_QUERY_OVERFLOW,
    ERR_QUERY_REPEATED,
    ERR_RESULT_COUNT,
    QUERY_MIN_PAGE_SIZE,
    QUERY_PAGE_SLACK,
    WHAT_DESCRIBE,
    WHAT_LIMITS,
    WHAT_QUERY,
    WHAT_UPDATE,
    SalesforceError,
)
from connections.services import connection_test
from mappings.models import FieldMapping, PicklistRefresh, PicklistValue
from mappings.services.refresh import VALUE_MAX_LENGTH, VALUE_TOO_LONG
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from sync.services.outbound import sync_run_push
from sync.services.refresh import sync_run_refresh
from tests.sync.factories import org_connection_fixture  # noqa: F401
from tests.sync.outbound_factories import (  # noqa: F401
    move,
    no_enqueue_fixture,
    open_leads,
    synced_leads,
)


def array_where_object(item: str = "the answer") -> str:
    return DETAIL_TYPE.format(item=item, got="an array", expected="an object")


def lead_describe(*entries: dict) -> dict:
    """A describe of Lead whose only field is Status with the given picklist entries."""
    status = {"name": "Status", "label": "Lead Status", "type": "picklist",
              "picklistValues": list(entries)}
    return {"name": "Lead", "label": "Lead", "fields": [status], "recordTypeInfos": []}


def status_values(connection) -> list[dict]:
    mapping = FieldMapping.objects.get(connection=connection, object_name="Lead",
                                       field_name="Status")
    return list(PicklistValue.objects.filter(field_mapping=mapping).order_by("pk").values())


def push_state(connection) -> list[tuple]:
    """What a push records on the connection's records: state and what was last pushed."""
    return list(
        SyncedRecord.objects.filter(connection=connection)
        .order_by("pk")
        .values_list("pk", "outbound_state", "last_pushed_values", "last_pushed_at")
    )


def assert_failed(run, text: str) -> None:
    assert run.status == SyncRun.Status.FAILED
    assert run.finished_at is not None
    assert text in run.error


@pytest.fixture
def refreshed_connection(sf_connection):
    """The emulated org with Lead.Status values read once (what a bad refresh must keep)."""
    run = sync_run_refresh(connection=sf_connection)
    assert run.status == SyncRun.Status.OK, run.error
    assert status_values(sf_connection)
    return sf_connection


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param(
            {"path_contains": "/describe",
             "body": lead_describe({"active": True, "label": "No API name"})},
            ERR_MALFORMED.format(what=WHAT_DESCRIBE.format(object="Lead"),
                                 detail=DETAIL_NO_VALUE.format(field="Status")),
            id="entry-without-value",
        ),
        pytest.param(
            {"path_contains": "/describe", "body": [lead_describe()]},
            ERR_MALFORMED.format(what=WHAT_DESCRIBE.format(object="Lead"),
                                 detail=array_where_object()),
            id="describe-array",
        ),
        pytest.param(
            {"path_contains": "/query", "body": [{"totalSize": 0, "records": []}]},
            ERR_MALFORMED.format(what=WHAT_QUERY, detail=array_where_object("the page")),
            id="query-array",
        ),
        pytest.param(
            {"path_contains": "/describe",
             "body": lead_describe({"active": True, "value": "x" * (VALUE_MAX_LENGTH + 1)})},
            VALUE_TOO_LONG.format(object="Lead", field="Status", length=VALUE_MAX_LENGTH + 1,
                                  limit=VALUE_MAX_LENGTH),
            id="value-too-long",
        ),
    ],
)
def test_malformed_answer_fails_the_refresh_and_keeps_the_values(
    refreshed_connection, emulator, fault, message
):
    before = status_values(refreshed_connection)
    emulator.org.inject_fault(**fault)

    run = sync_run_refresh(connection=refreshed_connection)

    refresh = PicklistRefresh.objects.get(pk=run.details["picklist_refresh_id"])
    assert_failed(run, message)
    assert refresh.status == PicklistRefresh.Status.FAILED
    assert refresh.finished_at is not None
    assert message in refresh.error
    assert status_values(refreshed_connection) == before


def test_limits_array_fails_the_connection_test(sf_connection, emulator):
    emulator.org.inject_fault(path_contains="/limits", body=[{"DailyApiRequests": {}}])

    with pytest.raises(SalesforceError) as caught:
        connection_test(connection=sf_connection)

    sf_connection.refresh_from_db()
    message = ERR_MALFORMED.format(what=WHAT_LIMITS, detail=array_where_object())
    assert caught.value.message == message
    assert sf_connection.status == Connection.Status.ERROR
    assert sf_connection.last_error == message


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param({"body": [{"records": []}]},
                     lambda total: ERR_MALFORMED.format(what=WHAT_QUERY,
                                                        detail=array_where_object("the page")),
                     id="query-array"),
        pytest.param({"body": {"totalSize": 1, "done": True, "records": [{"Name": "No id"}]}},
                     lambda total: ERR_MALFORMED.format(what=WHAT_QUERY, detail=DETAIL_TYPE.format(
                         item="a record's Id", got="null", expected="a text")),
                     id="record-without-id"),
        pytest.param({"query_loop": "undercount"},
                     # The emulator's undercount reports half the records, less one.
                     lambda total: ERR_QUERY_OVERFLOW.format(what="records", total=total // 2 - 1),
                     id="more-records-than-total"),
    ],
)
def test_malformed_first_page_fails_the_sync_and_stores_nothing(
    org_connection, emulator, fault, message
):
    emulator.org.inject_fault(path_contains="/query", **fault)

    [run] = sync_run_inbound(connection=org_connection, object_name="Lead", full=True)

    assert_failed(run, message(len(emulator.org.records("Lead"))))
    assert not SyncedRecord.objects.filter(connection=org_connection).exists()


@pytest.mark.parametrize(
    ("query_loop", "message"),
    [
        pytest.param("repeat", lambda total: ERR_QUERY_REPEATED, id="next-url-repeats"),
        pytest.param("endless", lambda total: ERR_QUERY_OVERFLOW.format(what="pages", total=total),
                     id="more-pages-than-total"),
    ],
)
def test_query_that_pages_on_stops_the_sync(org_connection, emulator, query_loop, message):
    total = len(emulator.org.records("Lead"))
    emulator.org.inject_fault(path_contains="/query", query_loop=query_loop)
    emulator.org.clear_request_log()

    [run] = sync_run_inbound(connection=org_connection, object_name="Lead", full=True)

    assert_failed(run, message(total))
    pages = math.ceil(total / QUERY_MIN_PAGE_SIZE) + QUERY_PAGE_SLACK
    assert emulator.org.count_requests("queryMore") < pages
    # The whole first page is kept (its cursor with it); no page past it wrote anything.
    assert SyncedRecord.objects.filter(connection=org_connection).count() == total


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(lambda leads: [{"id": leads[0].sf_id, "success": True, "errors": []}],
                     # As many records as were due went in the call: at least our two.
                     re.escape(ERR_RESULT_COUNT.format(got=1, sent="SENT")).replace(
                         "SENT", "([2-9]|[1-9][0-9]+)"),
                     id="fewer-results"),
        pytest.param(lambda leads: {"id": leads[0].sf_id, "success": True},
                     re.escape(ERR_MALFORMED.format(
                         what=WHAT_UPDATE.format(object="Lead"),
                         detail=DETAIL_TYPE.format(item="the answer", got="an object",
                                                   expected="an array"))),
                     id="object-instead-of-array"),
    ],
)
def test_malformed_collection_answer_fails_the_push_and_keeps_records_pending(
    emulator, org_connection, no_enqueue, answer, message
):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=2)
    move(leads, "contacted")
    before = push_state(org_connection)
    emulator.org.inject_fault(path_contains="composite/sobjects", body=answer(leads))

    run = sync_run_push(connection=org_connection)

    assert run.status == SyncRun.Status.FAILED
    assert run.finished_at is not None
    assert re.search(message, run.error)
    assert run.pushed == 0
    assert not RecordError.objects.filter(run=run).exists()
    assert push_state(org_connection) == before
    for lead in SyncedRecord.objects.filter(pk__in=[lead.pk for lead in leads]):
        assert lead.outbound_state == SyncedRecord.OutboundState.PENDING
        assert lead.last_pushed_values == {}
