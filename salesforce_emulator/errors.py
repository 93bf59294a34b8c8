"""Salesforce REST error bodies: always a JSON array of {message, errorCode, fields?}."""

from __future__ import annotations

from typing import Any

DEFAULT_CODES = {400: "BAD_REQUEST", 401: "INVALID_SESSION_ID", 403: "FORBIDDEN",
                 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 429: "REQUEST_LIMIT_EXCEEDED",
                 500: "UNKNOWN_EXCEPTION", 502: "BAD_GATEWAY", 503: "SERVER_UNAVAILABLE",
                 504: "GATEWAY_TIMEOUT"}
NOT_FOUND_MESSAGE = "The requested resource does not exist"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 fields: list[str] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        if errors is None:
            entry: dict[str, Any] = {"message": message, "errorCode": code}
            if fields is not None:
                entry["fields"] = fields
            errors = [entry]
        self.body = errors


def record_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    """A per-record error as sObject Collections report it (statusCode, not errorCode)."""
    return {"statusCode": code, "message": message, "fields": fields or []}


def from_record_errors(errors: list[dict[str, Any]], status: int = 400) -> ApiError:
    body = [{"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
            for e in errors]
    return ApiError(status, errors[0]["statusCode"], errors[0]["message"], errors=body)


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def not_found(message: str = NOT_FOUND_MESSAGE) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)
