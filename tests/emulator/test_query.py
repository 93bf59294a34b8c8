"""SOQL over query/ and queryAll/: grammar, types, ordering, paging, and each error."""

from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest


def _ids(sf, soql, **kwargs):
    return [r["Id"] for r in sf.query_all(soql, **kwargs)["records"]]


def _error(sf, soql):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query(soql)
    assert info.value.status == 400
    return info.value.content[0]["errorCode"], info.value.content[0]["message"]


def _live(org, sobject="Lead"):
    return org.records(sobject)


def test_records_have_attributes_and_salesforce_datetime_format(sf, org):
    page = sf.query("SELECT Id, Name, SystemModstamp, ConvertedDate, IsConverted FROM Lead "
                    "WHERE IsConverted = true LIMIT 5")
    record = page["records"][0]
    assert record["attributes"] == {
        "type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{record['Id']}"}
    assert list(record) == ["attributes", "Id", "Name", "SystemModstamp", "ConvertedDate",
                            "IsConverted"]
    assert len(record["Id"]) == 18 and record["Id"].startswith("00Q")
    datetime.strptime(record["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.000+0000")
    datetime.strptime(record["ConvertedDate"], "%Y-%m-%d")
    assert page["totalSize"] == len(page["records"]) == 5 and page["done"] is True


def test_query_hides_deleted_rows_and_query_all_shows_them(sf, org):
    every = org.records("Lead", include_deleted=True)
    deleted = {r["Id"] for r in every if r["IsDeleted"]}
    merged = [r for r in every if r["MasterRecordId"]]
    assert deleted and merged and all(r["IsDeleted"] for r in merged)
    visible = set(_ids(sf, "SELECT Id FROM Lead"))
    assert visible == {r["Id"] for r in every} - deleted
    assert set(_ids(sf, "SELECT Id FROM Lead WHERE IsDeleted = true",
                    include_deleted=True)) == deleted


def test_where_operators(sf, org):
    leads = _live(org)
    checks = {
        "Status = 'mql'": lambda r: r["Status"] == "MQL",
        "Status != 'MQL'": lambda r: r["Status"] != "MQL",
        "Status IN ('MQL', 'SQL')": lambda r: r["Status"] in ("MQL", "SQL"),
        "Status NOT IN ('MQL', 'SQL')": lambda r: r["Status"] not in ("MQL", "SQL"),
        "Email LIKE 'ada.%'": lambda r: (r["Email"] or "").startswith("ada."),
        "Lifecycle_Stage__c = null": lambda r: r["Lifecycle_Stage__c"] is None,
        "Lifecycle_Stage__c != null": lambda r: r["Lifecycle_Stage__c"] is not None,
        "NOT Status = 'MQL'": lambda r: r["Status"] != "MQL",
        "IsConverted = false AND (Status = 'MQL' OR Status = 'SQL')":
            lambda r: not r["IsConverted"] and r["Status"] in ("MQL", "SQL"),
        "Status = 'Qualifié'": lambda r: r["Status"] == "Qualifié",
    }
    for where, expected in checks.items():
        got = set(_ids(sf, f"SELECT Id FROM Lead WHERE {where}"))
        assert got == {r["Id"] for r in leads if expected(r)}, where
        assert got, where


def test_datetime_date_and_number_literals(sf, org):
    leads = _live(org)
    pivot = sorted(r["SystemModstamp"] for r in leads)[len(leads) // 2]
    literal = pivot[:19] + "Z"
    for op, test in (("<", str.__lt__), ("<=", str.__le__), (">", str.__gt__),
                     (">=", str.__ge__), ("=", str.__eq__)):
        got = set(_ids(sf, f"SELECT Id FROM Lead WHERE SystemModstamp {op} {literal}"))
        assert got == {r["Id"] for r in leads if test(r["SystemModstamp"], pivot)}, op
    local = datetime.strptime(pivot[:19], "%Y-%m-%dT%H:%M:%S") + timedelta(hours=2)
    for variant in (pivot[:19] + ".000Z", pivot[:19] + "+00:00", pivot[:19] + "+0000",
                    local.strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"):
        assert sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp = {variant}")[
            "totalSize"] == sum(r["SystemModstamp"] == pivot for r in leads), variant
    opps = org.records("Opportunity")
    day = sorted(r["CloseDate"] for r in opps)[len(opps) // 2]
    assert set(_ids(sf, f"SELECT Id FROM Opportunity WHERE CloseDate >= {day}")) == {
        r["Id"] for r in opps if r["CloseDate"] >= day}
    assert set(_ids(sf, "SELECT Id FROM Opportunity WHERE Amount > 50000.5")) == {
        r["Id"] for r in opps if r["Amount"] > 50000.5}


def test_string_escapes(sf, org):
    lead_id = org.create_record("Lead", {"LastName": "O'Brien \\ \"Quoted\"",
                                         "Company": "Escape Co"})
    got = _ids(sf, "SELECT Id FROM Lead WHERE LastName = 'O\\'Brien \\\\ \\\"Quoted\\\"'")
    assert got == [lead_id]
    org.create_record("Lead", {"LastName": "100% sure_thing", "Company": "Like Co"})
    assert len(_ids(sf, "SELECT Id FROM Lead WHERE LastName LIKE '100\\% sure\\_%'")) == 1
    assert _ids(sf, "SELECT Id FROM Lead WHERE LastName LIKE '100\\%xsure%'") == []


def test_order_by_several_fields_nulls_limit_offset(sf, org):
    leads = _live(org)
    rows = sf.query_all("SELECT Id, Lifecycle_Stage__c, SystemModstamp FROM Lead "
                        "ORDER BY Lifecycle_Stage__c DESC NULLS LAST, SystemModstamp ASC, "
                        "Id")["records"]
    with_stage = [r for r in leads if r["Lifecycle_Stage__c"]]
    expected = sorted(with_stage, key=lambda r: r["Id"])
    expected.sort(key=lambda r: r["SystemModstamp"])
    expected.sort(key=lambda r: r["Lifecycle_Stage__c"].lower(), reverse=True)
    nulls = sorted((r for r in leads if not r["Lifecycle_Stage__c"]),
                   key=lambda r: (r["SystemModstamp"], r["Id"]))
    assert [r["Id"] for r in rows] == [r["Id"] for r in expected + nulls]
    first = _ids(sf, "SELECT Id FROM Lead ORDER BY Lifecycle_Stage__c NULLS FIRST, Id")
    assert first[:len(nulls)] == sorted(r["Id"] for r in nulls)
    page = _ids(sf, "SELECT Id FROM Lead ORDER BY Id LIMIT 5 OFFSET 10")
    assert page == sorted(r["Id"] for r in leads)[10:15]


def test_count(sf, org):
    result = sf.query("SELECT COUNT() FROM Lead WHERE IsConverted = true")
    assert result == {"totalSize": sum(r["IsConverted"] for r in _live(org)), "done": True,
                      "records": []}


def test_keyset_paging_over_systemmodstamp_ties(sf, org):
    org.clock.freeze(datetime(2026, 1, 5, 10, 11, 12, 345000, tzinfo=UTC))
    tied = sorted(org.create_record("Lead", {"LastName": f"Tie {n}", "Company": "T"})
                  for n in range(7))
    stamp = "2026-01-05T10:11:12.000+0000"
    assert {org.get_record("Lead", i)["SystemModstamp"] for i in tied} == {stamp}
    seen, cursor = [], ("2026-01-05T10:11:11Z", "")
    while True:
        ts, last = cursor
        rows = sf.query(
            f"SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp > {ts} OR "
            f"(SystemModstamp = {ts} AND Id > '{last}') ORDER BY SystemModstamp, Id LIMIT 3"
        )["records"]
        rows = [r for r in rows if r["SystemModstamp"] == stamp]
        if not rows:
            break
        seen += [r["Id"] for r in rows]
        cursor = (rows[-1]["SystemModstamp"][:19] + "Z", rows[-1]["Id"])
    assert seen == tied


def test_paging_with_batch_size_and_next_records_url(sf, org):
    total = len(_live(org))
    page = sf.query("SELECT Id FROM Lead", headers={"Sforce-Query-Options": "batchSize=200"})
    assert page["totalSize"] == total and len(page["records"]) == 200 and not page["done"]
    url = page["nextRecordsUrl"]
    assert url.startswith("/services/data/v62.0/query/01g") and url.endswith("-200")
    second = sf.query_more(url, identifier_is_url=True)
    assert len(second["records"]) == total - 200 and second["done"]
    assert "nextRecordsUrl" not in second
    # batchSize below 200 is a hint raised to 200; above 2000 is capped.
    small = sf.query("SELECT Id FROM Lead", headers={"Sforce-Query-Options": "batchSize=10"})
    assert len(small["records"]) == 200
    ids = [r["Id"] for r in sf.query_all_iter(
        "SELECT Id FROM Lead", headers={"Sforce-Query-Options": "batchSize=200"})]
    assert len(ids) == len(set(ids)) == total


def test_cursor_is_a_snapshot(sf, org):
    page = sf.query("SELECT Id, Status FROM Lead ORDER BY Id",
                    headers={"Sforce-Query-Options": "batchSize=200"})
    later = org.records("Lead")
    tail = sorted(r["Id"] for r in later)[250]
    org.update_record("Lead", tail, {"Status": "SQL"})
    before = next(r for r in later if r["Id"] == tail)["Status"]
    rest = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)["records"]
    assert next(r for r in rest if r["Id"] == tail)["Status"] == before


def test_invalid_query_locator(sf):
    code, _ = _error_more(sf, "/services/data/v62.0/query/01gXXXXXXXXXXXX-200")
    assert code == "INVALID_QUERY_LOCATOR"


def _error_more(sf, url):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query_more(url, identifier_is_url=True)
    return info.value.content[0]["errorCode"], info.value.content[0]["message"]


def test_query_errors(sf):
    cases = {
        "SELECT Id, Bogus__c FROM Lead": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE Bogus = 1": "INVALID_FIELD",
        "SELECT Id FROM Lead ORDER BY Bogus": "INVALID_FIELD",
        "SELECT Owner.Name FROM Lead": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE SystemModstamp > '2026-01-05T10:11:12Z'": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE Status = 5": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE IsConverted > true": "INVALID_FIELD",
        "SELECT Id FROM Lead WHERE CreatedDate > 2026-01-05": "INVALID_FIELD",
        "SELECT Id FROM Nope__c": "INVALID_TYPE",
        "SELECT Id FROM Lead WHERE": "MALFORMED_QUERY",
        "SELECT Id FROMM Lead": "MALFORMED_QUERY",
        "SELECT FROM Lead": "MALFORMED_QUERY",
        "SELECT Id FROM Lead WHERE Status = 'x": "MALFORMED_QUERY",
        "SELECT Id FROM Lead WHERE Status = 'a\\qb'": "MALFORMED_QUERY",
        "SELECT Id FROM Lead WHERE Status = 'a' AND Status = 'b' OR Status = 'c'":
            "MALFORMED_QUERY",
        "SELECT Id FROM Lead WHERE (Status = 'a'": "MALFORMED_QUERY",
        "SELECT Id, Id FROM Lead": "MALFORMED_QUERY",
        "SELECT Id FROM Lead LIMIT x": "MALFORMED_QUERY",
        "SELECT Id FROM Lead ORDER BY Id OFFSET 2001": "NUMBER_OUTSIDE_VALID_RANGE",
        "SELECT Id FROM Lead WHERE SystemModstamp > 2026-13-45T10:11:12Z": "MALFORMED_QUERY",
    }
    for soql, code in cases.items():
        got, message = _error(sf, soql)
        assert got == code, soql
        assert message, soql
    _, message = _error(sf, "SELECT Id, Bogus__c FROM Lead")
    assert "No such column 'Bogus__c' on entity 'Lead'" in message


def test_field_and_object_names_are_case_insensitive(sf):
    rows = sf.query("select id, STATUS from lead where status != null limit 2")["records"]
    assert set(rows[0]) == {"attributes", "Id", "Status"}


def test_lead_status_and_opportunity_stage_rows(sf, org):
    statuses = sf.query_all("SELECT Id, ApiName, MasterLabel, IsConverted, IsDefault, SortOrder "
                            "FROM LeadStatus ORDER BY SortOrder")["records"]
    names = [r["ApiName"] for r in statuses]
    assert names[:4] == ["Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                         "Closed - Not Converted"]
    assert {"MQL", "SQL", "Nurturing", "Disqualified", "Qualifié"} <= set(names)
    assert "Legacy - Cold" not in names  # inactive
    assert [r["ApiName"] for r in statuses if r["IsConverted"]] == ["Closed - Converted",
                                                                   "Partner_Accepted"]
    assert [r["ApiName"] for r in statuses if r["IsDefault"]] == ["Open - Not Contacted"]
    orders = [r["SortOrder"] for r in statuses]
    assert orders != list(range(1, len(orders) + 1))
    assert any(r["MasterLabel"] != r["ApiName"] for r in statuses)
    stages = sf.query_all("SELECT ApiName, MasterLabel, SortOrder, IsActive, IsClosed, IsWon, "
                          "ForecastCategory, ForecastCategoryName, DefaultProbability "
                          "FROM OpportunityStage WHERE IsClosed = true")["records"]
    assert {(r["ApiName"], r["IsWon"], r["DefaultProbability"]) for r in stages} == {
        ("Closed Won", True, 100), ("Closed Lost", False, 0)}
