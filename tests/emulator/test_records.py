"""Describe, single-record GET/PATCH/POST/DELETE, sObject Collections, limits and UI API."""

import pytest
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)

MASTER = "012000000000000AAA"


def _lead(org, **where):
    return next(r for r in org.records("Lead")
                if all(r[k] == v for k, v in where.items()))


def _patch_error(sf, lead_id, body):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Lead.update(lead_id, body)
    return info.value.content


def test_describe_lead(sf):
    body = sf.Lead.describe()
    for key in ("name", "label", "labelPlural", "keyPrefix", "custom", "fields",
                "recordTypeInfos", "urls", "createable", "updateable", "queryable"):
        assert key in body
    assert (body["name"], body["keyPrefix"], body["custom"]) == ("Lead", "00Q", False)
    fields = {f["name"]: f for f in body["fields"]}
    for name in ("Id", "FirstName", "LastName", "Name", "Email", "Company", "Status",
                 "Lifecycle_Stage__c", "IsConverted", "ConvertedContactId",
                 "ConvertedAccountId", "ConvertedOpportunityId", "ConvertedDate",
                 "RecordTypeId", "OwnerId", "LastModifiedById", "LastModifiedDate",
                 "CreatedDate", "SystemModstamp", "IsDeleted", "MasterRecordId"):
        assert name in fields, name
    status = fields["Status"]
    assert status["type"] == "picklist" and status["restrictedPicklist"] is True
    for key in ("nillable", "updateable", "createable", "custom", "defaultValue",
                "dependentPicklist", "controllerName"):
        assert key in status
    values = {v["value"]: v for v in status["picklistValues"]}
    assert values["Open - Not Contacted"]["defaultValue"] is True
    assert values["Legacy - Cold"]["active"] is False
    assert values["Partner_Accepted"]["label"] == "Accepted by Partner"
    assert set(values["MQL"]) == {"active", "defaultValue", "label", "validFor", "value"}
    assert fields["Lifecycle_Stage__c"]["custom"] is True
    assert fields["Email"]["length"] == 80 and fields["Email"]["type"] == "email"
    assert fields["SystemModstamp"]["updateable"] is False
    infos = body["recordTypeInfos"]
    assert [i["master"] for i in infos].count(True) == 1
    assert any(i["recordTypeId"] == MASTER for i in infos)
    assert set(infos[0]) >= {"name", "developerName", "recordTypeId", "available", "master",
                             "defaultRecordTypeMapping", "active"}


def test_describe_other_objects_and_unknown(sf):
    assert sf.Contact.describe()["keyPrefix"] == "003"
    contact_fields = {f["name"] for f in sf.Contact.describe()["fields"]}
    assert "Contact_Status__c" in contact_fields
    assert sf.Account.describe()["keyPrefix"] == "001"
    assert "StageName" in {f["name"] for f in sf.Opportunity.describe()["fields"]}
    assert sf.LeadStatus.describe()["queryable"] is True
    assert sf.OpportunityStage.describe()["name"] == "OpportunityStage"
    with pytest.raises(SalesforceResourceNotFound) as info:
        sf.Nope__c.describe()
    assert info.value.content[0]["errorCode"] == "NOT_FOUND"


def test_describe_global_and_limits(sf):
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Lead", "Contact", "Account", "Opportunity", "LeadStatus",
            "OpportunityStage"} <= names
    limits = sf.limits()
    assert limits["DailyApiRequests"]["Max"] == 15000
    assert limits["DailyApiRequests"]["Remaining"] == 15000 - sf.api_usage["api-usage"].used
    assert len(limits) > 3


def test_get_record_and_fields_param(sf, org):
    lead = _lead(org, IsConverted=False)
    got = sf.Lead.get(lead["Id"])
    assert got["Status"] == lead["Status"] and got["attributes"]["type"] == "Lead"
    some = sf.restful(f"sobjects/Lead/{lead['Id']}", params={"fields": "Id,Status"})
    assert set(some) == {"attributes", "Id", "Status"}
    assert sf.Lead.get(lead["Id"][:15])["Id"] == lead["Id"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.get("00Q5g00000ZZZZZZZZ")
    deleted = next(r for r in org.records("Lead", include_deleted=True) if r["IsDeleted"])
    with pytest.raises(SalesforceResourceNotFound) as info:
        sf.Lead.get(deleted["Id"])
    assert info.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_patch_updates_and_bumps_system_fields(sf, org, emulator):
    lead = _lead(org, IsConverted=False, Status="Open - Not Contacted")
    assert sf.Lead.update(lead["Id"], {"Status": "Working - Contacted",
                                       "Lifecycle_Stage__c": "MQL"}) == 204
    after = org.get_record("Lead", lead["Id"])
    assert after["Status"] == "Working - Contacted" and after["Lifecycle_Stage__c"] == "MQL"
    assert after["LastModifiedById"] == emulator.credentials.user_id
    assert after["SystemModstamp"] > lead["SystemModstamp"]
    assert after["SystemModstamp"].endswith(".000+0000")
    assert after["LastModifiedDate"] == after["SystemModstamp"]


def test_patch_errors(sf, org):
    sales_rt = org.record_type_ids("Lead")["Sales_Lead"]
    lead = _lead(org, IsConverted=False, RecordTypeId=sales_rt)
    cases = [
        ({"Status": "Nope"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Status": "Legacy - Cold"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Status": "Partner_Accepted"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Status": None}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Bogus__c": "x"}, "INVALID_FIELD"),
        ({"SystemModstamp": "2026-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"IsConverted": True}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"LastName": None}, "REQUIRED_FIELD_MISSING"),
        ({"FirstName": "x" * 41}, "STRING_TOO_LONG"),
    ]
    for body, code in cases:
        content = _patch_error(sf, lead["Id"], body)
        assert content[0]["errorCode"] == code, body
        assert content[0]["message"]
    assert org.get_record("Lead", lead["Id"]) == lead
    converted = _lead(org, IsConverted=True)
    assert _patch_error(sf, converted["Id"], {"Status": "MQL"})[0]["errorCode"] == \
        "CANNOT_UPDATE_CONVERTED_LEAD"
    # An unrestricted picklist takes any value.
    contact = org.records("Contact")[0]
    assert sf.Contact.update(contact["Id"], {"Contact_Status__c": "Anything goes"}) == 204


def test_record_type_decides_available_values(sf, org):
    rts = org.record_type_ids("Lead")
    partner = _lead(org, IsConverted=False, RecordTypeId=rts["Partner_Lead"])
    assert _patch_error(sf, partner["Id"], {"Status": "MQL"})[0]["errorCode"] == \
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf.Lead.update(partner["Id"], {"Status": "Partner_Accepted"}) == 204


def test_validation_rules_report_every_message(sf, org):
    lead = _lead(org, IsConverted=False)
    org.add_validation_rule("Lead", "need_email", "Email", "Email is required to qualify",
                            lambda r: r["Status"] == "SQL" and not r["Email"])
    org.add_validation_rule("Lead", "no_sql_partner", None, "Partners cannot be SQL",
                            lambda r: r["Status"] == "SQL")
    content = _patch_error(sf, lead["Id"], {"Status": "SQL", "Email": None})
    assert [(e["errorCode"], e["message"], e["fields"]) for e in content] == [
        ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email is required to qualify", ["Email"]),
        ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Partners cannot be SQL", [])]


def test_create_and_delete(sf, org):
    result = sf.Lead.create({"LastName": "Newman", "Company": "Post Co"})
    assert result["success"] is True and result["id"].startswith("00Q")
    created = org.get_record("Lead", result["id"])
    assert created["Status"] == "Open - Not Contacted" and created["Name"] == "Newman"
    assert created["RecordTypeId"] == org.record_type_ids("Lead")["Sales_Lead"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Lead.create({"Company": "No Name"})
    assert info.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.Lead.delete(result["id"]) == 204
    assert org.get_record("Lead", result["id"])["IsDeleted"] is True


def _collection(sf, records, all_or_none=False):
    return sf.restful("composite/sobjects", method="PATCH",
                      json={"allOrNone": all_or_none, "records": records})


def test_collections_partial_failure_in_request_order(sf, org):
    open_leads = [r for r in org.records("Lead") if not r["IsConverted"]
                  and r["RecordTypeId"] == org.record_type_ids("Lead")["Sales_Lead"]][:3]
    converted = _lead(org, IsConverted=True)
    locked = open_leads[2]["Id"]
    org.fail_record(locked, "UNABLE_TO_LOCK_ROW", times=1)
    records = [{"attributes": {"type": "Lead"}, "id": open_leads[0]["Id"], "Status": "SQL"},
               {"attributes": {"type": "Lead"}, "id": open_leads[1]["Id"], "Status": "Bad"},
               {"attributes": {"type": "Lead"}, "id": converted["Id"], "Status": "MQL"},
               {"attributes": {"type": "Lead"}, "id": locked, "Status": "MQL"}]
    results = _collection(sf, records)
    assert results[0] == {"id": open_leads[0]["Id"], "success": True, "errors": []}
    assert [r["success"] for r in results] == [True, False, False, False]
    assert [r["errors"][0]["statusCode"] for r in results[1:]] == [
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "CANNOT_UPDATE_CONVERTED_LEAD",
        "UNABLE_TO_LOCK_ROW"]
    assert results[1]["errors"][0]["fields"] == ["Status"]
    assert org.get_record("Lead", open_leads[0]["Id"])["Status"] == "SQL"
    # The lock was for one attempt only: a retry goes through.
    retry = _collection(sf, [records[3]])
    assert retry == [{"id": locked, "success": True, "errors": []}]
    assert sf.api_usage["api-usage"].used == 2  # the token call is free; a collection is one


def test_collections_all_or_none_rolls_back(sf, org):
    leads = [r for r in org.records("Lead") if not r["IsConverted"]][:3]
    records = [{"attributes": {"type": "Lead"}, "id": r["Id"], "Lifecycle_Stage__c": "SQL"}
               for r in leads]
    records[1]["Lifecycle_Stage__c"] = "Not a stage"
    results = _collection(sf, records, all_or_none=True)
    assert [r["success"] for r in results] == [False, False, False]
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"]
    assert [org.get_record("Lead", r["Id"]) for r in leads] == leads


def test_collections_limits_and_bad_items(sf, org):
    lead = org.records("Lead")[0]
    with pytest.raises(SalesforceMalformedRequest) as info:
        _collection(sf, [{"attributes": {"type": "Lead"}, "id": lead["Id"]}] * 201)
    assert info.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    results = _collection(sf, [{"attributes": {"type": "Lead"}, "Status": "MQL"},
                               {"attributes": {"type": "Lead"}, "id": "001xx", "Status": "MQL"},
                               {"id": lead["Id"]}])
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "MISSING_ARGUMENT", "MALFORMED_ID", "INVALID_TYPE"]


def test_ui_api_picklist_values(sf, org):
    rts = org.record_type_ids("Lead")
    body = sf.restful(f"ui-api/object-info/Lead/picklist-values/{rts['Partner_Lead']}")
    status = body["picklistFieldValues"]["Status"]
    assert status["controllerValues"] == {}
    assert status["url"].endswith(f"/picklist-values/{rts['Partner_Lead']}/Status")
    values = {v["value"]: v for v in status["values"]}
    assert "MQL" not in values and "Partner_Accepted" in values and "Legacy - Cold" not in values
    assert values["Partner_Accepted"]["attributes"] == {
        "converted": True, "picklistAtrributesValueType": "LeadStatus"}
    assert values["Partner_Accepted"]["label"] == "Accepted by Partner"
    assert values["Open - Not Contacted"]["validFor"] == []
    assert status["defaultValue"]["value"] == "Open - Not Contacted"
    assert "Lifecycle_Stage__c" in body["picklistFieldValues"]
    one = sf.restful(f"ui-api/object-info/Lead/picklist-values/{MASTER}/Lifecycle_Stage__c")
    assert [v["value"] for v in one["values"]][:2] == ["Subscriber", "Lead"]
    assert one["values"][0]["attributes"] is None
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful(f"ui-api/object-info/Lead/picklist-values/{MASTER}/Email")


def test_admin_picklist_changes_show_in_describe_and_writes(sf, org):
    lead = _lead(org, IsConverted=False)
    org.add_picklist_value("Lead", "Status", "Recycled", label="Recycled lead")
    org.rename_picklist_value("Lead", "Status", "MQL", "Marketing Qualified")
    org.deactivate_picklist_value("Lead", "Status", "Nurturing")
    values = {v["value"]: v for v in next(
        f for f in sf.Lead.describe()["fields"] if f["name"] == "Status")["picklistValues"]}
    assert values["Recycled"]["label"] == "Recycled lead"
    assert values["MQL"]["label"] == "Marketing Qualified"
    assert values["Nurturing"]["active"] is False
    assert sf.Lead.update(lead["Id"], {"Status": "Recycled"}) == 204
    assert _patch_error(sf, lead["Id"], {"Status": "Nurturing"})[0]["errorCode"] == \
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    names = [r["ApiName"] for r in sf.query_all("SELECT ApiName FROM LeadStatus")["records"]]
    assert "Recycled" in names and "Nurturing" not in names
    org.set_field_type("Lead", "Lifecycle_Stage__c", "string")
    field = next(f for f in sf.Lead.describe()["fields"] if f["name"] == "Lifecycle_Stage__c")
    assert field["type"] == "string" and field["picklistValues"] == []
    org.remove_field("Lead", "Lifecycle_Stage__c")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query("SELECT Lifecycle_Stage__c FROM Lead")
    assert info.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_sales_rep_changes_convert_and_merge(sf, org):
    leads = [r for r in org.records("Lead") if not r["IsConverted"]
             and r["RecordTypeId"] == org.record_type_ids("Lead")["Sales_Lead"]]
    result = org.convert_lead(leads[0]["Id"])
    converted = org.get_record("Lead", leads[0]["Id"])
    assert converted["IsConverted"] and converted["Status"] == "Closed - Converted"
    assert converted["ConvertedContactId"] == result["contact_id"]
    assert org.get_record("Contact", result["contact_id"])["AccountId"] == result["account_id"]
    org.merge_records("Lead", leads[1]["Id"], leads[2]["Id"])
    loser = sf.query_all(f"SELECT Id, IsDeleted, MasterRecordId FROM Lead "
                         f"WHERE Id = '{leads[2]['Id']}'", include_deleted=True)["records"][0]
    assert loser["IsDeleted"] is True and loser["MasterRecordId"] == leads[1]["Id"]
    rep = org.users["rep1"]
    org.update_record("Lead", leads[3]["Id"], {"Status": "Disqualified"})
    assert org.get_record("Lead", leads[3]["Id"])["LastModifiedById"] == rep
