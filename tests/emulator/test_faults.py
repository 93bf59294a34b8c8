"""Injected faults, the daily API limit, Sforce-Limit-Info and the request log."""

import time

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from tests.emulator.sfclient import client, token_request, trusted_session

QUERY = "SELECT Id FROM Lead LIMIT 1"


def test_fault_with_status_and_code_for_next_n_calls(sf, org):
    org.inject_fault(status=503, error_code="SERVER_UNAVAILABLE", count=2)
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as info:
            sf.query(QUERY)
        assert info.value.status == 503
        assert info.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert sf.query(QUERY)["done"]


def test_fault_only_for_matching_paths(sf, org):
    org.inject_fault(status=500, error_code="UNKNOWN_EXCEPTION", path_contains="composite")
    assert sf.query(QUERY)["done"]
    with pytest.raises(SalesforceGeneralError) as info:
        sf.restful("composite/sobjects", method="PATCH", json={"records": []})
    assert info.value.status == 500
    assert sf.restful("composite/sobjects", method="PATCH", json={"records": []}) is None


def test_delay_fault_is_slow_then_answers(sf, org):
    org.inject_fault(delay=0.5)
    started = time.monotonic()
    assert sf.query(QUERY)["done"]
    assert time.monotonic() - started >= 0.5
    org.inject_fault(delay=0.5)
    org.clear_request_log()
    with pytest.raises(requests.exceptions.Timeout):
        sf.query(QUERY, timeout=0.2)
    # The emulator still answers the abandoned request: wait for it, so that it lands in this
    # test's request log and not in a later test's.
    deadline = time.monotonic() + 10
    while not org.request_log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e.kind for e in org.request_log] == ["query"]


def test_dropped_connection(sf, org):
    org.inject_fault(drop_connection=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.query(QUERY)
    assert sf.query(QUERY)["done"]


def test_random_failure_rate_is_seeded(sf, org):
    def run():
        org.set_failure_rate(0.5, seed=7)
        outcome = []
        for _ in range(20):
            try:
                sf.query(QUERY)
                outcome.append(True)
            except SalesforceGeneralError as exc:
                assert exc.status == 503
                outcome.append(False)
        org.set_failure_rate(0)
        return outcome

    first = run()
    assert 3 < first.count(False) < 17
    assert run() == first


def test_api_limit_and_request_limit_exceeded(sf, org):
    org.set_api_limit(3)
    sf.query(QUERY)
    assert sf.api_usage["api-usage"].used == 1 and sf.api_usage["api-usage"].total == 3
    sf.query(QUERY)
    sf.query(QUERY)
    assert org.api_usage == (3, 3)
    with pytest.raises(SalesforceRefusedRequest) as info:
        sf.query(QUERY)
    assert info.value.status == 403
    assert info.value.content == [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                   "message": "TotalRequests Limit exceeded."}]
    org.reset_api_usage()
    assert sf.query(QUERY)["done"] and org.api_usage == (1, 3)
    org.set_api_usage(2)
    sf.limits()
    assert sf.api_usage["api-usage"].used == 3


def test_limit_info_header_on_every_response(emulator, sf):
    session = trusted_session(emulator)
    base = f"{emulator.base_url}/services/data/v62.0"
    token = {"Authorization": f"Bearer {sf.session_id}"}
    for url, headers in ((f"{base}/query/?q=SELECT+Nope+FROM+Lead", token),
                         (f"{base}/sobjects/Lead/describe", {}),
                         (f"{base}/limits/", token)):
        response = session.get(url, headers=headers, timeout=10)
        assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert response.status_code == 200
    assert session.put(f"{base}/limits/", headers=token, timeout=10).status_code == 405


def test_request_log_counts_calls_by_kind(emulator, sf, org):
    org.clear_request_log()
    list(sf.query_all_iter("SELECT Id FROM Lead",
                           headers={"Sforce-Query-Options": "batchSize=200"}))
    sf.Lead.describe()
    sf.restful("composite/sobjects", method="PATCH", json={"records": []})
    log = org.request_log
    assert [(e.method, e.kind, e.status) for e in log] == [
        ("GET", "query", 200), ("GET", "queryMore", 200), ("GET", "describe", 200),
        ("PATCH", "composite", 200)]
    assert log[0].path == "/services/data/v62.0/query/"
    assert log[0].query == "q=SELECT Id FROM Lead"
    assert org.count_requests("query") == 1
    used = org.api_usage[0]
    client(emulator)  # the token call is logged too, and costs no API call
    assert org.request_log[-1].kind == "oauth" and org.api_usage[0] == used


def test_body_fault_replaces_the_answer_once(emulator, sf, org):
    org.inject_fault(body=[{"not": "a describe"}], path_contains="/describe")
    assert sf.Lead.describe() == [{"not": "a describe"}]
    assert sf.Lead.describe()["name"] == "Lead"
    org.inject_fault(body=None, status=202, path_contains="/limits")
    response = trusted_session(emulator).get(
        f"{emulator.base_url}/services/data/v62.0/limits/",
        headers={"Authorization": f"Bearer {sf.session_id}"}, timeout=10,
    )
    assert (response.status_code, response.content) == (202, b"null")


def test_raw_body_fault_with_its_content_type(emulator, sf, org):
    org.inject_fault(raw_body="<html>maintenance</html>", content_type="text/html",
                     path_contains="/limits")
    response = trusted_session(emulator).get(
        f"{emulator.base_url}/services/data/v62.0/limits/",
        headers={"Authorization": f"Bearer {sf.session_id}"}, timeout=10,
    )
    assert response.status_code == 200
    assert response.text == "<html>maintenance</html>"
    assert response.headers["Content-Type"] == "text/html"


def test_echo_fault_on_the_token_endpoint_repeats_the_credentials(emulator, org):
    creds = emulator.credentials
    org.inject_fault(echo=True, error_code="invalid_client", path_contains="/oauth2/token")
    response = token_request(emulator, {"grant_type": "client_credentials"},
                             auth=(creds.consumer_key, creds.consumer_secret))
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("invalid_client_")
    assert creds.consumer_secret in body["error"]
    assert creds.consumer_secret in body["error_description"]
    assert token_request(emulator, {"grant_type": "client_credentials"},
                         auth=(creds.consumer_key, creds.consumer_secret)).status_code == 200


def test_echo_fault_on_rest_calls_repeats_the_bearer_token(sf, org):
    org.inject_fault(echo=True, error_code="MALFORMED_QUERY", path_contains="/query")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query(QUERY)
    [error] = info.value.content
    for key in ("errorCode", "message"):
        assert sf.session_id in error[key]
    assert any(sf.session_id in name for name in error["fields"])


def test_echo_fault_on_collections_fails_every_record(sf, org):
    ids = [r["Id"] for r in org.records("Lead")[:2]]
    org.inject_fault(echo=True, status=200, path_contains="composite/sobjects")
    results = sf.restful("composite/sobjects", method="PATCH", json={
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, "id": i, "Company": "X"} for i in ids]})
    assert len(results) == 2
    for result in results:
        assert result["success"] is False
        [error] = result["errors"]
        assert sf.session_id in error["statusCode"] and sf.session_id in error["message"]
        assert sf.session_id in error["fields"][0]
    assert all(org.get_record("Lead", i)["Company"] != "X" for i in ids)


def test_query_loop_repeat_sends_the_same_next_url_again(sf, org):
    org.inject_fault(query_loop=True, path_contains="/query")
    first = sf.query("SELECT Id FROM Lead")
    assert first["done"] is False
    url = first["nextRecordsUrl"]
    again = sf.query_more(url, identifier_is_url=True)
    assert again["done"] is False and again["nextRecordsUrl"] == url
    assert sf.query("SELECT Id FROM Lead")["done"] is True


def test_query_loop_endless_pages_past_the_end(sf, org):
    org.inject_fault(query_loop="endless", path_contains="/query")
    page = sf.query("SELECT Id FROM Lead")
    assert len(page["records"]) == page["totalSize"] and page["done"] is False
    urls = set()
    for _ in range(3):
        urls.add(page["nextRecordsUrl"])
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        assert page["records"] == [] and page["done"] is False
    assert len(urls) == 3


def test_query_loop_undercount_reports_fewer_than_it_sends(sf, org):
    org.inject_fault(query_loop="undercount", path_contains="/query")
    page = sf.query("SELECT Id FROM Lead")
    assert page["done"] is True
    assert 0 <= page["totalSize"] < len(page["records"])


def test_unknown_query_loop_is_refused(org):
    with pytest.raises(ValueError):
        org.inject_fault(query_loop="sideways")
