"""sobjects/{Object}/updated/ and deleted/: windows, whole minutes, and their errors."""

from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)


def _error(call, *args):
    with pytest.raises(SalesforceMalformedRequest) as info:
        call(*args)
    return info.value.content[0]["errorCode"]


def test_updated_returns_ids_in_window_ignoring_seconds(sf, org):
    org.clock.freeze(NOW - timedelta(minutes=10))
    lead = org.records("Lead")[0]["Id"]
    org.update_record("Lead", lead, {"Status": "MQL"})  # at 11:50:30
    org.clock.freeze(NOW)
    # Seconds are ignored: 11:50:59 counts as 11:50:00, so the 11:50:30 change is inside.
    result = sf.Lead.updated(NOW - timedelta(minutes=9, seconds=31), NOW)
    assert result["ids"] == [lead]
    assert result["latestDateCovered"] == "2026-03-10T12:00:00.000+0000"
    assert sf.Lead.updated(NOW - timedelta(minutes=9), NOW)["ids"] == []
    # An end in the future is covered only up to now.
    later = sf.Lead.updated(NOW - timedelta(minutes=20), NOW + timedelta(hours=1))
    assert later["latestDateCovered"] == "2026-03-10T12:00:00.000+0000"


def test_updated_errors(sf, org):
    org.clock.freeze(NOW)
    assert _error(sf.Lead.updated, NOW, NOW - timedelta(minutes=5)) == \
        "INVALID_REPLICATION_DATE"
    assert _error(sf.Lead.updated, NOW - timedelta(days=31), NOW) == "INVALID_REPLICATION_DATE"
    assert _error(sf.Lead.updated, NOW.replace(second=10), NOW.replace(second=50)) == \
        "INVALID_REPLICATION_DATE"
    # A naive datetime makes simple-salesforce send a malformed value.
    assert _error(sf.Lead.updated, datetime(2026, 3, 10, 11), datetime(2026, 3, 10, 12)) == \
        "INVALID_REPLICATION_DATE"
    org.clock.unfreeze()
    now = datetime.now(UTC)
    org.replication_id_limit = 5
    assert _error(sf.Lead.updated, now - timedelta(days=29), now) == "EXCEEDED_ID_LIMIT"


def test_deleted_lists_deletes_and_merges_with_window(sf, org):
    now = datetime.now(UTC)
    seeded = [r for r in org.records("Lead", include_deleted=True) if r["IsDeleted"]]
    result = sf.Lead.deleted(now - timedelta(days=14), now + timedelta(minutes=2))
    assert {d["id"] for d in result["deletedRecords"]} == {r["Id"] for r in seeded}
    assert result["earliestDateAvailable"] <= (now - timedelta(days=14)).strftime("%Y-%m-%dT")
    assert set(result["deletedRecords"][0]) == {"id", "deletedDate"}
    lead = org.records("Lead")[0]["Id"]
    org.delete_record("Lead", lead)
    org.clock.advance(120)
    latest = sf.Lead.deleted(now - timedelta(minutes=1), now + timedelta(minutes=3))
    assert [d["id"] for d in latest["deletedRecords"]] == [lead]
    assert _error(sf.Lead.deleted, now - timedelta(days=16), now) == "INVALID_REPLICATION_DATE"


def test_purged_recycle_bin_moves_earliest_date_available(sf, org):
    now = datetime.now(UTC)
    org.purge_recycle_bin()
    org.clock.advance(180)
    assert _error(sf.Lead.deleted, now - timedelta(days=1), now + timedelta(minutes=2)) == \
        "INVALID_REPLICATION_DATE"
    result = sf.Lead.deleted(now + timedelta(minutes=1), now + timedelta(minutes=2))
    assert result["deletedRecords"] == []
    assert sf.query("SELECT COUNT() FROM Lead WHERE IsDeleted = true",
                    include_deleted=True)["totalSize"] == 0
