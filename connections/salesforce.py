"""The only module that talks to Salesforce: authentication, retries, budget and plain values.

Everything above this module calls `client_for(connection)` and the client's methods, and
catches the exceptions defined here. Records come back as plain dicts of field -> value with
Salesforce's `attributes` removed; datetime fields stay Salesforce strings, turned into aware
datetimes by `parse_datetime`.

Every text Salesforce sends back in an error (code, message, fields) passes through `redact`
here, before anything above can keep or show it; an answer not shaped as documented raises
SalesforceError with CODE_MALFORMED instead of a KeyError or TypeError further up.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlparse

import certifi
import jwt
import requests
from django.conf import settings
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce import exceptions as sf_exceptions
from simple_salesforce.util import exception_handler

from connections import crypto

logger = logging.getLogger(__name__)

MASTER_RECORD_TYPE_ID = "012000000000000AAA"
COLLECTION_BATCH_SIZE = 200
QUERY_PAGE_SIZE = 2000
# Salesforce never pages a query in fewer than 200 records (batchSize is clamped to 200..2000):
# with a little slack, that bounds how many pages a query's totalSize allows.
QUERY_MIN_PAGE_SIZE = 200
QUERY_PAGE_SLACK = 2


class SalesforceError(Exception):
    """A Salesforce call failed; `code` is Salesforce's error code, `message` has no secrets."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None, fields=()):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = tuple(fields)


class AuthenticationFailed(SalesforceError):
    """Credentials refused (invalid_grant, or 401 again after one re-authentication)."""


class ApiLimitExceeded(SalesforceError):
    """Salesforce answered REQUEST_LIMIT_EXCEEDED: stop cleanly, never sleep-and-retry."""


class ApiBudgetExhausted(SalesforceError):
    """stagemap's own share of the org's daily limit is spent; raised before the call."""


class TransientError(SalesforceError):
    """5xx, timeouts or dropped connections that outlived the bounded retries."""


class ConnectionPaused(SalesforceError):
    """The connection is paused by staff: no call is made."""


@dataclass(frozen=True)
class PicklistEntry:
    value: str
    label: str
    active: bool = True
    default: bool = False
    valid_for: str | None = None
    converted: bool = False  # only from the UI API / LeadStatus


@dataclass(frozen=True)
class FieldDescribe:
    name: str
    label: str
    type: str
    updateable: bool = False
    nillable: bool = True
    custom: bool = False
    restricted_picklist: bool = False
    length: int = 0
    picklist_values: tuple[PicklistEntry, ...] = ()

    @property
    def is_picklist(self) -> bool:
        return self.type in ("picklist", "multipicklist")


@dataclass(frozen=True)
class RecordTypeInfo:
    id: str
    name: str
    developer_name: str
    active: bool = True
    available: bool = True
    master: bool = False
    default: bool = False


@dataclass(frozen=True)
class ObjectDescribe:
    name: str
    label: str
    fields: dict[str, FieldDescribe] = field(default_factory=dict)
    record_types: tuple[RecordTypeInfo, ...] = ()

    def field(self, name: str) -> FieldDescribe | None:
        return self.fields.get(name)

    @property
    def picklist_fields(self) -> list[FieldDescribe]:
        return [f for f in self.fields.values() if f.is_picklist]


@dataclass(frozen=True)
class LeadStatusInfo:
    api_name: str
    label: str
    converted: bool
    default: bool
    sort_order: int


@dataclass(frozen=True)
class OpportunityStageInfo:
    api_name: str
    label: str
    sort_order: int
    active: bool
    closed: bool
    won: bool
    forecast_category: str
    default_probability: float | None


@dataclass(frozen=True)
class UpdatedIds:
    ids: list[str]
    latest_date_covered: datetime


@dataclass(frozen=True)
class DeletedRecord:
    id: str
    deleted_at: datetime


@dataclass(frozen=True)
class DeletedRecords:
    records: list[DeletedRecord]
    earliest_date_available: datetime | None
    latest_date_covered: datetime


@dataclass(frozen=True)
class RecordUpdateError:
    status_code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordUpdateResult:
    id: str
    success: bool
    errors: tuple[RecordUpdateError, ...] = ()


@dataclass(frozen=True)
class ApiUsage:
    used: int
    max: int


@dataclass(frozen=True)
class OrgIdentity:
    org_id: str
    user_id: str
    username: str
    instance_url: str
    api_usage: ApiUsage | None



# Messages people read (admin, commands, stored last_error); they never carry a secret.
ERR_PAUSED = "The connection is paused; resume it to call Salesforce."
ERR_MISSING_SECRET = "The connection has no {name} set."
ERR_MISSING_FIELD = "The connection has no {name} set."
ERR_BAD_PRIVATE_KEY = "The private key could not be read (expected an unencrypted PEM RSA key)."
ERR_AUTH_REFUSED = "Salesforce refused the credentials ({code}: {description})."
ERR_SESSION_REJECTED = (
    "Salesforce rejected the session again right after re-authenticating (INVALID_SESSION_ID)."
)
ERR_ACCESS_TOKEN_EXPIRED = (
    "The access token is expired or revoked (INVALID_SESSION_ID); set a new access token."
)
ERR_TOKEN_ENDPOINT = (
    "The login URL did not answer like a Salesforce token endpoint (HTTP {status}); "
    "check the login URL."
)
ERR_BUDGET = (
    "API budget spent: {used} of {max} daily API requests used, "
    "and this connection may use {percent}%."
)
ERR_LIMIT = "Salesforce refused the call: REQUEST_LIMIT_EXCEEDED ({message})."
ERR_TRANSIENT = "Salesforce did not answer after {attempts} attempts ({reason})."
ERR_TLS = (
    "The TLS certificate of {host} is not trusted; add its CA to STAGEMAP_SALESFORCE_CA_BUNDLE."
)
ERR_CA_BUNDLE_MISSING = "STAGEMAP_SALESFORCE_CA_BUNDLE points to a file that does not exist."
ERR_NOT_JSON = "Salesforce answered with something that is not JSON (HTTP {status})."
ERR_BAD_NAME = "Not a Salesforce API name: {name!r}."
ERR_EMPTY_RESULT = "Salesforce answered an update with an empty body."
ERR_MALFORMED = "Salesforce sent a malformed answer to {what}: {detail}."
ERR_RESULT_COUNT = (
    "Salesforce answered {got} results for the {sent} records of one collection call; "
    "none of them is taken as written."
)
ERR_QUERY_REPEATED = (
    "Salesforce sent the same nextRecordsUrl twice; the query stopped instead of reading "
    "that page again."
)
ERR_QUERY_OVERFLOW = (
    "Salesforce sent more {what} than the query's totalSize of {total} allows; the query stopped."
)
ERR_QUERY_NEXT_URL = (
    "Salesforce sent a nextRecordsUrl that is not a /services/data/ path; the query stopped."
)
DETAIL_TYPE = "{item} is {got} where {expected} belongs"
DETAIL_NO_VALUE = "a picklist entry of {field} has no value"
DETAIL_SHAPE = "its content is not shaped as documented"
WHAT_TOKEN = "the token request"
WHAT_CALL = "the call to {path}"
WHAT_DESCRIBE = "the describe of {object}"
WHAT_QUERY = "a query"
WHAT_UPDATED = "the updated ids of {object}"
WHAT_DELETED = "the deleted records of {object}"
WHAT_UPDATE = "an update of {object} records"
WHAT_LIMITS = "the limits call"
WHAT_PICKLISTS = "the picklist values of {object} for a record type"

CODE_PAUSED = "CONNECTION_PAUSED"
CODE_BUDGET = "API_BUDGET_EXHAUSTED"
CODE_LIMIT = "REQUEST_LIMIT_EXCEEDED"
CODE_TLS = "TLS_UNTRUSTED"
CODE_MALFORMED = "MALFORMED_RESPONSE"
# Stands in for an error code that is not a short identifier: a code never carries text.
CODE_UNRECOGNISED = "UNRECOGNISED_ERROR_CODE"
REDACTED = "[redacted]"
MAX_ERROR_TEXT = 1000
MAX_ERROR_FIELDS = 50
MAX_FIELD_TEXT = 255

# A reading older than this does not stop a run on its own: one `limits` call (which the
# budget never refuses) reads the usage afresh first. Salesforce's window is a rolling 24 h.
USAGE_RECHECK_AFTER = timedelta(minutes=5)
MAX_BACKOFF_SECONDS = 60.0
JWT_LIFETIME_SECONDS = 180
TOKEN_PATH = "/services/oauth2/token"

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RECORD_TYPE_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_ID_URL = re.compile(r"/id/(?P<org>[A-Za-z0-9]{15,18})/(?P<user>[A-Za-z0-9]{15,18})/?$")
_LIMIT_INFO = re.compile(r"api-usage=(?P<used>\d+)/(?P<max>\d+)")
_BEARER_LIKE = re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]+")
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_SELECTED = re.compile(r"^\s*SELECT\s+(?P<fields>.*?)\s+FROM\s", re.IGNORECASE | re.DOTALL)
# Fields the callers of query() read by key and parse: when selected, each record has them.
_KEYED_FIELDS = ("Id", "SystemModstamp")

_sleep = time.sleep


# --- TLS ------------------------------------------------------------------------------------

_bundle_lock = threading.Lock()
_bundle_cache: dict[tuple, str] = {}


def _remove_bundles() -> None:
    for path in _bundle_cache.values():
        Path(path).unlink(missing_ok=True)


atexit.register(_remove_bundles)


def _forced_verify() -> str | None:
    """The CA bundle every Salesforce request must use, or None to keep requests' own choice.

    With an extra CA configured, it is appended to certifi's roots and to any bundle the
    environment points requests at, so neither real orgs nor a corporate proxy stop working.
    """
    extra = getattr(settings, "STAGEMAP_SALESFORCE_CA_BUNDLE", "") or ""
    if not extra:
        return None
    if not os.path.isfile(extra):
        raise SalesforceError(ERR_CA_BUNDLE_MISSING, code=CODE_TLS)
    sources = [certifi.where()]
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        candidate = os.environ.get(variable, "")
        if candidate and os.path.isfile(candidate) and candidate not in sources:
            sources.append(candidate)
    sources.append(extra)
    key = tuple((source, os.path.getmtime(source)) for source in sources)
    with _bundle_lock:
        cached = _bundle_cache.get(key)
        if cached and os.path.isfile(cached):
            return cached
        handle = tempfile.NamedTemporaryFile(
            "wb", prefix="stagemap-ca-", suffix=".pem", delete=False
        )
        with handle:
            for source in sources:
                handle.write(Path(source).read_bytes().rstrip(b"\n") + b"\n")
        _bundle_cache[key] = handle.name
        return handle.name


class TrustingAdapter(HTTPAdapter):
    """Forces our CA bundle (requests lets REQUESTS_CA_BUNDLE override Session.verify) and a
    default timeout; certificate checks are never turned off."""

    def __init__(self, *, verify: str | None, timeout: float, **kwargs: Any) -> None:
        self.forced_verify = verify
        self.default_timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if self.forced_verify is not None:
            verify = self.forced_verify
        elif verify is False:
            verify = True
        if timeout is None:
            timeout = self.default_timeout
        return super().send(
            request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
        )


def new_http_session() -> requests.Session:
    """A requests session for Salesforce: our CA trust, timeouts; environment proxies kept."""
    session = requests.Session()
    adapter = TrustingAdapter(
        verify=_forced_verify(), timeout=float(settings.STAGEMAP_SALESFORCE_TIMEOUT)
    )
    session.mount("https://", adapter)
    return session


# --- helpers --------------------------------------------------------------------------------


def redact(text: Any, *, secrets: Iterable[str] = ()) -> str:
    """Text that came from Salesforce, made safe to store, log, print and render.

    Every secret, as sent (plain or URL-encoded, any case; a multi-line secret also line by
    line), and anything shaped like a Salesforce session id (`00D...!...`) becomes
    [redacted]. Redacted before it is cut to MAX_ERROR_TEXT, so no secret is cut in half.
    """
    text = "" if text is None else str(text)
    variants: set[str] = set()
    for secret in secrets:
        secret = str(secret or "")
        for part in {secret, *(line.strip() for line in secret.splitlines())}:
            if len(part) >= 4 and (part == secret or len(part) >= 16):
                variants.update({part, quote_plus(part), quote(part, safe="")})
    if variants:
        pattern = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
        text = re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)
    return _BEARER_LIKE.sub(REDACTED, text)[:MAX_ERROR_TEXT]


def _error_code(raw: Any, secrets: Iterable[str]) -> str:
    """A Salesforce error code, redacted, and only if it is still a short identifier."""
    if raw is None or raw == "":
        return ""
    code = redact(raw, secrets=secrets)
    return code if _ERROR_CODE.fullmatch(code) else CODE_UNRECOGNISED


def _error_fields(raw: Any, secrets: Iterable[str]) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(
        redact(name, secrets=secrets)[:MAX_FIELD_TEXT]
        for name in raw[:MAX_ERROR_FIELDS]
        if name is not None
    )


def _basic_auth_values(auth: tuple | None) -> list[str]:
    """The HTTP Basic header value for (user, secret), as requests encodes it."""
    if not auth:
        return []
    values = []
    for encoding in ("latin-1", "utf-8"):
        try:
            raw = f"{auth[0]}:{auth[1]}".encode(encoding)
        except UnicodeEncodeError:
            continue
        values.append(base64.b64encode(raw).decode("ascii"))
    return values


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in ((dict, "an object"), (list, "an array"), (str, "a text"),
                       (int | float, "a number")):
        if isinstance(value, kind):
            return name
    return "something else"


def _malformed(what: str, detail: str) -> SalesforceError:
    return SalesforceError(ERR_MALFORMED.format(what=what, detail=detail), code=CODE_MALFORMED)


def _expect(value: Any, kind: type, what: str, item: str, *, optional: bool = False) -> Any:
    """`value` if it is a `kind` (None too, as the empty value, when optional)."""
    if value is None and optional:
        return kind()
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    expected = {dict: "an object", list: "an array", str: "a text"}.get(kind, kind.__name__)
    raise _malformed(what, DETAIL_TYPE.format(item=item, got=_kind(value), expected=expected))


@contextmanager
def _parsing(what: str) -> Iterator[None]:
    """Parsing errors in an answer become a SalesforceError naming the call."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise _malformed(what, DETAIL_SHAPE) from None


def _shown_name(name: str) -> str:
    """A name from Salesforce for a message: only if it is an API name (it may be anything)."""
    return name if _API_NAME.match(name) else "a field"


def _entry_value(entry: Any, what: str, field_name: str) -> str:
    """The API name of a picklist entry; an entry without one is a malformed answer."""
    value = _expect(entry, dict, what, "a picklist entry").get("value")
    if not isinstance(value, str) or not value:
        raise _malformed(what, DETAIL_NO_VALUE.format(field=_shown_name(field_name)))
    return value


def _field_describe(raw: dict, what: str) -> FieldDescribe:
    name = _expect(raw.get("name"), str, what, "a field name")
    if not name:
        raise _malformed(what, DETAIL_TYPE.format(item="a field name", got="empty",
                                                  expected="a name"))
    entries = []
    for entry in _expect(raw.get("picklistValues"), list, what, "picklistValues", optional=True):
        value = _entry_value(entry, what, name)
        entries.append(
            PicklistEntry(
                value=value,
                label=_expect(entry.get("label"), str, what, "a label", optional=True) or value,
                active=bool(entry.get("active", True)),
                default=bool(entry.get("defaultValue")),
                valid_for=_expect(entry.get("validFor"), str, what, "validFor", optional=True)
                or None,
            )
        )
    return FieldDescribe(
        name=name,
        label=_expect(raw.get("label"), str, what, "a field label", optional=True) or name,
        type=_expect(raw.get("type"), str, what, "a field type", optional=True),
        updateable=bool(raw.get("updateable")),
        nillable=bool(raw.get("nillable", True)),
        custom=bool(raw.get("custom")),
        restricted_picklist=bool(raw.get("restrictedPicklist")),
        length=int(raw.get("length") or 0),
        picklist_values=tuple(entries),
    )


def _row_text(row: dict, *names: str) -> str:
    """The first of the row's fields that holds a text."""
    return next((v for n in names if isinstance(v := row.get(n), str) and v), "")


def _identity_id(value: Any) -> str:
    return value if isinstance(value, str) and _SALESFORCE_ID.fullmatch(value) else ""


def _check_api_name(name: str) -> str:
    if not isinstance(name, str) or not _API_NAME.match(name):
        raise ValueError(ERR_BAD_NAME.format(name=name))
    return name


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError("a timezone-aware datetime is required, got a naive one")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _aware_utc(value).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _strip_attributes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_attributes(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [_strip_attributes(v) for v in value]
    return value


def _get_page(sf: Salesforce, url: str, headers: dict, *, name: str, params=None) -> dict:
    """GET one query page through the session and parse it into plain dicts.

    simple-salesforce's query() builds an OrderedDict per record, which costs more than the
    request; plain json.loads and a flat removal of `attributes` keep the same result.
    """
    response = sf.session.get(url, params=params, headers={**sf.headers, **headers})
    if response.status_code >= 300:
        exception_handler(response, name=name)
    body = response.content
    page = _expect(json.loads(body), dict, WHAT_QUERY, "the page")
    records = page["records"] = _expect(page.get("records"), list, WHAT_QUERY, "records",
                                        optional=True)
    stripped = 0
    for record in records:
        if _expect(record, dict, WHAT_QUERY, "a record").pop("attributes", None) is not None:
            stripped += 1
    # Relationship fields and subqueries carry their own `attributes`: strip those recursively.
    if body.count(b'"attributes"') != stripped:
        page["records"] = [_strip_attributes(record) for record in records]
    return page


def _api_version(connection) -> str:
    version = (connection.api_version or settings.STAGEMAP_SALESFORCE_API_VERSION).strip()
    return version[1:] if version[:1] in ("v", "V") else version


def _parse_error(content: Any, secrets: Iterable[str]) -> tuple[str, str, tuple[str, ...]]:
    """Code, message and fields of a Salesforce error body, all redacted."""
    secrets = list(secrets)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        entry = content[0]
        raw = (entry.get("errorCode") or entry.get("statusCode"), entry.get("message"),
               entry.get("fields"))
    elif isinstance(content, dict):
        raw = (content.get("errorCode") or content.get("error"),
               content.get("message") or content.get("error_description"), None)
    else:
        return "", "", ()
    code, message, fields = raw
    return (
        _error_code(code, secrets),
        redact(message or "", secrets=secrets),
        _error_fields(fields, secrets),
    )


# --- OAuth ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    access_token: str
    instance_url: str
    id_url: str = ""

    def to_json(self) -> dict:
        return {
            "access_token": self.access_token,
            "instance_url": self.instance_url,
            "id_url": self.id_url,
        }


def _jwt_audience(connection) -> str:
    host = (urlparse(connection.login_url).hostname or "").lower()
    # Salesforce expects the generic login host as audience, also for My Domain logins.
    if host.endswith(".salesforce.com") or host.endswith(".force.com"):
        if host not in ("login.salesforce.com", "test.salesforce.com"):
            sandbox = connection.environment == "sandbox"
            return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"
    return connection.login_url.rstrip("/")


@sensitive_variables()
def _jwt_assertion(connection, private_key: str) -> str:
    claims = {
        "iss": connection.consumer_key,
        "sub": connection.username,
        "aud": _jwt_audience(connection),
        "exp": int(time.time()) + JWT_LIFETIME_SECONDS,
    }
    try:
        return jwt.encode(claims, private_key, algorithm="RS256")
    except Exception:  # noqa: BLE001 - any key parsing failure; its text may quote the key
        raise AuthenticationFailed(ERR_BAD_PRIVATE_KEY, code="INVALID_PRIVATE_KEY") from None


def _require(value: str, name: str, message: str = ERR_MISSING_SECRET) -> str:
    if not value:
        raise AuthenticationFailed(message.format(name=name), code="MISSING_CREDENTIALS")
    return value


@sensitive_variables()
def _token_request(connection, secrets: dict) -> tuple[dict, tuple | None]:
    """The token endpoint's form and HTTP basic auth for the connection's auth method."""
    method = connection.auth_method
    if method == "jwt":
        key = _require(secrets.get("private_key", ""), "private key")
        _require(connection.consumer_key, "consumer key", ERR_MISSING_FIELD)
        _require(connection.username, "username", ERR_MISSING_FIELD)
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": _jwt_assertion(connection, key),
        }
        return form, None
    if method == "client-credentials":
        _require(connection.consumer_key, "consumer key", ERR_MISSING_FIELD)
        secret = _require(secrets.get("consumer_secret", ""), "consumer secret")
        return {"grant_type": "client_credentials"}, (connection.consumer_key, secret)
    if method == "password":
        _require(connection.consumer_key, "consumer key", ERR_MISSING_FIELD)
        _require(connection.username, "username", ERR_MISSING_FIELD)
        form = {
            "grant_type": "password",
            "client_id": connection.consumer_key,
            "client_secret": _require(secrets.get("consumer_secret", ""), "consumer secret"),
            "username": connection.username,
            "password": _require(secrets.get("password", ""), "password")
            + secrets.get("security_token", ""),
        }
        return form, None
    if method == "access-token":
        refresh = secrets.get("refresh_token", "")
        if not (refresh and connection.consumer_key):
            raise AuthenticationFailed(ERR_ACCESS_TOKEN_EXPIRED, code="INVALID_SESSION_ID")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": connection.consumer_key,
        }
        if secrets.get("consumer_secret"):
            form["client_secret"] = secrets["consumer_secret"]
        return form, None
    raise AuthenticationFailed(f"Unknown auth method {method!r}.", code="UNKNOWN_AUTH_METHOD")


def _backoff(attempt: int) -> None:
    delay = min(float(settings.STAGEMAP_SALESFORCE_BACKOFF) * 2 ** (attempt - 1),
                MAX_BACKOFF_SECONDS)
    if delay > 0:
        _sleep(delay)


@sensitive_variables()
def _obtain_token(
    connection, secrets: dict, session: requests.Session, *, sent: list[str] | None = None
) -> _Token:
    """POST the connection's login URL's token endpoint (never simple-salesforce's login
    helpers: they only know *.salesforce.com).

    `sent` collects every secret the request carried (the JWT assertion, the Basic header,
    a refresh token we got back), so the client can redact them from later answers too.
    """
    form, auth = _token_request(connection, secrets)
    url = connection.login_url.rstrip("/") + TOKEN_PATH
    host = urlparse(url).hostname or ""
    retries = int(settings.STAGEMAP_SALESFORCE_RETRIES)
    carried = [form.get("assertion", ""), *_basic_auth_values(auth)]
    if sent is not None:
        sent.extend(v for v in carried if v)
    secret_values = [str(v) for v in secrets.values()] + carried
    attempt = 0
    while True:
        reason = ""
        try:
            response = session.post(
                url, data=form, auth=auth, headers={"Accept": "application/json"}
            )
        except requests.exceptions.SSLError:
            raise SalesforceError(ERR_TLS.format(host=host), code=CODE_TLS) from None
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            reason = type(exc).__name__
        else:
            if response.status_code < 500:
                break
            reason = f"HTTP {response.status_code}"
        attempt += 1
        if attempt > retries:
            raise TransientError(
                ERR_TRANSIENT.format(attempts=attempt, reason=reason), code="TOKEN_ENDPOINT"
            ) from None
        logger.warning(
            "connection %s: token endpoint %s, retry %d of %d", connection.name, reason,
            attempt, retries,
        )
        _backoff(attempt)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
        access_token = body["access_token"]
        instance_url = body.get("instance_url") or connection.instance_url
        id_url = body.get("id") or ""
        if sent is not None:
            sent.extend(v for v in (access_token, body.get("refresh_token")) if isinstance(v, str))
        for item, value in (("access_token", access_token), ("instance_url", instance_url),
                            ("id", id_url)):
            _expect(value, str, WHAT_TOKEN, item)
        # The token goes wherever instance_url points: never anywhere but https.
        if not instance_url.lower().startswith("https://"):
            raise _malformed(WHAT_TOKEN, DETAIL_TYPE.format(
                item="instance_url", got="not an https URL", expected="an https URL"))
        return _Token(access_token=access_token, instance_url=instance_url.rstrip("/"),
                      id_url=id_url)
    if isinstance(body, dict) and body.get("error"):
        code = _error_code(body.get("error"), secret_values)
        description = redact(body.get("error_description") or "", secrets=secret_values)
        raise AuthenticationFailed(
            ERR_AUTH_REFUSED.format(code=code, description=description),
            code=code,
            status=response.status_code,
        )
    raise SalesforceError(
        ERR_TOKEN_ENDPOINT.format(status=response.status_code),
        code="TOKEN_ENDPOINT",
        status=response.status_code,
    )


# --- the client -----------------------------------------------------------------------------


def _connection_model():
    from connections.models import Connection

    return Connection


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

    def _save(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.connection, name, value)
        if self.connection.pk is not None:
            _connection_model().objects.filter(pk=self.connection.pk).update(**fields)

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
        now = timezone.now()
        logger.warning("connection %s: authentication failed: %s", self.connection.name, message)
        fields = {"last_error": message, "last_error_at": now, "token_ciphertext": ""}
        if self.connection.status != "paused":
            fields["status"] = "auth_failed"
        self._save(**fields)

    def authenticate(self) -> None:
        """Obtain a fresh token from the login URL and cache it (encrypted)."""
        try:
            token = _obtain_token(
                self.connection, self._secrets, self._session, sent=self._sent_secrets
            )
        except AuthenticationFailed as exc:
            self._mark_auth_failed(exc.message)
            raise
        now = timezone.now()
        fields: dict[str, Any] = {
            "token_ciphertext": crypto.encrypt_json(token.to_json()),
            "token_obtained_at": now,
            "instance_url": token.instance_url,
            "last_connected_at": now,
        }
        ids = _ID_URL.search(token.id_url or "")
        if ids:
            fields.update(org_id=ids["org"], user_id=ids["user"])
        if self.connection.status == "auth_failed":
            fields.update(status="ok", last_error="", last_error_at=None)
        self._save(**fields)
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
            self._save(
                api_usage_used=self._usage.used,
                api_usage_max=self._usage.max,
                api_usage_at=self._usage_at,
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

    def _error(self, exc: sf_exceptions.SalesforceError) -> SalesforceError | None:
        """Our exception for a Salesforce error response, or None when it is transient."""
        status = getattr(exc, "status", None)
        code, message, fields = _parse_error(getattr(exc, "content", None), self._secret_values())
        if code == CODE_LIMIT:
            return ApiLimitExceeded(
                ERR_LIMIT.format(message=message), code=code, status=status, fields=fields
            )
        if status is not None and status >= 500:
            return None
        if not code:
            code = {404: "NOT_FOUND"}.get(status, f"HTTP_{status}")
        text = f"{code}: {message}" if message else code
        return SalesforceError(text, code=code, status=status, fields=fields)

    def _request(self, call: Callable[[Salesforce], Any], *, budget: bool = True) -> Any:
        """Run `call` (exactly one HTTP request) with budget, re-authentication and retries."""
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
                status = None
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
                except sf_exceptions.SalesforceError as exc:
                    error = self._error(exc)
                    if error is not None:
                        raise error from None
                    status = exc.status
                    code, _, _ = _parse_error(exc.content, self._secret_values())
                    reason = f"HTTP {status} {code}".strip()
                except requests.exceptions.SSLError:
                    host = urlparse(self._token.instance_url).hostname if self._token else ""
                    raise SalesforceError(ERR_TLS.format(host=host), code=CODE_TLS) from None
                except (
                    requests.exceptions.ConnectionError,
                    requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                ) as exc:
                    reason = type(exc).__name__
                except ValueError:
                    raise SalesforceError(
                        ERR_NOT_JSON.format(status="?"), code="NOT_JSON"
                    ) from None
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

    def _restful(self, path: str, *, budget: bool = True, **kwargs: Any) -> Any:
        def call(sf: Salesforce) -> Any:
            try:
                return sf.restful(path, **kwargs)
            except (TypeError, AttributeError, KeyError):
                # simple-salesforce takes len() of the parsed body: JSON null or a number fails.
                raise _malformed(WHAT_CALL.format(path=path), DETAIL_SHAPE) from None

        return self._request(call, budget=budget)

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
        what = WHAT_DESCRIBE.format(object=object_name)
        with _parsing(what):
            body = _expect(body, dict, what, "the answer")
            fields = {}
            for raw in _expect(body.get("fields"), list, what, "fields", optional=True):
                field_describe = _field_describe(_expect(raw, dict, what, "a field"), what)
                fields[field_describe.name] = field_describe
            record_types = tuple(
                RecordTypeInfo(
                    id=_expect(raw.get("recordTypeId"), str, what, "a recordTypeId"),
                    name=_expect(raw.get("name"), str, what, "a record type name", optional=True),
                    developer_name=_expect(
                        raw.get("developerName"), str, what, "a developerName", optional=True
                    ),
                    active=bool(raw.get("active", True)),
                    available=bool(raw.get("available", True)),
                    master=bool(raw.get("master")),
                    default=bool(raw.get("defaultRecordTypeMapping")),
                )
                for raw in (
                    _expect(entry, dict, what, "a record type")
                    for entry in _expect(
                        body.get("recordTypeInfos"), list, what, "recordTypeInfos", optional=True
                    )
                )
            )
            return ObjectDescribe(
                name=_expect(body.get("name"), str, what, "name", optional=True) or object_name,
                label=_expect(body.get("label"), str, what, "label", optional=True)
                or object_name,
                fields=fields,
                record_types=record_types,
            )

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

        selected = _SELECTED.match(soql)
        names = {n.strip() for n in selected["fields"].split(",")} if selected else set()
        keyed = [name for name in _KEYED_FIELDS if name in names]
        page = self._request(first)
        total = page.get("totalSize")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise _malformed(WHAT_QUERY, DETAIL_TYPE.format(
                item="totalSize", got=_kind(total), expected="a count"))
        max_pages = math.ceil(total / QUERY_MIN_PAGE_SIZE) + QUERY_PAGE_SLACK
        seen: set[str] = set()
        fetched = 0
        while True:
            fetched += len(page["records"])
            if fetched > total:
                raise SalesforceError(
                    ERR_QUERY_OVERFLOW.format(what="records", total=total), code=CODE_MALFORMED
                )
            for record in page["records"] if keyed else ():
                for name in keyed:
                    if not isinstance(record.get(name), str):
                        raise _malformed(WHAT_QUERY, DETAIL_TYPE.format(
                            item=f"a record's {name}", got=_kind(record.get(name)),
                            expected="a text"))
            yield page["records"]
            next_url = page.get("nextRecordsUrl")
            done = page.get("done", True)
            if not isinstance(done, bool):
                raise _malformed(WHAT_QUERY, DETAIL_TYPE.format(
                    item="done", got=_kind(done), expected="a boolean"))
            if done or not next_url:
                return
            # The URL is appended to the instance: only a path there, never another host.
            if not isinstance(next_url, str) or not next_url.startswith("/services/data/"):
                raise SalesforceError(ERR_QUERY_NEXT_URL, code=CODE_MALFORMED)
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
        what = WHAT_UPDATED.format(object=object_name)
        with _parsing(what):
            body = _expect(body, dict, what, "the answer")
            ids = _expect(body.get("ids"), list, what, "ids", optional=True)
            return UpdatedIds(
                ids=[_expect(record_id, str, what, "an id") for record_id in ids],
                latest_date_covered=parse_datetime(body.get("latestDateCovered"))
                or _aware_utc(end),
            )

    def deleted_records(self, object_name: str, start: datetime, end: datetime) -> DeletedRecords:
        body = self._restful(
            f"sobjects/{_check_api_name(object_name)}/deleted/",
            params={"start": _iso(start), "end": _iso(end)},
        )
        what = WHAT_DELETED.format(object=object_name)
        with _parsing(what):
            body = _expect(body, dict, what, "the answer")
            entries = _expect(body.get("deletedRecords"), list, what, "deletedRecords",
                              optional=True)
            return DeletedRecords(
                records=[
                    DeletedRecord(
                        id=_expect(raw.get("id"), str, what, "an id"),
                        deleted_at=parse_datetime(raw.get("deletedDate")),
                    )
                    for raw in (_expect(e, dict, what, "a deleted record") for e in entries)
                ],
                earliest_date_available=parse_datetime(body.get("earliestDateAvailable")),
                latest_date_covered=parse_datetime(body.get("latestDateCovered"))
                or _aware_utc(end),
            )

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
            answer = self._restful("composite/sobjects", method="PATCH", json=body)
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
                    self._update_result(_expect(raw, dict, what, "a result"), record, what)
                    for record, raw in zip(chunk, answer, strict=True)
                ]
        return results

    def _update_result(self, raw: dict, record: dict, what: str) -> RecordUpdateResult:
        success = raw.get("success")
        if not isinstance(success, bool):
            raise _malformed(what, DETAIL_TYPE.format(
                item="success", got=_kind(success), expected="a boolean"))
        raw_errors = _expect(raw.get("errors"), list, what, "errors", optional=True)
        secrets = self._secret_values() if raw_errors else []
        errors = []
        for err in raw_errors:
            err = _expect(err, dict, what, "an error")
            errors.append(
                RecordUpdateError(
                    status_code=_error_code(err.get("statusCode") or err.get("errorCode"),
                                            secrets),
                    message=redact(err.get("message") or "", secrets=secrets),
                    fields=_error_fields(err.get("fields"), secrets),
                )
            )
        return RecordUpdateResult(
            id=_expect(raw.get("id"), str, what, "an id", optional=True) or record["Id"],
            success=success,
            errors=tuple(errors),
        )

    def limits(self, *, budget: bool = True) -> ApiUsage:
        body = self._restful("limits/", budget=budget)
        with _parsing(WHAT_LIMITS):
            body = _expect(body, dict, WHAT_LIMITS, "the answer")
            daily = _expect(body.get("DailyApiRequests"), dict, WHAT_LIMITS, "DailyApiRequests",
                            optional=True)
            maximum = int(daily.get("Max") or 0)
            usage = ApiUsage(used=maximum - int(daily.get("Remaining") or 0), max=maximum)
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
        what = WHAT_PICKLISTS.format(object=object_name)
        with _parsing(what):
            body = _expect(body, dict, what, "the answer")
            fields = _expect(body.get("picklistFieldValues", body), dict, what,
                             "picklistFieldValues")
            result: dict[str, tuple[PicklistEntry, ...]] = {}
            for name, raw in fields.items():
                if not isinstance(raw, dict) or "values" not in raw:
                    continue
                default = raw.get("defaultValue") or {}
                default_value = default.get("value") if isinstance(default, dict) else default
                entries = []
                for entry in _expect(raw.get("values"), list, what, "values", optional=True):
                    value = _entry_value(entry, what, name)
                    attributes = entry.get("attributes") or {}
                    valid_for = entry.get("validFor")
                    entries.append(
                        PicklistEntry(
                            value=value,
                            label=_expect(entry.get("label"), str, what, "a label",
                                          optional=True) or value,
                            active=True,
                            default=value == default_value,
                            valid_for=(
                                ",".join(str(i) for i in valid_for) if valid_for else None
                            ),
                            converted=bool(attributes.get("converted")),
                        )
                    )
                result[name] = tuple(entries)
            return result


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


def soql_quote(value: str) -> str:
    """A SOQL string literal, quotes and backslashes escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def soql_datetime(value: datetime) -> str:
    """An unquoted UTC SOQL datetime literal; naive datetimes are refused."""
    value = _aware_utc(value)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str | None) -> datetime | None:
    """Salesforce's `2026-01-05T10:11:12.000+0000` as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
