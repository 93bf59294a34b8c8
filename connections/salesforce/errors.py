"""What can go wrong talking to Salesforce: the exceptions, codes and messages, and redaction.

Every text Salesforce sends back in an error (code, message, fields) passes through `redact`
before anything above can keep or show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus


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
ERR_OUTCOME_UNKNOWN = (
    "Salesforce did not answer the update ({reason}), so it may have been applied; it is not "
    "sent again blindly: the next push reads the records' values first."
)
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
DETAIL_NUL = "a text holds a NUL character, which Salesforce text never does"
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

_BEARER_LIKE = re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]+")
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def redact(text: Any, *, secrets: Iterable[str] = ()) -> str:
    """Text that came from Salesforce, made safe to store, log, print and render.

    Every secret, as sent (plain or URL-encoded, any case; a multi-line secret also line by
    line), and anything shaped like a Salesforce session id (`00D...!...`) becomes
    [redacted]. Redacted before it is cut to MAX_ERROR_TEXT, so no secret is cut in half.
    """
    # PostgreSQL cannot store NUL, and Salesforce text never holds one.
    text = "" if text is None else str(text).replace("\x00", "")
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
