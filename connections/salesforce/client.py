"""The client: one authenticated session per connection, with budget, retries and
re-authentication, and one small method per API operation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import requests
from django.conf import settings
from django.utils import timezone
from simple_salesforce import Salesforce
from simple_salesforce import exceptions as sf_exceptions

from connections import crypto
from connections.salesforce.errors import (
    CODE_BUDGET,
    CODE_MALFORMED,
    CODE_PAUSED,
    DETAIL_SHAPE,
    ERR_BAD_NAME,
    ERR_BUDGET,
    ERR_EMPTY_RESULT,
    ERR_PAUSED,
    ERR_QUERY_OVERFLOW,
    ERR_QUERY_REPEATED,
    ERR_RESULT_COUNT,
    ERR_SESSION_REJECTED,
    ERR_TRANSIENT,
    MAX_FIELD_TEXT,
    WHAT_CALL,
    WHAT_QUERY,
    WHAT_UPDATE,
    ApiBudgetExhausted,
    ApiLimitExceeded,
    AuthenticationFailed,
    ConnectionPaused,
    SalesforceError,
    TransientError,
    redact,
)
from connections.salesforce.oauth import (
    _obtain_token,
    _Token,
)
from connections.salesforce.parsing import (
    _ID_URL,
    _LIMIT_INFO,
    _check_keyed,
    _deleted_records,
    _expect,
    _get_page,
    _identity_id,
    _keyed_fields,
    _limits_usage,
    _malformed,
    _next_records_url,
    _object_describe,
    _parsing,
    _query_total,
    _record_type_picklists,
    _row_text,
    _update_result,
    _updated_ids,
)
from connections.salesforce.retry import (
    _backoff,
    transient_failure,
)
from connections.salesforce.soql import (
    _RECORD_TYPE_ID,
    _check_api_name,
    _iso,
)
from connections.salesforce.tls import (
    new_http_session,
)
from connections.salesforce.values import (
    ApiUsage,
    DeletedRecords,
    LeadStatusInfo,
    ObjectDescribe,
    OpportunityStageInfo,
    OrgIdentity,
    PicklistEntry,
    RecordUpdateResult,
    UpdatedIds,
)

logger = logging.getLogger(__name__)

COLLECTION_BATCH_SIZE = 200
QUERY_PAGE_SIZE = 2000
# Salesforce never pages a query in fewer than 200 records (batchSize is clamped to 200..2000):
# with a little slack, that bounds how many pages a query's totalSize allows.
QUERY_MIN_PAGE_SIZE = 200
QUERY_PAGE_SLACK = 2

# A reading older than this does not stop a run on its own: one `limits` call (which the
# budget never refuses) reads the usage afresh first. Salesforce's window is a rolling 24 h.
USAGE_RECHECK_AFTER = timedelta(minutes=5)


def _api_version(connection) -> str:
    version = (connection.api_version or settings.STAGEMAP_SALESFORCE_API_VERSION).strip()
    return version[1:] if version[:1] in ("v", "V") else version


def _services():
    """connections.services, imported when first needed: it imports this package (it is the
    caller of the client), and importing the ORM here would tie the wire to app loading."""
    from connections import services

    return services


class SalesforceClient:
    """One authenticated session for one connection; `api_calls` counts the calls it made."""

    api_calls: int

    def __init__(self, connection, *, session: requests.Session | None = None) -> None:
        self.connection = connection
        self.api_calls = 0
        self._session = session or new_http_session()
        self._session.hooks["response"].append(self._on_response)
        self._secrets: dict = crypto.decrypt_json(connection.secrets_ciphertext)
        self._token: _Token | None = None
        # Tokens this client used before the current one, and what its token requests carried:
        # an answer may still echo them.
        self._previous_tokens: list[str] = []
        self._sent_secrets: list[str] = []
        self._sf: Salesforce | None = None
        self._usage: ApiUsage | None = None
        self._usage_at: datetime | None = connection.api_usage_at
        self._usage_dirty = False
        self._usage_saved_by_caller = False
        if connection.api_usage_max:
            self._usage = ApiUsage(used=connection.api_usage_used or 0,
                                   max=connection.api_usage_max)

    # -- state ---------------------------------------------------------------------------

    @property
    def api_usage(self) -> ApiUsage | None:
        """The last usage Salesforce reported (Sforce-Limit-Info or limits/)."""
        return self._usage

    def _secret_values(self) -> list[str]:
        values = [str(v) for v in self._secrets.values()]
        values += self._previous_tokens + self._sent_secrets
        if self._token:
            values.append(self._token.access_token)
        return values

    def redact(self, text: Any) -> str:
        """`redact` with this connection's secrets, tokens (current and earlier) and what its
        token requests carried: for any text from Salesforce before it is kept or shown."""
        return redact(text, secrets=self._secret_values())

    def _use(self, token: _Token) -> None:
        if self._token is not None and self._token.access_token != token.access_token:
            self._previous_tokens.append(self._token.access_token)
        self._token = token
        self._sf = Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token,
            version=_api_version(self.connection),
            session=self._session,
        )

    def _cached_token(self) -> _Token | None:
        cached = crypto.decrypt_json(self.connection.token_ciphertext)
        if cached.get("access_token") and cached.get("instance_url"):
            return _Token(cached["access_token"], cached["instance_url"], cached.get("id_url", ""))
        if self.connection.auth_method == "access-token":
            token = self._secrets.get("access_token", "")
            if token and self.connection.instance_url:
                return _Token(token, self.connection.instance_url.rstrip("/"))
        return None

    @property
    def can_authenticate(self) -> bool:
        """Whether a new token can be obtained (an access token alone cannot be renewed)."""
        if self.connection.auth_method != "access-token":
            return True
        return bool(self._secrets.get("refresh_token") and self.connection.consumer_key)

    def _mark_auth_failed(self, message: str) -> None:
        logger.warning("connection %s: authentication failed: %s", self.connection.name, message)
        _services().connection_record_auth_failure(connection=self.connection, message=message)

    def authenticate(self) -> None:
        """Obtain a fresh token from the login URL and cache it (encrypted)."""
        try:
            token = _obtain_token(
                self.connection, self._secrets, self._session, sent=self._sent_secrets
            )
        except AuthenticationFailed as exc:
            self._mark_auth_failed(exc.message)
            raise
        ids = _ID_URL.search(token.id_url or "")
        _services().connection_store_token(
            connection=self.connection,
            token_ciphertext=crypto.encrypt_json(token.to_json()),
            instance_url=token.instance_url,
            org_id=ids["org"] if ids else "",
            user_id=ids["user"] if ids else "",
        )
        self._use(token)

    def _on_response(self, response, *args, **kwargs) -> None:
        found = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if found:
            self._usage = ApiUsage(used=int(found["used"]), max=int(found["max"]))
            self._usage_at = timezone.now()
            self._usage_dirty = True

    @contextmanager
    def usage_saved_by_caller(self):
        """While open, requests leave the API usage they see unsaved; the caller saves it with
        `save_usage()` inside its own transactions (calls made from a worker thread would
        otherwise write it from there and wait for the caller's open transaction)."""
        self._usage_saved_by_caller = True
        try:
            yield self
        finally:
            self._usage_saved_by_caller = False
            self.save_usage()

    def save_usage(self) -> None:
        """Store the last API usage Salesforce reported on the connection, if it changed."""
        if self._usage_dirty and self._usage is not None:
            self._usage_dirty = False
            _services().connection_store_usage(
                connection=self.connection,
                used=self._usage.used,
                maximum=self._usage.max,
                at=self._usage_at,
            )

    def _check_budget(self) -> None:
        usage = self._usage
        if not self._over_budget(usage):
            return
        if self._usage_at is None or timezone.now() - self._usage_at > USAGE_RECHECK_AFTER:
            usage = self.limits(budget=False)
            if not self._over_budget(usage):
                return
        percent = self.connection.api_budget_percent
        raise ApiBudgetExhausted(
            ERR_BUDGET.format(used=usage.used, max=usage.max, percent=percent), code=CODE_BUDGET
        )

    def _over_budget(self, usage: ApiUsage | None) -> bool:
        if usage is None or not usage.max:
            return False
        return usage.used >= usage.max * self.connection.api_budget_percent / 100

    # -- the one place a request is made -------------------------------------------------

    def _request(
        self, call: Callable[[Salesforce], Any], *, budget: bool = True, idempotent: bool = True
    ) -> Any:
        """Run `call` (exactly one HTTP request) with budget, re-authentication and retries.

        A call that is not `idempotent` is retried only when Salesforce surely did not run it
        (an error answer, or no connection made): a timed-out write may still land, and
        sending it again would write twice."""
        if self._sf is None:
            self.authenticate()
        retries = int(settings.STAGEMAP_SALESFORCE_RETRIES)
        attempt = 0
        reauthenticated = False
        try:
            while True:
                if budget:
                    self._check_budget()
                self.api_calls += 1
                try:
                    return call(self._sf)
                except sf_exceptions.SalesforceExpiredSession:
                    if reauthenticated:
                        self._mark_auth_failed(ERR_SESSION_REJECTED)
                        raise AuthenticationFailed(
                            ERR_SESSION_REJECTED, code="INVALID_SESSION_ID", status=401
                        ) from None
                    reauthenticated = True
                    self.authenticate()
                    continue
                except Exception as exc:
                    host = urlparse(self._token.instance_url).hostname if self._token else ""
                    reason, status = transient_failure(
                        exc, secrets=self._secret_values(), host=host, idempotent=idempotent
                    )
                attempt += 1
                if attempt > retries:
                    raise TransientError(
                        ERR_TRANSIENT.format(attempts=attempt, reason=reason),
                        code="TRANSIENT",
                        status=status,
                    ) from None
                logger.warning(
                    "connection %s: %s, retry %d of %d", self.connection.name, reason, attempt,
                    retries,
                )
                _backoff(attempt)
        finally:
            if not self._usage_saved_by_caller:
                self.save_usage()

    def _restful(
        self, path: str, *, budget: bool = True, idempotent: bool = True, **kwargs: Any
    ) -> Any:
        def call(sf: Salesforce) -> Any:
            try:
                return sf.restful(path, **kwargs)
            except (TypeError, AttributeError, KeyError):
                # simple-salesforce takes len() of the parsed body: JSON null or a number fails.
                raise _malformed(WHAT_CALL.format(path=path), DETAIL_SHAPE) from None

        return self._request(call, budget=budget, idempotent=idempotent)

    def _get_absolute(self, url: str) -> Any:
        """GET a full URL on Salesforce (identity URL) with the session's bearer token."""

        def call(sf: Salesforce) -> Any:
            response = sf.session.get(
                url, headers={"Authorization": "Bearer " + sf.session_id,
                              "Accept": "application/json"}
            )
            if response.status_code >= 300:
                from simple_salesforce.util import exception_handler

                exception_handler(response, name="identity")
            return response.json()

        return self._request(call, budget=False)

    # -- operations ----------------------------------------------------------------------

    def identity(self) -> OrgIdentity:
        """Who we are in which org, and the org's API usage (not refused by the budget)."""
        if self._sf is None:
            self.authenticate()
        usage = self.limits(budget=False)
        id_url = self._token.id_url if self._token else ""
        org_id, user_id, username = self.connection.org_id, self.connection.user_id, ""
        found = _ID_URL.search(id_url)
        if found:
            org_id, user_id = found["org"], found["user"]
        info: dict = {}
        try:
            if id_url:
                info = self._get_absolute(id_url)
            else:
                info = self._get_absolute(self._token.instance_url + "/services/oauth2/userinfo")
        except (AuthenticationFailed, ApiLimitExceeded):
            raise
        except SalesforceError:
            info = {}
        if isinstance(info, dict):
            # Ids only when shaped as ids; the user name is Salesforce text like any other.
            org_id = _identity_id(info.get("organization_id")) or org_id
            user_id = _identity_id(info.get("user_id")) or user_id
            name = info.get("username") or info.get("preferred_username") or ""
            username = self.redact(name)[:MAX_FIELD_TEXT] if isinstance(name, str) else ""
        if not org_id and self._token and "!" in self._token.access_token:
            # A Salesforce access token starts with the 15-character org id and "!".
            org_id = self._token.access_token.split("!", 1)[0][:15]
        return OrgIdentity(
            org_id=org_id,
            user_id=user_id,
            username=username or self.connection.username,
            instance_url=self._token.instance_url if self._token else "",
            api_usage=usage,
        )

    def describe(self, object_name: str) -> ObjectDescribe:
        body = self._restful(f"sobjects/{_check_api_name(object_name)}/describe")
        return _object_describe(body, object_name)

    def query(
        self, soql: str, *, include_deleted: bool = False, batch_size: int = QUERY_PAGE_SIZE
    ) -> Iterator[list[dict]]:
        """Yield one list of records per page, following nextRecordsUrl lazily.

        A page that repeats, or more pages or records than the first page's totalSize allows,
        stops the query with a SalesforceError before anything of that page is yielded.
        """
        size = max(200, min(int(batch_size), QUERY_PAGE_SIZE))
        headers = {"Sforce-Query-Options": f"batchSize={size}"}

        def first(sf: Salesforce) -> dict:
            url = sf.base_url + ("queryAll/" if include_deleted else "query/")
            return _get_page(sf, url, headers, params={"q": soql}, name="query")

        keyed = _keyed_fields(soql)
        page = self._request(first)
        total = _query_total(page)
        max_pages = math.ceil(total / QUERY_MIN_PAGE_SIZE) + QUERY_PAGE_SLACK
        seen: set[str] = set()
        fetched = 0
        while True:
            fetched += len(page["records"])
            if fetched > total:
                raise SalesforceError(
                    ERR_QUERY_OVERFLOW.format(what="records", total=total), code=CODE_MALFORMED
                )
            _check_keyed(page["records"], keyed)
            yield page["records"]
            next_url = _next_records_url(page)
            if next_url is None:
                return
            if next_url in seen:
                raise SalesforceError(ERR_QUERY_REPEATED, code=CODE_MALFORMED)
            seen.add(next_url)
            if len(seen) + 1 > max_pages:
                raise SalesforceError(
                    ERR_QUERY_OVERFLOW.format(what="pages", total=total), code=CODE_MALFORMED
                )
            page = self._request(
                lambda sf, url=next_url: _get_page(
                    sf, f"https://{sf.sf_instance}{url}", headers, name="query_more"
                )
            )

    def updated_ids(self, object_name: str, start: datetime, end: datetime) -> UpdatedIds:
        body = self._restful(
            f"sobjects/{_check_api_name(object_name)}/updated/",
            params={"start": _iso(start), "end": _iso(end)},
        )
        return _updated_ids(body, object_name, end)

    def deleted_records(self, object_name: str, start: datetime, end: datetime) -> DeletedRecords:
        body = self._restful(
            f"sobjects/{_check_api_name(object_name)}/deleted/",
            params={"start": _iso(start), "end": _iso(end)},
        )
        return _deleted_records(body, object_name, end)

    def update_records(self, object_name: str, records: list[dict]) -> list[RecordUpdateResult]:
        """PATCH composite/sobjects, 200 records a call, allOrNone false; results in order.

        Each record is {"Id": ..., "<Field>": value, ...}. An answer that is not one result
        per record sent raises SalesforceError (CODE_MALFORMED): no result is taken from it.
        """
        _check_api_name(object_name)
        what = WHAT_UPDATE.format(object=object_name)
        results: list[RecordUpdateResult] = []
        for offset in range(0, len(records), COLLECTION_BATCH_SIZE):
            chunk = records[offset : offset + COLLECTION_BATCH_SIZE]
            body = {
                "allOrNone": False,
                "records": [
                    {
                        "attributes": {"type": object_name},
                        "id": record["Id"],
                        **{k: v for k, v in record.items() if k not in ("Id", "attributes")},
                    }
                    for record in chunk
                ],
            }
            answer = self._restful(
                "composite/sobjects", method="PATCH", json=body, idempotent=False
            )
            if answer is None:
                raise SalesforceError(ERR_EMPTY_RESULT, code="EMPTY_RESPONSE")
            answer = _expect(answer, list, what, "the answer")
            if len(answer) != len(chunk):
                raise SalesforceError(
                    ERR_RESULT_COUNT.format(got=len(answer), sent=len(chunk)),
                    code=CODE_MALFORMED,
                )
            with _parsing(what):
                results += [
                    _update_result(_expect(raw, dict, what, "a result"), record, what,
                                   self._secret_values)
                    for record, raw in zip(chunk, answer, strict=True)
                ]
        return results



    def limits(self, *, budget: bool = True) -> ApiUsage:
        usage = _limits_usage(self._restful("limits/", budget=budget))
        self._usage, self._usage_at, self._usage_dirty = usage, timezone.now(), True
        if not self._usage_saved_by_caller:
            self.save_usage()
        return usage

    def lead_statuses(self) -> list[LeadStatusInfo]:
        soql = (
            "SELECT Id, ApiName, MasterLabel, IsConverted, IsDefault, SortOrder "
            "FROM LeadStatus ORDER BY SortOrder"
        )
        with _parsing(WHAT_QUERY):
            return [
                LeadStatusInfo(
                    api_name=_row_text(row, "ApiName", "MasterLabel"),
                    label=_row_text(row, "MasterLabel", "ApiName"),
                    converted=bool(row.get("IsConverted")),
                    default=bool(row.get("IsDefault")),
                    sort_order=int(row.get("SortOrder") or 0),
                )
                for page in self.query(soql)
                for row in page
            ]

    def opportunity_stages(self) -> list[OpportunityStageInfo]:
        soql = (
            "SELECT Id, ApiName, MasterLabel, SortOrder, IsActive, IsClosed, IsWon, "
            "ForecastCategoryName, DefaultProbability FROM OpportunityStage ORDER BY SortOrder"
        )
        with _parsing(WHAT_QUERY):
            return [
                OpportunityStageInfo(
                    api_name=_row_text(row, "ApiName", "MasterLabel"),
                    label=_row_text(row, "MasterLabel", "ApiName"),
                    sort_order=int(row.get("SortOrder") or 0),
                    active=bool(row.get("IsActive")),
                    closed=bool(row.get("IsClosed")),
                    won=bool(row.get("IsWon")),
                    forecast_category=_row_text(row, "ForecastCategoryName"),
                    default_probability=(
                        float(row["DefaultProbability"])
                        if row.get("DefaultProbability") is not None
                        else None
                    ),
                )
                for page in self.query(soql)
                for row in page
            ]

    def picklist_values_by_record_type(
        self, object_name: str, record_type_id: str
    ) -> dict[str, tuple[PicklistEntry, ...]]:
        if not _RECORD_TYPE_ID.match(record_type_id or ""):
            raise ValueError(ERR_BAD_NAME.format(name=record_type_id))
        body = self._restful(
            f"ui-api/object-info/{_check_api_name(object_name)}/picklist-values/{record_type_id}"
        )
        return _record_type_picklists(body, object_name)

def client_for(connection, *, force_authenticate: bool = False) -> SalesforceClient:
    """An authenticated client for the connection (cached token, re-authenticates on 401).

    Paused connections raise ConnectionPaused; `force_authenticate` skips the cached token.
    """
    if connection.pk is not None:
        connection.refresh_from_db(
            fields=["status", "secrets_ciphertext", "token_ciphertext", "api_budget_percent",
                    "api_usage_used", "api_usage_max", "api_usage_at"]
        )
    if connection.is_paused:
        raise ConnectionPaused(ERR_PAUSED, code=CODE_PAUSED)
    try:
        client = SalesforceClient(connection)
        token = client._cached_token()
    except crypto.SecretsUnreadable:
        raise AuthenticationFailed(crypto.ERR_UNDECRYPTABLE, code="SECRETS_UNREADABLE") from None
    if force_authenticate and client.can_authenticate:
        token = None
    if token is None:
        client.authenticate()
    else:
        client._use(token)
    return client
