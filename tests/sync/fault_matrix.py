"""The fault matrix: seeded random sequences of org changes, local moves and injected faults,
then a check that stagemap converged once the faults stopped.

A helper module, not a test module: tests/sync/test_fault_matrix.py runs the sequences and
bench/soak_faults.py runs ten times as many. Each sequence is drawn from `random.Random(seed)`
alone, so a failing seed replays exactly (STAGEMAP_FAULT_SEED). Unlike the rules machine
(tests/sync/model_rules.py), there is no reference model: the rulebook is proven there. Here the
claims are the ones that faults threaten:

- every stored record equals the org on every mirrored field, and its stage is what the
  current mapping says (no stage while its value is unmapped);
- every local move was pushed exactly once, or is a failed push with its reason;
- nothing was written twice (no write sent while the org already held the value).

Org-side changes and local moves use disjoint leads, so no conflict policy decides the end
state: what is left to decide is what faults can break.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

STATUS = "Status"
STEP_SECONDS = 61  # deleted/ reports whole minutes: every step is a minute of its own
LOOKBACK_MINUTES = 3
CLIENT_TIMEOUT = 0.6
SLOW_DELAY = 0.9  # longer than the client's timeout: the call times out, the org still applies
LEASE_SECONDS = 30
ORG_LEADS = 4
LOCAL_LEADS = 4
TIE_LEADS = 230  # more than one 200-record page, all on one SystemModstamp

# value -> (stage key, outbound). "Closed - Converted" is set by conversion only.
MAPPING = {
    "Open - Not Contacted": ("new", True),
    "Working - Contacted": ("contacted", True),
    "Closed - Converted": ("converted", False),
    "Closed - Not Converted": ("lost", True),
    "MQL": ("contacted", False),
    "SQL": ("in_progress", True),
    "Nurturing": (None, False),
    "Disqualified": ("lost", False),
    "Qualifié": (None, False),
    "Legacy - Cold": ("new", False),
}
SETTABLE = ("Open - Not Contacted", "Working - Contacted", "Closed - Not Converted", "MQL",
            "SQL", "Nurturing", "Disqualified", "Qualifié")
MOVE_TARGETS = ("new", "contacted", "in_progress", "lost")
NEW_VALUES = ("Fresh One", "Fresh Two", "Fresh Three")
# fault -> weight; a slow call costs a second of waiting, so it comes less often
FAULTS = {"503_burst": 1, "dropped": 1, "expired_session": 0.6, "request_limit": 0.7,
          "lock_row": 0.8, "slow": 0.4, "killed_between_pages": 0.8}
# the paths each kind of run calls (None: whichever call comes next)
FAULT_PATHS = {True: (None, "/query", "/query", "/describe", "/deleted"),
               False: (None, "/query", "/composite/sobjects", "/composite/sobjects")}


def map_status(harness) -> None:
    """Lead.Status both ways, mapped as MAPPING says: once per test, each sequence rolls back
    to it."""
    from mappings.models import FieldMapping, Stage
    from mappings.services.fields import field_mapping_create
    from mappings.services.values import MappingChange, picklist_values_apply
    from sync.services.refresh import sync_run_refresh

    conn = harness.connection
    # A new connection may already map Lead.Status (the default funnel): both ways here.
    if not FieldMapping.objects.filter(connection=conn, object_name="Lead",
                                       field_name=STATUS).update(direction="both"):
        field_mapping_create(connection=conn, object_name="Lead", field_name=STATUS,
                             direction="both", acting_user=None)
    with harness.capture_on_commit(execute=True):
        run = sync_run_refresh(connection=conn)
    assert run.status == "ok", run.error
    mapping = FieldMapping.objects.get(connection=conn, object_name="Lead", field_name=STATUS)
    stages = {s.key: s for s in Stage.objects.all()}
    changes = {
        pv.pk: MappingChange(stage=stages[MAPPING[pv.value][0]] if MAPPING[pv.value][0]
                             else None, outbound=MAPPING[pv.value][1])
        for pv in mapping.values.filter(value__in=MAPPING)
    }
    with harness.capture_on_commit(execute=True):
        picklist_values_apply(field_mapping=mapping, changes=changes, acting_user=None)


class SequenceFailed(AssertionError):
    pass


class Killed(BaseException):
    """A run stopped dead between two pages (a worker's SIGTERM); not an Exception, so nothing
    in the product swallows it."""


@dataclass
class Tally:
    sequences: int = 0
    steps: int = 0
    faults: Counter = field(default_factory=Counter)  # injected
    fired: Counter = field(default_factory=Counter)  # met a call (or a kill) and took effect
    actions: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)  # (seed, message)

    def line(self, seconds: float) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        fired = ", ".join(f"{k} {v}" for k, v in sorted(self.fired.items()))
        return (f"fault matrix: {self.sequences} sequences, {self.steps} steps, "
                f"{sum(self.faults.values())} faults injected ({faults}), "
                f"{sum(self.fired.values())} fired ({fired}) in {seconds:.1f} s; "
                f"failing seeds: {[seed for seed, _ in self.failures] or 'none'}")


@dataclass
class LocalLead:
    sf_id: str
    events: list = field(default_factory=list)  # ("move", value) / ("write", value, ok)


class Sequence:
    """One seeded sequence against the harness's org and connection."""

    def __init__(self, harness, seed: int, tally: Tally, *, steps: int) -> None:
        self.h = harness
        self.org = harness.server.org
        self.rng = random.Random(seed)
        self.seed = seed
        self.tally = tally
        self.steps = steps
        self.org_leads: list[str] = []
        self.local: dict[str, LocalLead] = {}
        self.added_values: list[str] = []
        self.kill_after_pages: int | None = None
        self.trace: list[str] = []
        self.injected = 0

    # -- plumbing ---------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.org.clock.now()

    def tick(self) -> None:
        self.org.clock.advance(STEP_SECONDS)

    def stages(self):
        from mappings.models import Stage

        return {s.key: s for s in Stage.objects.all()}

    def mapping(self):
        from mappings.models import FieldMapping

        return FieldMapping.objects.get(connection=self.h.connection, object_name="Lead",
                                        field_name=STATUS)

    def records(self):
        from sync.models import SyncedRecord

        return {r.sf_id: r for r in SyncedRecord.objects.filter(
            connection=self.h.connection, object_name="Lead").select_related("stage")}

    def fail(self, message: str) -> None:
        steps = "; ".join(self.trace)
        raise SequenceFailed(f"seed {self.seed}: {message}\n    steps: {steps}")

    # -- the sequence -----------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        for _ in range(self.steps):
            self.tick()
            self.step()
            self.tally.steps += 1
        self.converge()
        self.check()

    def setup(self) -> None:
        """The org's leads and a full sync; the mapping is the test's (`map_status`)."""
        from sync.services.inbound import sync_run_inbound

        self.org.reset()
        self.org.clock.freeze(datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
                              + timedelta(minutes=self.rng.randrange(10_000)))
        self.h.write_log.clear()
        for n in range(ORG_LEADS + LOCAL_LEADS):
            self.org.clock.advance(1)
            sf_id = self.org.create_record("Lead", {
                "LastName": f"Lead {n}", "Company": f"Co {n}",
                "Status": self.rng.choice(SETTABLE[:5])})
            if n < ORG_LEADS:
                self.org_leads.append(sf_id)
            else:
                self.local[sf_id] = LocalLead(sf_id)
        self.org.clock.advance(1)
        self.checked_run("full sync", lambda: sync_run_inbound(
            connection=self.h.connection, full=True, object_name="Lead"))

    def checked_run(self, what: str, action) -> list:
        with self.h.capture_on_commit(execute=True):
            runs = action()
        for run in runs:
            if run.status not in ("ok", "partial"):
                self.fail(f"{what} without faults ended {run.status}: {run.error}")
        return runs

    def step(self) -> None:
        actions = {
            "org_status": 3, "org_convert": 1, "org_delete": 1, "org_undelete": 1,
            "org_merge": 0.5, "org_new_value": 0.6, "org_deactivate": 0.5, "map_value": 0.8,
            "late_commit": 1, "page_ties": 0.3, "local_move": 3.5, "sync": 3, "push": 3,
        }
        name = self.rng.choices(list(actions), weights=list(actions.values()))[0]
        self.tally.actions[name] += 1
        self.trace.append(name)
        getattr(self, name)()

    # -- the org's side ---------------------------------------------------------------------

    def live_org_lead(self, *, deleted: bool = False) -> str | None:
        pool = [i for i in self.org_leads
                if bool(self.org.get_record("Lead", i)["IsDeleted"]) == deleted
                and (deleted or not self.org.get_record("Lead", i)["IsConverted"])]
        return self.rng.choice(pool) if pool else None

    def org_status(self) -> None:
        lead = self.live_org_lead()
        if lead:
            values = [*SETTABLE, *self.added_values]
            self.org.update_record("Lead", lead, {STATUS: self.rng.choice(values)})

    def org_convert(self) -> None:
        lead = self.live_org_lead()
        if lead:
            self.org.convert_lead(lead, create_opportunity=False)

    def org_delete(self) -> None:
        lead = self.live_org_lead()
        if lead:
            self.org.delete_record("Lead", lead)

    def org_undelete(self) -> None:
        lead = self.live_org_lead(deleted=True)
        if lead and not self.org.get_record("Lead", lead).get("MasterRecordId"):
            self.org.update_record("Lead", lead, {"IsDeleted": False})

    def org_merge(self) -> None:
        pool = [i for i in self.org_leads
                if not self.org.get_record("Lead", i)["IsDeleted"]
                and not self.org.get_record("Lead", i)["IsConverted"]]
        if len(pool) >= 2:
            master, loser = self.rng.sample(pool, 2)
            self.org.merge_records("Lead", master, loser)

    def org_new_value(self) -> None:
        fresh = [v for v in NEW_VALUES if v not in self.added_values]
        lead = self.live_org_lead()
        if fresh and lead:
            value = fresh[0]
            self.org.add_picklist_value("Lead", STATUS, value)
            self.added_values.append(value)
            self.org.update_record("Lead", lead, {STATUS: value})

    def org_deactivate(self) -> None:
        # Never an outbound value: deactivating one is a mapping problem, not a fault.
        candidates = [v for v in (*self.added_values, "Nurturing", "Disqualified", "MQL")
                      if not MAPPING.get(v, (None, False))[1]]
        self.org.deactivate_picklist_value("Lead", STATUS, self.rng.choice(candidates))

    def late_commit(self) -> None:
        """A change that commits with a SystemModstamp before what the last sync read."""
        from sync.models import SyncCursor

        cursor = SyncCursor.objects.filter(connection=self.h.connection,
                                           object_name="Lead").first()
        lead = self.live_org_lead()
        if cursor is None or cursor.last_modstamp is None or lead is None:
            return
        stamp = cursor.last_modstamp - timedelta(seconds=20)
        from connections.salesforce import parse_datetime

        if parse_datetime(self.org.get_record("Lead", lead)["SystemModstamp"]) >= stamp:
            return
        values = [*SETTABLE, *self.added_values]
        self.org.update_record("Lead", lead, {STATUS: self.rng.choice(values)}, modstamp=stamp)

    def page_ties(self) -> None:
        """More records on one SystemModstamp than one page holds: the keyset must go on by Id."""
        if len(self.org_leads) > ORG_LEADS:
            return
        stamp = self.now()
        for n in range(TIE_LEADS):
            self.org_leads.append(self.org.create_record(
                "Lead", {"LastName": f"Tie {n}", "Company": "Tie Co",
                         "Status": SETTABLE[n % len(SETTABLE)]}, modstamp=stamp))

    # -- stagemap's side --------------------------------------------------------------------

    def map_value(self) -> None:
        from mappings.services.values import MappingChange, picklist_values_apply

        unmapped = list(self.mapping().values.filter(stage__isnull=True))
        if not unmapped:
            return
        value = self.rng.choice(unmapped)
        stage = self.stages()[self.rng.choice(("new", "contacted", "in_progress", "lost"))]
        with self.h.capture_on_commit(execute=True):
            picklist_values_apply(field_mapping=self.mapping(),
                                  changes={value.pk: MappingChange(stage=stage, outbound=False)},
                                  acting_user=None)

    def local_move(self) -> None:
        from sync.services.record_stage import records_move_to_stage

        sf_id = self.rng.choice(list(self.local))
        record = self.records().get(sf_id)
        if record is None:
            return
        key = self.rng.choice(MOVE_TARGETS)
        with self.h.capture_on_commit(execute=True):
            outcome = records_move_to_stage(records=[record], stage=self.stages()[key],
                                            acting_user=None, allow_backward=True)
        if outcome.moved:
            self.local[sf_id].events.append(("move", self.outbound_value(key)))

    def outbound_value(self, key: str) -> str:
        return next(v for v, (k, out) in MAPPING.items() if k == key and out)

    # -- runs, with or without a fault --------------------------------------------------------

    def sync(self) -> None:
        from sync.services.inbound import sync_run_inbound

        self.faulted(lambda: sync_run_inbound(connection=self.h.connection,
                                              object_name="Lead"), inbound=True)

    def push(self) -> None:
        from sync.models import SyncedRecord
        from sync.services.outbound import sync_run_push

        if not SyncedRecord.objects.filter(connection=self.h.connection,
                                           outbound_state="pending").exists():
            self.local_move()  # a push with nothing to send would meet no fault

        self.faulted(lambda: [sync_run_push(connection=self.h.connection)], inbound=False)

    def faulted(self, action, *, inbound: bool) -> None:
        fault = self.inject(inbound=inbound) if self.rng.random() < 0.6 else None
        start = len(self.h.write_log)
        oauth_calls = self.org.count_requests(kind="oauth")
        killed = False
        try:
            with self.h.capture_on_commit(execute=True), self.killer():
                action()
        except Killed:
            killed = True
        finally:
            if fault and self.fired(fault, killed=killed, oauth_calls=oauth_calls):
                self.tally.fired[fault] += 1
            self.org.clear_faults()
            if fault == "slow":
                # The timed-out call is still running in the org: let it land first.
                time.sleep(SLOW_DELAY - CLIENT_TIMEOUT + 0.15)
            self.note_writes(start)
            if fault == "killed_between_pages":
                # Whoever was killed left its lease behind: the next run waits out the expiry.
                self.org.clock.advance(LEASE_SECONDS + 1)

    def fired(self, fault: str, *, killed: bool, oauth_calls: int) -> bool:
        if fault == "killed_between_pages":
            return killed
        if fault == "expired_session":
            return self.org.count_requests(kind="oauth") > oauth_calls
        if fault == "lock_row":
            return sum(entry[2] for entry in self.org._record_failures.values()) < self.injected
        return sum(f.count for f in self.org._faults) < self.injected

    @contextmanager
    def killer(self):
        """With a kill armed, the inbound run dies right after its k-th page committed."""
        from sync.services import inbound

        pages, original = [0], inbound._page_write
        if self.kill_after_pages is None:
            yield
            return

        def page_write(**kwargs):
            result = original(**kwargs)
            pages[0] += 1
            if pages[0] >= self.kill_after_pages:
                raise Killed(f"killed after page {pages[0]}")
            return result

        inbound._page_write = page_write
        try:
            yield
        finally:
            inbound._page_write = original
            self.kill_after_pages = None

    def inject(self, *, inbound: bool) -> str:
        kinds = {k: w for k, w in FAULTS.items()
                 if inbound or k not in ("killed_between_pages",)}
        if inbound:
            kinds.pop("lock_row")
        fault = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
        path = self.rng.choice(FAULT_PATHS[inbound])
        self.injected = count = self.rng.randint(1, 7)
        if fault == "503_burst":
            self.org.inject_fault(status=503, count=count, path_contains=path)
        elif fault == "dropped":
            self.org.inject_fault(drop_connection=True, count=count, path_contains=path)
        elif fault == "expired_session":
            self.org.expire_sessions()
        elif fault == "request_limit":
            self.injected = count = self.rng.randint(1, 3)
            self.org.inject_fault(status=403, error_code="REQUEST_LIMIT_EXCEEDED",
                                  message="TotalRequests Limit exceeded.", count=count,
                                  path_contains=path)
        elif fault == "lock_row":
            self.injected = 0
            for sf_id in self.rng.sample(list(self.local), 2):
                times = self.rng.randint(1, 3)
                self.injected += times
                self.org.fail_record(sf_id, "UNABLE_TO_LOCK_ROW",
                                     "unable to obtain exclusive access to this record",
                                     times=times)
        elif fault == "slow":
            self.injected = 1
            self.org.inject_fault(delay=SLOW_DELAY, count=1,
                                  path_contains="/query" if inbound else "/composite/sobjects")
        elif fault == "killed_between_pages":
            self.kill_after_pages = self.rng.randint(1, 2) if len(self.org_leads) > 200 else 1
            if self.kill_after_pages == 1 and self.rng.random() < 0.7:
                self.org_status()  # a page to be killed after
        self.tally.faults[fault] += 1
        self.trace[-1] += f"[{fault} {path or ''}]".replace(" ]", "]")
        return fault

    def note_writes(self, start: int) -> None:
        for write in self.h.write_log[start:]:
            lead = self.local.get(write.sf_id)
            if lead is not None and STATUS in write.fields:
                lead.events.append(("write", write.fields[STATUS], write.success,
                                    write.before.get(STATUS)))
            elif write.sf_id in self.org_leads:
                self.fail(f"{write.sf_id} was written ({write.fields}) but only the org "
                          "changed it")

    # -- the end: faults stopped, runs complete ---------------------------------------------

    def converge(self) -> None:
        from sync.services.inbound import sync_run_inbound
        from sync.services.outbound import sync_run_push

        self.org.clear_faults()
        self.org.clock.advance(LEASE_SECONDS + STEP_SECONDS)
        conn = self.h.connection
        start = len(self.h.write_log)
        self.checked_run("delta sync", lambda: sync_run_inbound(connection=conn,
                                                                object_name="Lead"))
        self.tick()
        self.checked_run("push", lambda: [sync_run_push(connection=conn)])
        self.tick()
        self.checked_run("delta sync", lambda: sync_run_inbound(connection=conn,
                                                                object_name="Lead"))
        self.tick()
        self.checked_run("second push", lambda: [sync_run_push(connection=conn)])
        self.note_writes(start)

    def check(self) -> None:
        from connections.salesforce import parse_datetime
        from sync.models import RecordError

        records = self.records()
        stage_of = {pv.value: (pv.stage.key if pv.stage_id else None)
                    for pv in self.mapping().values.select_related("stage")}
        errors = {e.record.sf_id: e.message for e in RecordError.objects.filter(
            record__connection=self.h.connection).select_related("record")}
        for sf in self.org.records("Lead", include_deleted=True):
            record = records.get(sf["Id"])
            if record is None and sf["IsDeleted"]:
                continue  # created and deleted between two syncs: nothing to mirror
            if record is None:
                self.fail(f"{sf['Id']} is in the org but not stored")
            want = {"raw_value": sf[STATUS] or "", "is_converted": bool(sf["IsConverted"]),
                    "is_deleted": bool(sf["IsDeleted"]),
                    "system_modstamp": parse_datetime(sf["SystemModstamp"]),
                    "company": sf.get("Company") or "",
                    "last_modified_by_id": (sf.get("LastModifiedById") or "")}
            if sf["IsDeleted"]:
                # A delete is mirrored as is_deleted and deleted_at (deleted/ has no modstamp).
                want = {"is_deleted": True, "master_record_id": sf.get("MasterRecordId") or ""}
            got = {k: getattr(record, k) for k in want}
            if "last_modified_by_id" in want and (got["last_modified_by_id"][:15]
                                                  == want["last_modified_by_id"][:15]):
                got["last_modified_by_id"] = want["last_modified_by_id"]
            if got != want:
                diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
                self.fail(f"{sf['Id']} stored ≠ org: {diff}")
            if sf["IsDeleted"]:
                continue
            key = record.stage.key if record.stage_id else None
            if sf["Id"] in self.local:
                self.check_local(self.local[sf["Id"]], record, sf, key, errors)
            elif key != ("converted" if sf["IsConverted"] else stage_of.get(sf[STATUS])):
                self.fail(f"{sf['Id']} ({sf[STATUS]!r}) is in {key}, the mapping says "
                          f"{stage_of.get(sf[STATUS])}")
        self.tally.sequences += 1

    def check_local(self, lead: LocalLead, record, sf: dict, key, errors: dict) -> None:
        segment_writes: Counter = Counter()
        for event in lead.events:
            if event[0] == "move":
                segment_writes = Counter()
                continue
            _, value, ok, before = event
            if not ok:
                continue
            if before == value:
                self.fail(f"{lead.sf_id}.{STATUS} = {value!r} was written while the org held it")
            segment_writes[value] += 1
            if segment_writes[value] > 1:
                self.fail(f"{lead.sf_id}.{STATUS} = {value!r} written twice for one move")
        if not any(event[0] == "move" for event in lead.events):
            if key != MAPPING[sf[STATUS]][0]:
                self.fail(f"{lead.sf_id} ({sf[STATUS]!r}), never moved, is in {key}")
            return
        want = self.outbound_value(key)
        if sf[STATUS] == want:
            if record.outbound_state == "failed":
                self.fail(f"{lead.sf_id} holds {want!r} in the org but is a failed push")
            return
        if record.outbound_state != "failed" or not errors.get(lead.sf_id):
            self.fail(f"{lead.sf_id} is in {key} but the org holds {sf[STATUS]!r}; push state "
                      f"{record.outbound_state}, error {errors.get(lead.sf_id)!r}; "
                      f"events {lead.events}")
