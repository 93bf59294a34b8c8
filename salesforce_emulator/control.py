"""The authenticated /_emulator/ control endpoint: Org control methods over JSON."""

from __future__ import annotations

import hmac
from typing import Any

from salesforce_emulator.clock import parse_datetime
from salesforce_emulator.org import Org

HEADER = "X-Emulator-Control-Token"
METHODS = {
    "create_record", "update_record", "get_record", "records", "delete_record",
    "merge_records", "convert_lead", "purge_recycle_bin", "add_picklist_value",
    "deactivate_picklist_value", "activate_picklist_value", "rename_picklist_value",
    "remove_picklist_value", "set_picklist_value_record_types", "set_picklist_restricted",
    "remove_field", "set_field_type", "record_type_ids", "add_validation_rule_equals",
    "remove_validation_rule", "fail_record", "inject_fault", "set_failure_rate",
    "clear_faults", "expire_sessions", "revoke_tokens", "set_api_limit", "set_api_usage",
    "reset_api_usage", "clear_request_log", "count_requests", "reset", "flush",
}


def _special(org: Org, name: str, kwargs: dict[str, Any]) -> Any:
    if name == "api_usage":
        used, maximum = org.api_usage
        return {"used": used, "max": maximum}
    if name == "request_log":
        return [{**entry._asdict(), "kind": entry.kind} for entry in org.request_log]
    if name == "users":
        return org.users
    if name == "clock_now":
        return org.clock.now().isoformat()
    if name == "clock_freeze":
        at = kwargs.get("dt")
        org.clock.freeze(parse_datetime(at) if at else None)
        return org.clock.now().isoformat()
    if name == "clock_advance":
        org.clock.advance(float(kwargs["seconds"]))
        return org.clock.now().isoformat()
    if name == "clock_unfreeze":
        org.clock.unfreeze()
        return org.clock.now().isoformat()
    if name == "set_replication_id_limit":
        org.replication_id_limit = int(kwargs["limit"])
        return None
    raise LookupError(name)


def handle(org: Org, name: str, token: str | None, kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Run one control call; returns (HTTP status, JSON body)."""
    if not token or not hmac.compare_digest(token, org.credentials.control_token):
        return 401, {"error": f"missing or wrong {HEADER} header"}
    if not isinstance(kwargs, dict):
        return 400, {"error": "the body must be a JSON object of keyword arguments"}
    try:
        if name in METHODS:
            result = getattr(org, name)(**kwargs)
        else:
            result = _special(org, name, kwargs)
    except LookupError as exc:
        if isinstance(exc, KeyError) or name in METHODS:
            return 400, {"error": str(exc.args[0] if exc.args else exc)}
        return 404, {"error": f"unknown control call {name!r}", "calls": sorted(METHODS)}
    except (ValueError, TypeError) as exc:
        return 400, {"error": str(exc)}
    return 200, {"result": result}
