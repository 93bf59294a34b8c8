"""The Salesforce client against the emulator over HTTPS: auth, retries, budget, shapes."""

import json
import time
from datetime import UTC, datetime, timedelta

import certifi
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils import timezone

from connections import salesforce
from connections.models import Connection
from connections.salesforce import (
    MASTER_RECORD_TYPE_ID,
    ApiBudgetExhausted,
    ApiLimitExceeded,
    AuthenticationFailed,
    ConnectionPaused,
    SalesforceError,
    TransientError,
    client_for,
    parse_datetime,
    parsing,
    soql_datetime,
)
from connections.services import connection_create, connection_pause, connection_test
from tests.connections.conftest import connection_kwargs, fresh_access_token

TOKEN_PATH = "/services/oauth2/token"


def token_requests(emu) -> int:
    return sum(1 for e in emu.org.request_log if e.path == TOKEN_PATH)


def api_requests(emu) -> list:
    return [e for e in emu.org.request_log if e.path.startswith("/services/data/")]


def other_rsa_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["jwt", "client-credentials", "password"])
def test_each_auth_method_connects(make_connection, emu, auth_method):
    connection = make_connection(auth_method)

    identity = connection_test(connection=connection)

    assert identity.org_id == emu.credentials.org_id
    assert identity.user_id == emu.credentials.user_id
    assert identity.username == emu.credentials.username
    assert identity.instance_url == emu.instance_url.rstrip("/")
    assert identity.api_usage.max == 15000
    connection.refresh_from_db()
    assert connection.status == Connection.Status.OK
    assert connection.org_id == emu.credentials.org_id
    assert connection.api_usage_max == 15000
    assert connection.last_connected_at is not None


def test_access_token_connects_without_a_token_request(db, emu):
    connection = connection_create(
        name="From sf org display",
        auth_method="access-token",
        login_url=emu.login_url,
        instance_url=emu.instance_url,
        secrets={"access_token": fresh_access_token(emu)},
    )
    emu.org.clear_request_log()

    identity = connection_test(connection=connection)

    assert identity.org_id[:15] == emu.credentials.org_id[:15]
    assert token_requests(emu) == 0
    connection.refresh_from_db()
    assert connection.status == Connection.Status.OK


@pytest.mark.parametrize(
    ("auth_method", "wrong", "code"),
    [
        ("client-credentials", {"consumer_secret": "WRONG-SECRET-123456"}, "invalid_client"),
        ("password", {"password": "Wrong-password-987"}, "invalid_grant"),
        ("jwt", {"private_key": other_rsa_key()}, "invalid_grant"),
    ],
)
def test_wrong_secret_fails_clearly(make_connection, emu, auth_method, wrong, code):
    kwargs = connection_kwargs(emu, auth_method)
    connection = make_connection(auth_method, secrets={**kwargs["secrets"], **wrong})

    with pytest.raises(AuthenticationFailed) as caught:
        connection_test(connection=connection)

    assert caught.value.code == code
    assert str(caught.value).startswith("Salesforce refused the credentials")
    connection.refresh_from_db()
    assert connection.status == Connection.Status.AUTH_FAILED
    assert connection.last_error == caught.value.message
    for secret in wrong.values():
        fragment = max(secret.splitlines(), key=len)
        assert fragment not in connection.last_error
        assert fragment not in str(caught.value)


def test_wrong_consumer_key_fails_clearly(make_connection, emu):
    connection = make_connection("client-credentials", consumer_key="3MVG9unknownkey")

    with pytest.raises(AuthenticationFailed) as caught:
        client_for(connection)

    assert caught.value.code == "invalid_client_id"
    connection.refresh_from_db()
    assert connection.status == Connection.Status.AUTH_FAILED


def test_expired_access_token_fails_with_auth_failed(db, emu):
    connection = connection_create(
        name="Stale token",
        auth_method="access-token",
        login_url=emu.login_url,
        instance_url=emu.instance_url,
        secrets={"access_token": fresh_access_token(emu)},
    )
    emu.org.expire_sessions()

    with pytest.raises(AuthenticationFailed) as caught:
        client_for(connection).describe("Lead")

    assert caught.value.message == salesforce.ERR_ACCESS_TOKEN_EXPIRED
    connection.refresh_from_db()
    assert connection.status == Connection.Status.AUTH_FAILED


def test_expired_token_is_renewed_once(make_connection, emu):
    connection = make_connection("client-credentials")
    client = client_for(connection)
    first_token = Connection.objects.get(pk=connection.pk).token_ciphertext
    emu.org.expire_sessions()
    emu.org.clear_request_log()

    describe = client.describe("Lead")

    assert describe.name == "Lead"
    assert token_requests(emu) == 1
    assert [e.status for e in api_requests(emu)] == [401, 200]
    assert client.api_calls == 2
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.token_ciphertext != first_token
    assert stored.status != Connection.Status.AUTH_FAILED


def test_cached_token_is_reused_by_the_next_client(make_connection, emu):
    connection = make_connection("password")
    client_for(connection).limits()
    emu.org.clear_request_log()

    client_for(connection).limits()

    assert token_requests(emu) == 0


def test_session_refused_after_reauthentication_ends_in_auth_failed(make_connection, emu):
    connection = make_connection("client-credentials")
    client = client_for(connection)
    emu.org.clear_request_log()
    emu.org.inject_fault(
        status=401, error_code="INVALID_SESSION_ID", count=50, path_contains="/services/data/"
    )

    with pytest.raises(AuthenticationFailed) as caught:
        client.describe("Lead")

    assert caught.value.message == salesforce.ERR_SESSION_REJECTED
    assert token_requests(emu) == 1
    assert len(api_requests(emu)) == 2
    connection.refresh_from_db()
    assert connection.status == Connection.Status.AUTH_FAILED
    assert connection.token_ciphertext == ""


def test_revoked_tokens_end_in_auth_failed_without_a_retry_storm(db, emu):
    creds = emu.credentials
    issued = requests.post(
        emu.login_url.rstrip("/") + TOKEN_PATH,
        data={"grant_type": "password", "client_id": creds.consumer_key,
              "client_secret": creds.consumer_secret, "username": creds.username,
              "password": creds.password + creds.security_token},
        verify=str(emu.ca_path), timeout=10,
    ).json()
    connection = connection_create(
        name="Refreshable",
        auth_method="access-token",
        login_url=emu.login_url,
        instance_url=emu.instance_url,
        consumer_key=creds.consumer_key,
        secrets={"access_token": issued["access_token"],
                 "refresh_token": issued["refresh_token"]},
    )
    client = client_for(connection)
    emu.org.revoke_tokens()
    emu.org.clear_request_log()

    with pytest.raises(AuthenticationFailed) as caught:
        client.query("SELECT Id FROM Lead").__next__()

    assert caught.value.code == "invalid_grant"
    assert token_requests(emu) <= 2
    assert len(api_requests(emu)) == 1
    connection.refresh_from_db()
    assert connection.status == Connection.Status.AUTH_FAILED
    assert issued["refresh_token"] not in connection.last_error


def test_refresh_token_renews_an_expired_access_token(db, emu):
    creds = emu.credentials
    issued = requests.post(
        emu.login_url.rstrip("/") + TOKEN_PATH,
        data={"grant_type": "password", "client_id": creds.consumer_key,
              "client_secret": creds.consumer_secret, "username": creds.username,
              "password": creds.password + creds.security_token},
        verify=str(emu.ca_path), timeout=10,
    ).json()
    connection = connection_create(
        name="Refreshable", auth_method="access-token", login_url=emu.login_url,
        instance_url=emu.instance_url, consumer_key=creds.consumer_key,
        secrets={"access_token": issued["access_token"],
                 "refresh_token": issued["refresh_token"]},
    )
    client = client_for(connection)
    emu.org.expire_sessions()

    assert client.limits().max == 15000
    assert token_requests(emu) == 2  # the test's own password grant, then one refresh


def test_paused_connection_makes_no_call(make_connection, emu):
    connection = make_connection("client-credentials")
    connection_pause(connection=connection)
    emu.org.clear_request_log()

    with pytest.raises(ConnectionPaused):
        client_for(connection)

    assert emu.org.request_log == []


# --- transient failures -----------------------------------------------------------------------


def test_503_is_retried_then_succeeds(make_connection, emu):
    client = client_for(make_connection())
    emu.org.clear_request_log()
    emu.org.inject_fault(status=503, count=2)

    assert client.limits().max == 15000

    assert [e.status for e in api_requests(emu)] == [503, 503, 200]
    assert client.api_calls == 3


def test_503_forever_gives_up_after_bounded_attempts(make_connection, emu, settings):
    settings.STAGEMAP_SALESFORCE_RETRIES = 2
    client = client_for(make_connection())
    emu.org.clear_request_log()
    emu.org.inject_fault(status=503, count=100)

    with pytest.raises(TransientError) as caught:
        client.describe("Lead")

    assert "3 attempts" in caught.value.message
    assert len(api_requests(emu)) == 3
    assert client.api_calls == 3


def test_dropped_connection_is_retried(make_connection, emu):
    client = client_for(make_connection())
    emu.org.inject_fault(status=None, drop_connection=True, count=1, path_contains="/limits")

    assert client.limits().max == 15000
    assert client.api_calls == 2


def test_timeout_is_retried(make_connection, emu, settings):
    settings.STAGEMAP_SALESFORCE_TIMEOUT = 0.3
    client = client_for(make_connection())
    emu.org.clear_request_log()
    emu.org.inject_fault(delay=0.8, count=1, path_contains="/limits")

    assert client.limits().max == 15000
    assert client.api_calls == 2
    # Let the abandoned slow request finish so it cannot land in the next test's org.
    deadline = time.monotonic() + 5
    while len(api_requests(emu)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_next_page_fetch_is_retried(make_connection, emu):
    client = client_for(make_connection())
    emu.org.inject_fault(status=503, count=1, path_contains="/query/01g")

    pages = list(client.query("SELECT Id FROM Lead", batch_size=200))

    assert len(pages) >= 2
    assert sum(len(p) for p in pages) == len(emu.org.records("Lead"))


def test_bad_soql_is_a_salesforce_error_with_code(make_connection, emu):
    client = client_for(make_connection())

    with pytest.raises(SalesforceError) as caught:
        list(client.query("SELECT NoSuchField__c FROM Lead"))

    assert caught.value.code == "INVALID_FIELD"
    assert caught.value.status == 400
    assert not isinstance(caught.value, TransientError)
    assert "https://" not in caught.value.message


# --- limits ----------------------------------------------------------------------------------


def test_budget_refuses_the_call_once_spent(make_connection, emu):
    connection = make_connection(api_budget_percent=10)
    emu.org.set_api_limit(20)
    client = client_for(connection)
    emu.org.clear_request_log()

    with pytest.raises(ApiBudgetExhausted) as caught:
        for _ in range(10):
            client.limits()

    assert caught.value.code == salesforce.CODE_BUDGET
    assert len(api_requests(emu)) == 2  # 2 of 20 is 10%: the third call is never sent
    connection.refresh_from_db()
    assert (connection.api_usage_used, connection.api_usage_max) == (2, 20)


def test_budget_counts_usage_known_before_the_client(make_connection, emu):
    connection = make_connection(api_budget_percent=50)
    client_for(connection)
    Connection.objects.filter(pk=connection.pk).update(
        api_usage_used=8000, api_usage_max=15000, api_usage_at=timezone.now()
    )
    connection.refresh_from_db()
    emu.org.clear_request_log()

    with pytest.raises(ApiBudgetExhausted):
        next(client_for(connection).query("SELECT Id FROM Lead"))

    assert api_requests(emu) == []


def _old_reading(connection, *, used: int, maximum: int, age: timedelta) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        api_usage_used=used, api_usage_max=maximum, api_usage_at=timezone.now() - age
    )
    connection.refresh_from_db()


def test_an_old_reading_over_budget_is_read_again_before_it_stops(make_connection, emu):
    connection = make_connection(api_budget_percent=50)
    client_for(connection)
    emu.org.set_api_limit(15000)
    emu.org.set_api_usage(100)
    _old_reading(connection, used=8000, maximum=15000, age=timedelta(minutes=6))
    emu.org.clear_request_log()

    list(client_for(connection).query("SELECT Id FROM Lead LIMIT 1"))

    # One cheap limits call, then the query Salesforce allows.
    limits, query = api_requests(emu)
    assert limits.path.rstrip("/").endswith("/limits")
    assert "/query" in query.path
    connection.refresh_from_db()
    assert connection.api_usage_used < 8000


def test_an_old_reading_that_holds_stops_after_one_limits_call(make_connection, emu):
    connection = make_connection(api_budget_percent=50)
    client_for(connection)
    emu.org.set_api_limit(15000)
    emu.org.set_api_usage(9000)
    _old_reading(connection, used=8000, maximum=15000, age=timedelta(hours=3))
    emu.org.clear_request_log()

    with pytest.raises(ApiBudgetExhausted):
        list(client_for(connection).query("SELECT Id FROM Lead LIMIT 1"))

    assert len(api_requests(emu)) == 1
    assert api_requests(emu)[0].path.rstrip("/").endswith("/limits")


def test_a_recent_reading_over_budget_stops_without_a_call(make_connection, emu):
    connection = make_connection(api_budget_percent=50)
    client_for(connection)
    _old_reading(connection, used=8000, maximum=15000, age=timedelta(minutes=4))
    emu.org.clear_request_log()

    with pytest.raises(ApiBudgetExhausted):
        list(client_for(connection).query("SELECT Id FROM Lead LIMIT 1"))

    assert api_requests(emu) == []


def test_request_limit_exceeded_is_not_retried(make_connection, emu):
    client = client_for(make_connection())
    emu.org.clear_request_log()
    emu.org.inject_fault(status=403, error_code="REQUEST_LIMIT_EXCEEDED", count=10)

    with pytest.raises(ApiLimitExceeded) as caught:
        client.describe("Lead")

    assert caught.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert len(api_requests(emu)) == 1


def test_org_limit_reached_raises_api_limit_exceeded(make_connection, emu):
    client = client_for(make_connection(api_budget_percent=100))
    emu.org.set_api_limit(1000)
    emu.org.set_api_usage(10)
    client.limits()
    emu.org.set_api_limit(11)

    with pytest.raises(ApiLimitExceeded):
        client.limits()


# --- TLS -------------------------------------------------------------------------------------


def test_extra_ca_is_trusted_despite_requests_ca_bundle(make_connection, emu, monkeypatch):
    system_bundle = requests.certs.where()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", system_bundle)
    monkeypatch.setenv("CURL_CA_BUNDLE", system_bundle)

    assert client_for(make_connection()).limits().max == 15000


def test_without_the_extra_ca_the_certificate_is_refused(make_connection, emu, settings):
    connection = make_connection()
    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = ""

    with pytest.raises(SalesforceError) as caught:
        client_for(connection)

    assert caught.value.code == salesforce.CODE_TLS


def test_session_forces_verification_on(settings, emulator):
    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = str(emulator.ca_path)
    session = salesforce.new_http_session()
    adapter = session.get_adapter("https://login.salesforce.com")

    assert isinstance(adapter, salesforce.TrustingAdapter)
    bundle = open(adapter.forced_verify).read()
    assert open(emulator.ca_path).read().strip() in bundle
    assert "BEGIN CERTIFICATE" in bundle.split(open(emulator.ca_path).read().strip())[0]


def test_sessions_share_one_tls_context_per_bundle(settings, emulator):
    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = str(emulator.ca_path)
    first = salesforce.new_http_session().get_adapter(emulator.base_url)
    second = salesforce.new_http_session()

    assert first.context is second.get_adapter(emulator.base_url).context
    assert second.get(emulator.base_url + "/services/data/").status_code == 200


@pytest.mark.parametrize("asked", [True, False])
def test_the_shared_context_refuses_a_certificate_outside_its_bundle(settings, emulator, asked):
    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = certifi.where()  # real roots, not the emulator's
    session = salesforce.new_http_session()

    with pytest.raises(requests.exceptions.SSLError):
        session.get(emulator.base_url + "/services/data/", verify=asked)


# --- shapes ----------------------------------------------------------------------------------


def test_describe_lead(make_connection, emu):
    describe = client_for(make_connection()).describe("Lead")

    status = describe.field("Status")
    assert status.is_picklist and status.type == "picklist"
    values = {v.value: v for v in status.picklist_values}
    assert "Working - Contacted" in values
    assert any(not v.active for v in status.picklist_values)
    assert any(v.label != v.value for v in status.picklist_values)
    assert sum(v.default for v in status.picklist_values) == 1
    assert describe.field("Lifecycle_Stage__c").custom
    assert status in describe.picklist_fields
    assert MASTER_RECORD_TYPE_ID in {rt.id for rt in describe.record_types}
    assert len([rt for rt in describe.record_types if not rt.master]) == 2


def test_describe_unknown_object(make_connection, emu):
    with pytest.raises(SalesforceError) as caught:
        client_for(make_connection()).describe("NoSuchThing__c")
    assert caught.value.status == 404


def test_describe_refuses_path_injection(make_connection, emu):
    with pytest.raises(ValueError):
        client_for(make_connection()).describe("Lead/../limits")


def test_query_pages_lazily_without_attributes(make_connection, emu):
    client = client_for(make_connection())
    emu.org.clear_request_log()

    pages = client.query("SELECT Id, Status FROM Lead ORDER BY Id", batch_size=200)
    assert api_requests(emu) == []
    first = next(pages)

    assert len(first) == 200
    assert set(first[0]) == {"Id", "Status"}
    assert len(api_requests(emu)) == 1
    rest = list(pages)
    assert sum(len(p) for p in [first, *rest]) == len(emu.org.records("Lead"))


@pytest.mark.parametrize(
    "body",
    [
        b'{"totalSize": 1, "done": true, "records": [{"Id": "00Q1", "Name": "Ann \\u00e9"}]}',
        b'{"a": 1, "a": 2}',  # the last of a repeated key, as json takes it
        b'{"x": NaN, "y": -Infinity}',  # msgspec refuses these: json's answer
        b'{"x": 1e400, "n": 123456789012345678901234567890}',
        b"\xef\xbb\xbf{}",
        '{"x": "\u00e9"}'.encode("utf-16"),
        b'{"x": "\\ud800"}',  # a lone surrogate
        b'{"x": "\\u0000", "y": 5e-324, "z": -0.0}',
    ],
)
def test_a_page_parses_as_json_would(body):
    assert repr(parsing._json_loads(body)) == repr(json.loads(body))


@pytest.mark.parametrize("body", [b'{"x": 1} x', b"", b"<html>Service Unavailable</html>"])
def test_a_page_that_is_not_json_raises_what_json_raises(body):
    with pytest.raises(json.JSONDecodeError) as ours:
        parsing._json_loads(body)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(body)
    assert type(ours.value) is type(theirs.value)


def test_query_all_includes_deleted(make_connection, emu):
    lead_id = emu.org.records("Lead")[0]["Id"]
    emu.org.delete_record("Lead", lead_id)
    client = client_for(make_connection())
    soql = f"SELECT Id, IsDeleted FROM Lead WHERE Id = '{lead_id}'"

    assert [r for p in client.query(soql) for r in p] == []
    rows = [r for p in client.query(soql, include_deleted=True) for r in p]
    assert rows == [{"Id": lead_id, "IsDeleted": True}]


def test_updated_and_deleted_ids(make_connection, emu):
    client = client_for(make_connection())
    now = emu.org.clock.now()
    emu.org.clock.freeze(now)
    lead_ids = [r["Id"] for r in emu.org.records("Lead")[:2]]
    emu.org.update_record("Lead", lead_ids[0], {"Status": "MQL"})
    emu.org.delete_record("Lead", lead_ids[1])
    emu.org.clock.advance(180)
    start, end = now - timedelta(hours=1), now + timedelta(minutes=3)

    updated = client.updated_ids("Lead", start, end)
    deleted = client.deleted_records("Lead", start, end)

    assert lead_ids[0] in updated.ids
    assert updated.latest_date_covered.tzinfo is not None
    assert [d.id for d in deleted.records] == [lead_ids[1]]
    assert deleted.records[0].deleted_at.tzinfo is not None


def test_updated_ids_refuses_naive_datetimes(make_connection, emu):
    with pytest.raises(ValueError):
        client_for(make_connection()).updated_ids(
            "Lead", datetime(2026, 1, 1), datetime(2026, 1, 2)
        )


def test_update_records_in_collections_of_200(make_connection, emu):
    client = client_for(make_connection())
    leads = [r for r in emu.org.records("Lead") if not r.get("IsConverted")][:250]
    failing = leads[3]["Id"]
    emu.org.fail_record(failing, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
    emu.org.clear_request_log()

    results = client.update_records(
        "Lead", [{"Id": r["Id"], "Status": "Working - Contacted"} for r in leads]
    )

    collection_calls = [e for e in api_requests(emu) if "composite/sobjects" in e.path]
    assert len(collection_calls) == 2
    assert [r.id for r in results] == [r["Id"] for r in leads]
    failed = [r for r in results if not r.success]
    assert [r.id for r in failed] == [failing]
    assert failed[0].errors[0].status_code == "UNABLE_TO_LOCK_ROW"
    assert emu.org.get_record("Lead", leads[0]["Id"])["Status"] == "Working - Contacted"


def test_update_records_reports_restricted_picklist(make_connection, emu):
    client = client_for(make_connection())
    lead = next(r for r in emu.org.records("Lead") if not r.get("IsConverted"))

    [result] = client.update_records("Lead", [{"Id": lead["Id"], "Status": "Not A Value"}])

    assert not result.success
    assert result.errors[0].status_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def test_an_update_whose_answer_never_came_is_not_sent_again(make_connection, emu):
    client = client_for(make_connection())
    client.limits()  # the session's connection is open: the drop hits the update itself
    lead = next(r for r in emu.org.records("Lead") if not r.get("IsConverted"))
    emu.org.inject_fault(drop_connection=True, count=1, path_contains="composite/sobjects")
    emu.org.clear_request_log()

    with pytest.raises(salesforce.TransientError) as caught:
        client.update_records("Lead", [{"Id": lead["Id"], "Status": "Working - Contacted"}])

    assert "may have been applied" in caught.value.message
    assert len([e for e in emu.org.request_log if "composite/sobjects" in e.path]) == 1


def test_an_update_refused_with_503_is_sent_again(make_connection, emu):
    client = client_for(make_connection())
    lead = next(r for r in emu.org.records("Lead") if not r.get("IsConverted"))
    emu.org.inject_fault(status=503, count=2, path_contains="composite/sobjects")

    [result] = client.update_records("Lead", [{"Id": lead["Id"], "Status": "Working - Contacted"}])

    assert result.success
    assert emu.org.get_record("Lead", lead["Id"])["Status"] == "Working - Contacted"


def test_a_read_whose_answer_never_came_is_sent_again(make_connection, emu):
    client = client_for(make_connection())
    emu.org.inject_fault(drop_connection=True, count=2, path_contains="/describe")

    assert client.describe("Lead").field("Status")


def test_only_a_request_that_made_no_connection_counts_as_never_sent():
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    from connections.salesforce.retry import never_sent

    refused = MaxRetryError(None, "/", reason=NewConnectionError(None, "refused"))
    dropped = ProtocolError("Connection aborted.", ConnectionResetError())

    assert never_sent(requests.exceptions.ConnectTimeout())
    assert never_sent(requests.exceptions.ConnectionError(refused))
    assert not never_sent(requests.exceptions.ConnectionError(dropped))
    assert not never_sent(requests.exceptions.ReadTimeout())
    assert not never_sent(requests.exceptions.ChunkedEncodingError())


def test_lead_statuses_and_stages(make_connection, emu):
    client = client_for(make_connection())

    statuses = client.lead_statuses()
    stages = client.opportunity_stages()

    assert [s.api_name for s in statuses if s.default] == ["Open - Not Contacted"]
    assert "Closed - Converted" in {s.api_name for s in statuses if s.converted}
    assert "Closed Won" in {s.api_name for s in stages if s.won and s.closed}


def test_picklist_values_by_record_type(make_connection, emu):
    client = client_for(make_connection())
    record_types = [rt for rt in client.describe("Lead").record_types if not rt.master]

    by_type = [client.picklist_values_by_record_type("Lead", rt.id)["Status"]
               for rt in record_types]

    assert {v.value for v in by_type[0]} != {v.value for v in by_type[1]}
    converted = [v.value for v in by_type[0] if v.converted]
    assert "Closed - Converted" in converted


def test_limits_and_usage_are_recorded(make_connection, emu):
    connection = make_connection()
    client = client_for(connection)

    usage = client.limits()

    connection.refresh_from_db()
    assert usage.max == 15000
    assert connection.api_usage_max == 15000
    assert connection.api_usage_used == usage.used
    assert connection.api_usage_at is not None


def test_usage_saved_by_caller_waits_for_save_usage(make_connection, emu):
    connection = make_connection()
    client = client_for(connection)
    stored = Connection.objects.filter(pk=connection.pk)

    with client.usage_saved_by_caller():
        client.describe("Lead")
        assert stored.get().api_usage_used is None
        client.save_usage()
        first = stored.get().api_usage_used
        assert first == client.api_usage.used
        client.describe("Contact")
        assert stored.get().api_usage_used == first

    assert stored.get().api_usage_used == client.api_usage.used > first


# --- values ----------------------------------------------------------------------------------


def test_parse_datetime():
    assert parse_datetime("2026-01-05T10:11:12.000+0000") == datetime(
        2026, 1, 5, 10, 11, 12, tzinfo=UTC
    )
    assert parse_datetime("2026-01-05T10:11:12Z").tzinfo is not None
    assert parse_datetime(None) is None


def test_soql_datetime():
    assert soql_datetime(datetime(2026, 1, 5, 10, 11, 12, tzinfo=UTC)) == "2026-01-05T10:11:12Z"
    with pytest.raises(ValueError):
        soql_datetime(datetime(2026, 1, 5, 10, 11, 12))


def test_soql_quote():
    assert salesforce.soql_quote("O'Brien \\ co") == "'O\\'Brien \\\\ co'"
