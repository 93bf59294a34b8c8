"""Seeded orgs: the `demo` org (schema, picklists, record types, leads) and an `empty` one."""

from __future__ import annotations

import random
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from salesforce_emulator.clock import fmt_datetime, parse_datetime
from salesforce_emulator.ids import make_id
from salesforce_emulator.schema import FieldDef, PicklistValue, RecordTypeDef, SObjectDef
from salesforce_emulator.state import OrgState

SEEDS = ("demo", "empty")
DEFAULT_SIZE = 3000
USERNAME = "integration@stagemap-demo.example"

LEAD_STATUSES = [
    # value, label, sort order, converted, active, record types ("S" sales, "P" partner)
    ("Open - Not Contacted", "Open - Not Contacted", 1, False, True, "SP"),
    ("Working - Contacted", "Working - Contacted", 2, False, True, "SP"),
    ("Closed - Converted", "Closed - Converted", 3, True, True, "SP"),
    ("Closed - Not Converted", "Closed - Not Converted", 4, False, True, "SP"),
    ("MQL", "MQL", 6, False, True, "S"),
    ("SQL", "SQL", 7, False, True, "S"),
    ("Nurturing", "Nurturing", 9, False, True, "S"),
    ("Disqualified", "Disqualified", 10, False, True, "SP"),
    ("Qualifié", "Qualifié", 12, False, True, "SP"),
    ("Partner_Accepted", "Accepted by Partner", 15, True, True, "P"),
    ("Legacy - Cold", "Legacy - Cold", 20, False, False, "SP"),
]
LIFECYCLE = ["Subscriber", "Lead", "MQL", "SQL", "Opportunity", "Customer", "Churned", "Other"]
CONTACT_STATUSES = ["New", "Engaged", "Customer", "Former Customer", "Do_Not_Contact"]
STAGES = [
    # value, sort order, closed, won, probability, forecast category
    ("Prospecting", 1, False, False, 10, "Pipeline"),
    ("Qualification", 2, False, False, 10, "Pipeline"),
    ("Needs Analysis", 3, False, False, 20, "Pipeline"),
    ("Value Proposition", 5, False, False, 50, "Pipeline"),
    ("Id. Decision Makers", 6, False, False, 60, "Pipeline"),
    ("Perception Analysis", 7, False, False, 70, "Pipeline"),
    ("Proposal/Price Quote", 8, False, False, 75, "Pipeline"),
    ("Negotiation/Review", 9, False, False, 90, "Forecast"),
    ("Closed Won", 12, True, True, 100, "Closed"),
    ("Closed Lost", 13, True, False, 0, "Omitted"),
]
FORECAST_NAMES = {"Pipeline": "Pipeline", "Forecast": "Commit", "Closed": "Closed",
                  "Omitted": "Omitted"}
FIRST = ["Ada", "Bram", "Chloé", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ines", "José",
         "Kenji", "Lena", "Mateo", "Nora", "Ólafur", "Priya", "Quinn", "Rosa", "Sven", "Zoë"]
LAST = ["Andersen", "Barros", "Chen", "Dubois", "Eriksen", "Fischer", "García", "Haddad",
        "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Moreau", "Novak", "O'Brien", "Petrov",
        "Rossi", "Schmidt", "Tanaka", "Weiß"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
             "Tyrell", "Soylent", "Cyberdyne", "Wonka", "Gringotts", "Aperture", "Oscorp"]


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def _f(name: str, label: str, type_: str, **kw: Any) -> FieldDef:
    if type_ in ("string", "email", "textarea") and "length" not in kw:
        kw["length"] = 255
    if type_ in ("id", "reference") and "length" not in kw:
        kw["length"] = 18
    return FieldDef(name=name, label=label, type=type_, **kw)


def _system_fields(prefix_fields: list[FieldDef], mergeable: bool = True) -> dict[str, FieldDef]:
    ro = {"createable": False, "updateable": False}
    fields = [_f("Id", "Record ID", "id", nillable=False, **ro), *prefix_fields,
              _f("OwnerId", "Owner ID", "reference", reference_to=["User"], nillable=False),
              _f("CreatedDate", "Created Date", "datetime", nillable=False, **ro),
              _f("CreatedById", "Created By ID", "reference", reference_to=["User"], **ro),
              _f("LastModifiedDate", "Last Modified Date", "datetime", nillable=False, **ro),
              _f("LastModifiedById", "Last Modified By ID", "reference", reference_to=["User"],
                 **ro),
              _f("SystemModstamp", "System Modstamp", "datetime", nillable=False, **ro),
              _f("IsDeleted", "Deleted", "boolean", nillable=False, **ro)]
    if mergeable:
        fields.append(_f("MasterRecordId", "Master Record ID", "reference", **ro))
    return {f.name: f for f in fields}


def _picklist(values: list[str]) -> list[PicklistValue]:
    return [PicklistValue(value=v, label=v.replace("_", " "), sort_order=i + 1)
            for i, v in enumerate(values)]


def build_schema(state: OrgState) -> None:
    ro = {"createable": False, "updateable": False}
    sales_rt = make_id("012", 101)
    partner_rt = make_id("012", 102)
    rts = {"S": sales_rt, "P": partner_rt}
    statuses = []
    for value, label, order, converted, active, where in LEAD_STATUSES:
        statuses.append(PicklistValue(
            value=value, label=label, active=active, sort_order=order, converted=converted,
            default=value == "Open - Not Contacted", row_id=make_id("01J", order),
            record_types=None if where == "SP" else [rts[c] for c in where]))
    stages = [PicklistValue(value=v, label=v, sort_order=o, closed=c, won=w, probability=p,
                            forecast_category=fc, row_id=make_id("01J", 100 + o))
              for v, o, c, w, p, fc in STAGES]
    stages[0].default = False
    lead_fields = [
        _f("FirstName", "First Name", "string", length=40),
        _f("LastName", "Last Name", "string", length=80, nillable=False),
        _f("Name", "Full Name", "string", length=121, **ro),
        _f("Title", "Title", "string", length=128),
        _f("Email", "Email", "email", length=80),
        _f("Company", "Company", "string", nillable=False),
        _f("LeadSource", "Lead Source", "picklist",
           picklist=_picklist(["Web", "Phone Inquiry", "Partner Referral", "Other"])),
        _f("Status", "Lead Status", "picklist", nillable=False, restricted=True,
           default_value="Open - Not Contacted", picklist=statuses),
        _f("Lifecycle_Stage__c", "Lifecycle Stage", "picklist", custom=True, restricted=True,
           picklist=_picklist(LIFECYCLE)),
        _f("RecordTypeId", "Record Type ID", "reference", reference_to=["RecordType"]),
        _f("IsConverted", "Converted", "boolean", nillable=False, updateable=False),
        _f("ConvertedDate", "Converted Date", "date", **ro),
        _f("ConvertedAccountId", "Converted Account ID", "reference",
           reference_to=["Account"], **ro),
        _f("ConvertedContactId", "Converted Contact ID", "reference",
           reference_to=["Contact"], **ro),
        _f("ConvertedOpportunityId", "Converted Opportunity ID", "reference",
           reference_to=["Opportunity"], **ro),
    ]
    lead = SObjectDef("Lead", "Lead", "Leads", "00Q", fields=_system_fields(lead_fields),
                      record_types=[RecordTypeDef(sales_rt, "Sales Lead", "Sales_Lead", True),
                                    RecordTypeDef(partner_rt, "Partner Lead", "Partner_Lead")])
    contact = SObjectDef("Contact", "Contact", "Contacts", "003", fields=_system_fields([
        _f("FirstName", "First Name", "string", length=40),
        _f("LastName", "Last Name", "string", length=80, nillable=False),
        _f("Name", "Full Name", "string", length=121, **ro),
        _f("Email", "Email", "email", length=80),
        _f("AccountId", "Account ID", "reference", reference_to=["Account"]),
        _f("Contact_Status__c", "Contact Status", "picklist", custom=True,
           picklist=_picklist(CONTACT_STATUSES)),
    ]))
    contact.fields["Contact_Status__c"].picklist[-1].label = "Do not contact"
    account = SObjectDef("Account", "Account", "Accounts", "001", fields=_system_fields([
        _f("Name", "Account Name", "string", nillable=False),
        _f("Industry", "Industry", "picklist",
           picklist=_picklist(["Technology", "Finance", "Retail", "Manufacturing"])),
    ]))
    opportunity = SObjectDef("Opportunity", "Opportunity", "Opportunities", "006",
                             fields=_system_fields([
                                 _f("Name", "Name", "string", length=120, nillable=False),
                                 _f("AccountId", "Account ID", "reference",
                                    reference_to=["Account"]),
                                 _f("StageName", "Stage", "picklist", nillable=False,
                                    restricted=True, picklist=stages),
                                 _f("Amount", "Amount", "currency"),
                                 _f("Probability", "Probability (%)", "percent"),
                                 _f("CloseDate", "Close Date", "date", nillable=False),
                                 _f("IsClosed", "Closed", "boolean", nillable=False, **ro),
                                 _f("IsWon", "Won", "boolean", nillable=False, **ro),
                             ], mergeable=False))
    derived_ro = {"createable": False, "updateable": False, "deletable": False}
    lead_status = SObjectDef("LeadStatus", "Lead Status Value", "Lead Status Values", "01J",
                             derived_from="Lead.Status", **derived_ro, fields={f.name: f for f in [
                                 _f("Id", "Lead Status Value ID", "id", nillable=False, **ro),
                                 _f("ApiName", "Api Name", "string", **ro),
                                 _f("MasterLabel", "Master Label", "string", **ro),
                                 _f("SortOrder", "Sort Order", "int", **ro),
                                 _f("IsDefault", "Is Default", "boolean", **ro),
                                 _f("IsConverted", "Is Converted", "boolean", **ro),
                                 _f("SystemModstamp", "System Modstamp", "datetime", **ro)]})
    stage = SObjectDef("OpportunityStage", "Opportunity Stage", "Opportunity Stages", "01J",
                       derived_from="Opportunity.StageName", **derived_ro,
                       fields={f.name: f for f in [
                           _f("Id", "Opportunity Stage ID", "id", nillable=False, **ro),
                           _f("ApiName", "Api Name", "string", **ro),
                           _f("MasterLabel", "Master Label", "string", **ro),
                           _f("SortOrder", "Sort Order", "int", **ro),
                           _f("IsActive", "Is Active", "boolean", **ro),
                           _f("IsClosed", "Is Closed", "boolean", **ro),
                           _f("IsWon", "Is Won", "boolean", **ro),
                           _f("ForecastCategory", "Forecast Category", "string", **ro),
                           _f("ForecastCategoryName", "Forecast Category Name", "string", **ro),
                           _f("DefaultProbability", "Default Probability", "percent", **ro),
                           _f("SystemModstamp", "System Modstamp", "datetime", **ro)]})
    state.counters["01J"] = 1000  # above the seeded LeadStatus / OpportunityStage row ids
    for obj in (lead, contact, account, opportunity, lead_status, stage):
        state.objects[obj.name] = obj
        state.records.setdefault(obj.name, {})


class _Generator:
    def __init__(self, state: OrgState, anchor: datetime, rng: random.Random) -> None:
        self.state = state
        self.anchor = anchor.replace(microsecond=0)
        self.rng = rng
        self.reps = [state.users[k] for k in ("rep1", "rep2", "rep3")]
        self._stamps: dict[int, str] = {}

    def stamp(self, seconds_ago: float) -> str:
        seconds = int(seconds_ago)
        text = self._stamps.get(seconds)
        if text is None:
            text = fmt_datetime(self.anchor - timedelta(seconds=seconds))
            self._stamps[seconds] = text
        return text

    def base(self, prefix: str, created_ago: float, modified_ago: float) -> dict[str, Any]:
        owner = self.rng.choice(self.reps)
        modified = self.stamp(min(created_ago, modified_ago))
        return {"Id": self.state.new_id(prefix), "OwnerId": owner,
                "CreatedDate": self.stamp(created_ago), "CreatedById": owner,
                "LastModifiedDate": modified, "LastModifiedById": owner,
                "SystemModstamp": modified, "IsDeleted": False}

    def account(self, company: str, created: float, modified: float) -> dict[str, Any]:
        rec = self.base("001", created, modified)
        rec.update(Name=company, Industry=self.rng.choice(
            ["Technology", "Finance", "Retail", "Manufacturing", None]), MasterRecordId=None)
        self.state.records["Account"][rec["Id"]] = rec
        return rec

    def contact(self, first: str, last: str, email: str, account_id: str | None,
                created: float, modified: float) -> dict[str, Any]:
        rec = self.base("003", created, modified)
        rec.update(FirstName=first, LastName=last, Name=f"{first} {last}", Email=email,
                   AccountId=account_id, MasterRecordId=None,
                   Contact_Status__c=self.rng.choice([*CONTACT_STATUSES, None]))
        self.state.records["Contact"][rec["Id"]] = rec
        return rec

    def opportunity(self, name: str, account_id: str, created: float,
                    modified: float) -> dict[str, Any]:
        rec = self.base("006", created, modified)
        stage = self.rng.choice(STAGES)
        close = (self.anchor + timedelta(days=self.rng.randint(-20, 60))).date().isoformat()
        rec.update(Name=name, AccountId=account_id, StageName=stage[0], Probability=stage[4],
                   Amount=float(self.rng.randint(1, 200) * 500), CloseDate=close,
                   IsClosed=stage[2], IsWon=stage[3])
        self.state.records["Opportunity"][rec["Id"]] = rec
        return rec


def build_demo(size: int, anchor: datetime, seed: str = "demo") -> OrgState:
    rng = random.Random(f"{seed}:{size}")
    anchor = anchor.replace(microsecond=0)
    state = OrgState(org_id=make_id("00D", 1), users={}, objects={}, seed=seed, size=size,
                     anchor=fmt_datetime(anchor))
    for role, number in (("integration", 1), ("admin", 2), ("rep1", 3), ("rep2", 4),
                         ("rep3", 5)):
        state.users[role] = make_id("005", number)
    build_schema(state)
    gen = _Generator(state, anchor, rng)
    lead_def = state.objects["Lead"]
    status_field = lead_def.fields["Status"]
    rt_ids = [rt.id for rt in lead_def.record_types]
    by_rt = {rt: [v.value for v in status_field.picklist if v.available_to(rt)] for rt in rt_ids}
    converted = {v.value for v in status_field.picklist if v.converted}
    window = 28 * 86400
    bursts = [rng.uniform(0, window) for _ in range(max(4, size // 12))]
    leads = state.records["Lead"]
    live: list[str] = []
    for n in range(size):
        modified = rng.choice(bursts) if rng.random() < 0.45 else rng.uniform(0, window)
        created = rng.uniform(modified, window)
        rec = gen.base("00Q", created, modified)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = f"{rng.choice(COMPANIES)} {rng.choice(['Inc', 'GmbH', 'SA', 'Ltd'])}"
        rt = rt_ids[0] if rng.random() < 0.75 else rt_ids[1]
        status = rng.choice(by_rt[rt])
        rec.update(FirstName=first, LastName=last, Name=f"{first} {last}", Title=None,
                   Email=f"{_ascii(first)}.{_ascii(last)}{n}@example.com",
                   Company=company, LeadSource=rng.choice(["Web", "Phone Inquiry", None]),
                   Status=status, RecordTypeId=rt, IsConverted=False, ConvertedDate=None,
                   ConvertedAccountId=None, ConvertedContactId=None, MasterRecordId=None,
                   ConvertedOpportunityId=None,
                   Lifecycle_Stage__c=rng.choice([*LIFECYCLE, None]))
        if status in converted:
            account = gen.account(company, created, modified)
            contact = gen.contact(first, last, rec["Email"], account["Id"], created, modified)
            opp = gen.opportunity(f"{company} deal", account["Id"], created, modified)
            rec.update(IsConverted=True, ConvertedDate=rec["SystemModstamp"][:10],
                       ConvertedAccountId=account["Id"], ConvertedContactId=contact["Id"],
                       ConvertedOpportunityId=opp["Id"] if rng.random() < 0.7 else None)
        else:
            roll = rng.random()
            if roll < 0.03 or (roll < 0.05 and live):
                deleted_ago = rng.uniform(0, 10 * 86400)
                stamp = gen.stamp(min(deleted_ago, created))
                rec.update(IsDeleted=True, SystemModstamp=stamp, _deletedDate=stamp)
                if roll >= 0.03:
                    rec["MasterRecordId"] = rng.choice(live)
            else:
                live.append(rec["Id"])
        leads[rec["Id"]] = rec
    for n in range(size // 10):
        created, modified = rng.uniform(0, window), rng.uniform(0, window)
        account = gen.account(f"{rng.choice(COMPANIES)} {n}", created, created)
        gen.contact(rng.choice(FIRST), rng.choice(LAST), f"contact{n}@example.com",
                    account["Id"], created, modified)
        if n % 3 == 0:
            gen.opportunity(f"{account['Name']} renewal", account["Id"], created, modified)
    return state


def build(seed: str, size: int | None, anchor: datetime | str) -> OrgState:
    if isinstance(anchor, str):
        anchor = parse_datetime(anchor)
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; choose one of {', '.join(SEEDS)}")
    if seed == "empty":
        return build_demo(0, anchor, seed)
    return build_demo(DEFAULT_SIZE if size is None else size, anchor, seed)
