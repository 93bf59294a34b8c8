"""The reference model of the README's "Rules" and the state machine that holds stagemap to it.

A helper module, not a test module: tests/sync/test_model_rules.py runs the machine, and
bench/soak_rules.py runs that test with many more examples. The reference (`Reference`) is
written from the README's "Rules" section alone; it never calls `sync.rules`. The machine drives
the real services against an emulated org and the real database, and after every step compares
what stagemap and the org hold with what the reference predicts.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

MISSING = "<missing>"
BOTH, OUTBOUND = "both", "outbound"
STATUS, LIFECYCLE = "Status", "Lifecycle_Stage__c"
SF_WINS, STAGEMAP_WINS, LATEST_WINS = "salesforce_wins", "stagemap_wins", "latest_wins"
POLICIES = (SF_WINS, STAGEMAP_WINS, LATEST_WINS)

DEFAULT_STAGES = [
    ("new", "New", 10, "open"),
    ("contacted", "Contacted", 20, "open"),
    ("in_progress", "In Progress", 30, "open"),
    ("converted", "Converted", 40, "converted"),
    ("lost", "Lost", 50, "lost"),
]
EXTRA_STAGES = ("extra_a", "extra_b")
# Lead.Status values of the emulator's schema a Sales Lead may hold (Partner_Accepted is for
# Partner leads only; every lead here is a Sales Lead). "Legacy - Cold" is inactive.
STATUS_VALUES = (
    "Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted",
    "MQL", "SQL", "Nurturing", "Disqualified", "Qualifié", "Legacy - Cold",
)
ADDED_STATUS_VALUES = ("Fresh One", "Fresh Two")
LIFECYCLE_VALUES = ("Subscriber", "Lead", "MQL", "SQL", "Opportunity", "Customer", "Churned",
                    "Other")
CONVERTED_STATUS = "Closed - Converted"
# A minute and a second: deleted/ reports whole minutes, so every step is a minute of its own.
STEP_SECONDS = 61
STAGE_KEYS = tuple(key for key, *_ in DEFAULT_STAGES) + EXTRA_STAGES


# -- what failed: one exception class per invariant, so Hypothesis tells them apart -----------


class InvariantFailed(AssertionError):
    name = "invariant"


def _failure(name: str) -> type[InvariantFailed]:
    return type(f"Invariant_{name}", (InvariantFailed,), {"name": name})


StageMismatch = _failure("stage_equals_reference")
RowsMismatch = _failure("records_known")
OrgFieldMismatch = _failure("org_outbound_field_equals_reference")
ConvertedMisplaced = _failure("converted_in_converted_stage")
ConvertedWritten = _failure("converted_never_written")
WrongStageWritten = _failure("written_value_maps_back_to_same_stage")
PendingAfterPush = _failure("nothing_pending_after_push")
WrittenTwice = _failure("nothing_written_twice")
MoveOutcomeMismatch = _failure("local_move_outcome")
MappingRuleMismatch = _failure("mapping_rule_refusal")
StepCrashed = _failure("step_raised")

SKIPPED = {name.strip() for name in os.environ.get("STAGEMAP_MODEL_SKIP", "").split(",") if name}


@dataclass
class Findings:
    """Counts for the run's summary (examples, steps, failures seen per invariant)."""

    examples: int = 0
    steps: int = 0
    checks: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    first_failure: dict[str, str] = field(default_factory=dict)

    failed_examples: int = 0

    def fail(self, cls: type[InvariantFailed], message: str) -> None:
        self.failures[cls.name] = self.failures.get(cls.name, 0) + 1
        self.failed_examples += 1
        self.first_failure.setdefault(cls.name, message[:2000])
        if cls.name not in SKIPPED:
            raise cls(message)


FINDINGS = Findings()


# -- the reference ------------------------------------------------------------------------------


@dataclass
class RefStage:
    key: str
    order: int
    category: str = "open"
    active: bool = True
    pk: int = 0


@dataclass
class RefValue:
    stage: str | None = None
    outbound: bool = False
    active: bool = True  # as stagemap knows it (the last refresh)


@dataclass
class RefField:
    name: str
    direction: str
    values: dict[str, RefValue] = field(default_factory=dict)  # what stagemap knows
    forward_only: bool = False
    policy: str = SF_WINS
    skip_empty_inbound: bool = False
    skip_empty_outbound: bool = False
    placeholder_stage: str | None = None
    external_placeholder: str = ""
    mirror: bool = True

    def outbound_value(self, stage: str | None) -> str | None:
        for value, ref in self.values.items():
            if ref.outbound and ref.stage == stage and stage is not None:
                return value
        return None


@dataclass
class RefLead:
    sf_id: str
    # Salesforce's side.
    sf: dict[str, str | None]
    sf_converted: bool = False
    sf_deleted: bool = False
    sf_modstamp: datetime | None = None
    # stagemap's side, as the rules say it should be.
    known: bool = False
    known_deleted: bool = False
    read_converted: bool = False
    read: dict[str, str | None] = field(default_factory=dict)  # field values as last read
    raw: str = ""
    stage: str | None = None
    source: str = "sf"  # "sf" or "local"
    state: str = "clean"  # "clean", "pending", "failed"
    stage_changed_at: datetime | None = None
    last_pushed: dict[str, str | None] = field(default_factory=dict)

    @property
    def local_pending(self) -> bool:
        return self.source == "local" and self.state != "clean"


class Reference:
    """What the README's rules say stagemap and the org hold. Plain Python, no project code."""

    def __init__(self) -> None:
        self.stages: dict[str, RefStage] = {
            key: RefStage(key, order, category) for key, _name, order, category in DEFAULT_STAGES
        }
        self.fields = {
            STATUS: RefField(STATUS, BOTH),
            LIFECYCLE: RefField(LIFECYCLE, OUTBOUND),
        }
        # What Salesforce offers (value -> active).
        self.sf_values = {
            STATUS: {v: v != "Legacy - Cold" for v in STATUS_VALUES},
            LIFECYCLE: dict.fromkeys(LIFECYCLE_VALUES, True),
        }
        self.leads: list[RefLead] = []
        self.cursor: tuple[datetime, str] | None = None

    # -- stages ------------------------------------------------------------------------------

    def converted_stage(self) -> str | None:
        candidates = [s for s in self.stages.values() if s.active and s.category == "converted"]
        candidates.sort(key=lambda s: (s.order, s.pk))
        return candidates[0].key if candidates else None

    def order(self, key: str | None) -> int:
        return self.stages[key].order if key is not None else 0

    def backward(self, current: str | None, target: str | None) -> bool:
        # Rule 8: reaching or leaving "no stage" is not a move back.
        return current is not None and target is not None and self.order(target) < self.order(
            current
        )

    @property
    def inbound(self) -> RefField:
        return self.fields[STATUS]

    def has_mirror_fields(self) -> bool:
        return self.fields[LIFECYCLE].mirror

    # -- rules 1-8: the stage a record gets from Salesforce ---------------------------------

    def mapped(self, value: str, current: str | None) -> str | None:
        """Rules 1 and 3."""
        f = self.inbound
        if value == "":
            return current if f.skip_empty_inbound else f.placeholder_stage
        known = f.values.get(value)
        return known.stage if known is not None else None

    def is_echo(self, lead: RefLead, value: str) -> bool:
        """Rule 4: the field holds exactly what stagemap last wrote to it."""
        return STATUS in lead.last_pushed and (lead.last_pushed[STATUS] or "") == value

    def local_wins(self, lead: RefLead, modstamp: datetime | None) -> bool:
        """Rule 6, for a Salesforce change meeting a local change not yet pushed."""
        policy = self.inbound.policy
        if policy == STAGEMAP_WINS:
            return True
        if policy == LATEST_WINS:
            ours = lead.stage_changed_at
            return ours is not None and (modstamp is None or modstamp <= ours)
        return False

    def salesforce_decides(self, lead: RefLead, target: str | None, now: datetime) -> None:
        """Salesforce (or a re-apply) decided the stage: the local change is dropped and the
        mirror fields follow (rule 9)."""
        if target != lead.stage:
            lead.stage = target
            lead.stage_changed_at = now
        lead.source = "sf"
        lead.state = "pending" if self.has_mirror_fields() else "clean"

    def inbound_decide(self, lead: RefLead, value: str, *, converted: bool, changed: bool,
                       modstamp: datetime | None, now: datetime, remap: bool) -> None:
        if converted and self.converted_stage() is not None:
            # Rule 2: converted leads sit in the converted stage and are never written to.
            if lead.stage != self.converted_stage():
                lead.stage = self.converted_stage()
                lead.stage_changed_at = now
            lead.source = "sf"
            lead.state = "clean"
            return
        if not changed or self.is_echo(lead, value):
            return
        if not remap:
            # A real change in Salesforce: what stagemap wrote before is history (so the same
            # value coming back later is a change, not an echo).
            lead.last_pushed.pop(STATUS, None)
        if lead.local_pending and (remap or self.local_wins(lead, modstamp)):
            return  # rules 6 and 7
        target = self.mapped(value, lead.stage)
        if self.inbound.forward_only and self.backward(lead.stage, target):
            target = lead.stage  # rule 8
        if target == lead.stage and not lead.local_pending:
            return
        self.salesforce_decides(lead, target, now)

    def read_row(self, lead: RefLead, now: datetime) -> None:
        """An inbound sync reads the lead's current row (rules 1-6)."""
        value = lead.sf[STATUS] or ""
        if not lead.known:
            lead.known = True
            lead.raw = value
            lead.read = dict(lead.sf)
            lead.read_converted = lead.sf_converted
            if lead.sf_converted and self.converted_stage() is not None:
                lead.stage = self.converted_stage()
            else:
                lead.stage = self.mapped(value, None)
            lead.stage_changed_at = now if lead.stage is not None else None
            return
        changed = value != lead.raw or (lead.sf_converted and not lead.read_converted)
        lead.known_deleted = False
        lead.raw = value
        lead.read = dict(lead.sf)
        lead.read_converted = lead.sf_converted
        self.inbound_decide(lead, value, converted=lead.sf_converted, changed=changed,
                            modstamp=lead.sf_modstamp, now=now, remap=False)

    def sync(self, *, full: bool, now: datetime) -> None:
        rows = sorted(
            (lead for lead in self.leads if not lead.sf_deleted),
            key=lambda lead: (lead.sf_modstamp, lead.sf_id),
        )
        if not full and self.cursor is not None:
            rows = [lead for lead in rows if (lead.sf_modstamp, lead.sf_id) > self.cursor]
        for lead in rows:
            self.read_row(lead, now)
        if rows:
            self.cursor = (rows[-1].sf_modstamp, rows[-1].sf_id)
        for lead in self.leads:
            if lead.sf_deleted and lead.known:
                lead.known_deleted = True

    def reapply(self, now: datetime) -> None:
        """Rules 4 and 7: a re-apply of the current mappings to what was read."""
        for lead in self.leads:
            if lead.known:
                self.inbound_decide(lead, lead.raw, converted=lead.read_converted, changed=True,
                                    modstamp=None, now=now, remap=True)

    # -- rules 10-13: local moves -------------------------------------------------------------

    def forward_only_fields(self) -> list[str]:
        return [f.name for f in self.fields.values() if f.forward_only]

    def move_verdict(self, lead: RefLead, target: str | None, allow_backward: bool) -> str | None:
        """None when allowed, else the reason ("converted", "inactive", "backward")."""
        # Rule 10; a move to an inactive stage is refused whatever the record.
        if target is not None and not self.stages[target].active:
            return "inactive"
        if lead.read_converted:
            return "converted"
        if self.backward(lead.stage, target) and self.forward_only_fields() and not allow_backward:
            return "backward"
        return None

    def move(self, lead: RefLead, target: str | None, now: datetime) -> None:
        lead.stage = target
        lead.stage_changed_at = now
        lead.source = "local"
        lead.state = "pending"  # rule 14

    # -- rules 15-19: the push ----------------------------------------------------------------

    def plan_field(self, f: RefField, stage: str | None) -> tuple[str | None, str | None]:
        """(value, None) to write, (MISSING, None) for nothing, (None, reason) for an error."""
        if stage is None:
            if f.skip_empty_outbound:
                return MISSING, None
            if f.external_placeholder:
                return f.external_placeholder, None
            return None, "no stage, no placeholder"  # rule 15
        value = f.outbound_value(stage)
        if value is None:
            if f.external_placeholder:
                return f.external_placeholder, None
            return None, f"no outbound value for {stage}"
        return value, None

    def plan(self, stage: str | None, names: list[str]) -> tuple[dict[str, str], str | None]:
        writes: dict[str, str] = {}
        for name in names:
            f = self.fields[name]
            value, reason = self.plan_field(f, stage)
            if reason is not None:
                return {}, f"{name}: {reason}"
            if value is MISSING:
                continue
            known = f.values.get(value)
            if known is None or not known.active:
                return {}, f"{name}: {value} is inactive"  # rule 16, as stagemap knows it
            writes[name] = value
        return writes, None

    def scope(self, lead: RefLead) -> list[str]:
        """Rule 14 (a local move writes every outbound field) and rule 9 (a Salesforce move
        writes the mirror fields only, never the field the change came from)."""
        if lead.source == "local":
            return [STATUS, LIFECYCLE]
        return [LIFECYCLE] if self.fields[LIFECYCLE].mirror else []

    def changed_there(self, lead: RefLead, name: str) -> bool:
        current = lead.sf[name]
        return current != lead.read.get(name) and current != lead.last_pushed.get(name, MISSING)

    def salesforce_wins_push(self, lead: RefLead, name: str) -> bool:
        policy = self.fields[name].policy
        if policy == STAGEMAP_WINS:
            return False
        if policy == LATEST_WINS:
            ours = lead.stage_changed_at
            return ours is None or (lead.sf_modstamp is not None and lead.sf_modstamp > ours)
        return True

    def push(self, now: datetime) -> dict[str, dict[str, str]]:
        """Every pending lead pushed; returns what each is expected to get written."""
        expected: dict[str, dict[str, str]] = {}
        for lead in self.leads:
            if not lead.known or lead.state != "pending":
                continue
            writes = self.push_one(lead, now)
            if writes:
                expected[lead.sf_id] = writes
        return expected

    def push_one(self, lead: RefLead, now: datetime) -> dict[str, str]:
        if lead.known_deleted:
            lead.state = "clean"  # nothing is written to a record known to be deleted
            return {}
        if lead.sf_converted and not lead.sf_deleted:
            # Rule 19 (a lead deleted in Salesforce is not in the push's re-read: not seen).
            lead.read_converted = True
            lead.read = dict(lead.sf)
            self.inbound_decide(lead, lead.sf[STATUS] or "", converted=True, changed=True,
                                modstamp=lead.sf_modstamp, now=now, remap=False)
            return {}
        names = self.scope(lead)
        writes, refusal = self.plan(lead.stage, names)
        # A lead deleted in Salesforce is missing from the push's re-read: stagemap sees only
        # what it read last, so there is no conflict to see and it compares with that.
        visible = not lead.sf_deleted
        there = lead.sf if visible else lead.read
        if visible and STATUS in names and self.changed_there(lead, STATUS) and (
            refusal is not None or writes.get(STATUS) != lead.sf[STATUS]
        ) and self.salesforce_wins_push(lead, STATUS):
            # Rule 17: Salesforce's value of the stage-deciding field wins; the record takes its
            # stage (rules 1-8) and the mirror fields follow in the same push.
            value = lead.sf[STATUS] or ""
            target = self.mapped(value, lead.stage)
            if self.inbound.forward_only and self.backward(lead.stage, target):
                target = lead.stage
            if target != lead.stage:
                lead.stage = target
                lead.stage_changed_at = now
            lead.raw = value
            lead.last_pushed.pop(STATUS, None)
            lead.source = "sf"
            names = self.scope(lead)
            writes, refusal = self.plan(lead.stage, names)
        if refusal is not None:
            if visible:
                lead.read = {**lead.read, **lead.sf}
            lead.state = "failed"  # rule 16: the record is written whole or not at all
            return {}
        sent = {}
        for name, value in writes.items():
            if there.get(name) == value:
                continue  # rule 18
            if visible and name == LIFECYCLE and self.changed_there(
                lead, name
            ) and self.salesforce_wins_push(lead, name):
                continue  # rule 17 on a field that does not decide the stage
            sent[name] = value
        if visible:
            lead.read = {**lead.read, **lead.sf}
        lead.state = "clean"
        if any(not self.sf_values[name].get(value, False) for name, value in sent.items()):
            # Deactivated in Salesforce since the last refresh: Salesforce refuses the record
            # whole. A value it already holds is not sent (rule 18), so it is no error.
            lead.state = "failed"
            return {}
        if sent and lead.sf_deleted:
            lead.state = "failed"  # deleted in Salesforce since the last sync: refused there
            return {}
        if sent:
            lead.sf.update(sent)
            lead.sf_modstamp = now
            lead.read.update(sent)
            lead.last_pushed.update(sent)
            if STATUS in sent:
                lead.raw = sent[STATUS]
        return sent


# -- the machine ---------------------------------------------------------------------------------


@dataclass
class Harness:
    """What the machine needs from the test: the org, the connection and helpers."""

    server: object
    connection: object
    capture_on_commit: object  # django_capture_on_commit_callbacks
    write_log: list
    enqueued: list


@dataclass
class LoggedWrite:
    sf_id: str
    fields: dict
    before: dict
    converted_before: bool
    success: bool
    step: int


CURRENT_STEP = [0]
lead_index = st.integers(min_value=0, max_value=5)
stage_choice = st.sampled_from((*STAGE_KEYS, None))


class StageRulesMachine(RuleBasedStateMachine):
    """Random steps on both sides; the reference predicts, the invariants compare."""

    harness: Harness  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.ref = Reference()
        self.step = 0
        self.pushed_in_step = False
        self.push_writes: list[LoggedWrite] = []
        self.failed_before = FINDINGS.failed_examples
        FINDINGS.examples += 1

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def org(self):
        return self.harness.server.org

    def now(self) -> datetime:
        return self.org.clock.now()

    def tick(self, name: str) -> datetime:
        self.org.clock.advance(STEP_SECONDS)
        self.step += 1
        CURRENT_STEP[0] = self.step
        self.pushed_in_step = False
        FINDINGS.steps += 1
        FINDINGS.by_rule[name] = FINDINGS.by_rule.get(name, 0) + 1
        return self.now()

    def run(self, name: str, action):
        """Run a product call with its after-commit work (re-apply, requeue) done as on commit."""
        try:
            with self.harness.capture_on_commit(execute=True):
                return action()
        except (ValidationError, InvariantFailed):
            raise
        except Exception as exc:  # a crash is a finding, with the step that caused it
            FINDINGS.fail(StepCrashed, f"{name} raised {type(exc).__name__}: {exc}")
            raise

    def lead(self, i: int) -> RefLead:
        return self.ref.leads[i % len(self.ref.leads)]

    def db_stages(self):
        from mappings.models import Stage

        return {s.key: s for s in Stage.objects.all()}

    def mapping(self, name: str):
        from mappings.models import FieldMapping

        return FieldMapping.objects.get(
            connection=self.harness.connection, object_name="Lead", field_name=name
        )

    def records(self):
        from sync.models import SyncedRecord

        return {
            r.sf_id: r
            for r in SyncedRecord.objects.filter(
                connection=self.harness.connection, object_name="Lead"
            ).select_related("stage")
        }

    def adopt_requeued(self) -> None:
        # When a failed record is retried is not a README rule: follow the product there.
        records = self.records()
        for lead in self.ref.leads:
            record = records.get(lead.sf_id)
            if lead.state == "failed" and record is not None and record.outbound_state == (
                "pending"
            ):
                lead.state = "pending"

    # -- setup --------------------------------------------------------------------------------

    @initialize(
        statuses=st.lists(st.sampled_from((*STATUS_VALUES[:-1], None)), min_size=3, max_size=6),
        status_map=st.lists(stage_choice, min_size=len(STATUS_VALUES),
                            max_size=len(STATUS_VALUES)),
        lifecycle_map=st.lists(stage_choice, min_size=len(LIFECYCLE_VALUES),
                               max_size=len(LIFECYCLE_VALUES)),
        mirror=st.booleans(),
    )
    def setup(self, statuses, status_map, lifecycle_map, mirror):
        from mappings.services.fields import field_mapping_create
        from mappings.services.values import MappingChange, picklist_values_apply
        from sync.services.inbound import sync_run_inbound
        from sync.services.refresh import sync_run_refresh

        _reset_database()
        self.org.reset()
        self.org.clock.freeze(datetime.now(UTC).replace(microsecond=0))
        self.harness.write_log.clear()
        conn = self.harness.connection
        for n, status in enumerate(statuses):
            self.org.clock.advance(1)
            sf_id = self.org.create_record(
                "Lead", {"LastName": f"Lead {n}", "Company": f"Co {n}", "Status": status}
            )
            self.ref.leads.append(
                RefLead(sf_id, {STATUS: status, LIFECYCLE: None}, sf_modstamp=self.now())
            )
        self.org.clock.advance(1)
        field_mapping_create(connection=conn, object_name="Lead", field_name=STATUS,
                             direction=BOTH, acting_user=None)
        field_mapping_create(connection=conn, object_name="Lead", field_name=LIFECYCLE,
                             direction=OUTBOUND, acting_user=None, mirror=mirror)
        self.ref.fields[LIFECYCLE].mirror = mirror
        sync_run_refresh(connection=conn)
        stages = self.db_stages()
        for key, stage in self.ref.stages.items():
            stage.pk = stages[key].pk
        for name, plan in ((STATUS, status_map), (LIFECYCLE, lifecycle_map)):
            mapping = self.mapping(name)
            values = {pv.value: pv for pv in mapping.values.all()}
            pool = STATUS_VALUES if name == STATUS else LIFECYCLE_VALUES
            taken: set[str] = set()
            changes = {}
            for value, key in zip(pool, plan, strict=True):
                key = None if key in EXTRA_STAGES else key
                active = self.ref.sf_values[name][value]
                outbound = key is not None and key not in taken and active
                if outbound:
                    taken.add(key)
                self.ref.fields[name].values[value] = RefValue(key, outbound, active)
                changes[values[value].pk] = MappingChange(
                    stage=stages[key] if key else None, outbound=outbound
                )
            self.run("setup mapping", lambda m=mapping, c=changes: picklist_values_apply(
                field_mapping=m, changes=c, acting_user=None))
        self.ref.reapply(self.now())
        self.org.clock.advance(1)
        self.run("setup sync", lambda: sync_run_inbound(connection=conn, full=True,
                                                        object_name="Lead"))
        self.ref.sync(full=True, now=self.now())

    # -- Salesforce's side --------------------------------------------------------------------

    @rule(i=lead_index, value=st.sampled_from((*STATUS_VALUES, *ADDED_STATUS_VALUES, None)))
    def sf_set_status(self, i, value):
        lead = self.lead(i)
        if lead.sf_deleted or lead.sf_converted or (value is not None
                                                    and value not in self.ref.sf_values[STATUS]):
            return
        self.tick("sf_set_status")
        self.org.update_record("Lead", lead.sf_id, {STATUS: value})
        lead.sf[STATUS] = value
        lead.sf_modstamp = self.now()

    @rule(i=lead_index, value=st.sampled_from((*LIFECYCLE_VALUES, None)))
    def sf_set_lifecycle(self, i, value):
        lead = self.lead(i)
        if lead.sf_deleted or lead.sf_converted:
            return
        self.tick("sf_set_lifecycle")
        self.org.update_record("Lead", lead.sf_id, {LIFECYCLE: value})
        lead.sf[LIFECYCLE] = value
        lead.sf_modstamp = self.now()

    @rule(i=lead_index)
    def sf_convert(self, i):
        lead = self.lead(i)
        if lead.sf_deleted or lead.sf_converted:
            return
        self.tick("sf_convert")
        self.org.convert_lead(lead.sf_id)
        lead.sf_converted = True
        lead.sf[STATUS] = CONVERTED_STATUS
        lead.sf_modstamp = self.now()

    @rule(i=lead_index)
    def sf_delete(self, i):
        lead = self.lead(i)
        if lead.sf_deleted:
            return
        self.tick("sf_delete")
        self.org.delete_record("Lead", lead.sf_id)
        lead.sf_deleted = True
        lead.sf_modstamp = self.now()

    @rule(i=lead_index)
    def sf_undelete(self, i):
        lead = self.lead(i)
        if not lead.sf_deleted:
            return
        self.tick("sf_undelete")
        self.org.update_record("Lead", lead.sf_id, {"IsDeleted": False})
        lead.sf_deleted = False
        lead.sf_modstamp = self.now()

    @rule(value=st.sampled_from(ADDED_STATUS_VALUES))
    def sf_add_status_value(self, value):
        if value in self.ref.sf_values[STATUS]:
            return
        self.tick("sf_add_status_value")
        self.org.add_picklist_value("Lead", STATUS, value)
        self.ref.sf_values[STATUS][value] = True

    @rule(name=st.sampled_from((STATUS, LIFECYCLE)), n=st.integers(0, 11))
    def sf_deactivate_value(self, name, n):
        active = [v for v, on in self.ref.sf_values[name].items() if on and v != CONVERTED_STATUS]
        if not active:
            return
        value = active[n % len(active)]
        self.tick("sf_deactivate_value")
        self.org.deactivate_picklist_value("Lead", name, value)
        self.ref.sf_values[name][value] = False

    # -- stagemap's side: mappings and stages -------------------------------------------------

    @rule()
    def refresh(self):
        from sync.services.refresh import sync_run_refresh

        self.tick("refresh")
        self.run("refresh", lambda: sync_run_refresh(connection=self.harness.connection))
        for name, offered in self.ref.sf_values.items():
            for value, active in offered.items():
                known = self.ref.fields[name].values.setdefault(value, RefValue())
                known.active = active

    @rule(name=st.sampled_from((STATUS, LIFECYCLE)), n=st.integers(0, 11), stage=stage_choice,
          outbound=st.booleans(), swap=st.booleans())
    def map_value(self, name, n, stage, outbound, swap):
        """Map a value to a stage (rule 20), maybe as the outbound value, maybe clearing the
        stage's other outbound value in the same change."""
        from mappings.services.values import MappingChange, picklist_values_apply

        f = self.ref.fields[name]
        values = sorted(f.values)
        if not values or (stage is not None and stage not in self.ref.stages):
            return
        value = values[n % len(values)]
        if stage is not None and not self.ref.stages[stage].active:
            return  # refused by values.py, but not a README rule: not asked
        if outbound and not f.values[value].active:
            return  # likewise
        self.tick("map_value")
        mapping = self.mapping(name)
        pvs = {pv.value: pv for pv in mapping.values.all()}
        stages = self.db_stages()
        changes = {pvs[value].pk: MappingChange(stages[stage] if stage else None, outbound)}
        new = copy.deepcopy(f.values)
        new[value] = RefValue(stage, outbound, f.values[value].active)
        other = next((v for v, r in f.values.items()
                      if v != value and r.outbound and r.stage == stage and stage), None)
        if outbound and other is not None and swap:
            changes[pvs[other].pk] = MappingChange(stages[stage], False)
            new[other].outbound = False
        refusal = None
        if outbound and stage is None:
            refusal = "rule 20: an outbound value is mapped to its stage"
        elif outbound and sum(1 for r in new.values() if r.outbound and r.stage == stage) > 1:
            refusal = "rule 20: one outbound value per stage"
        elif name == STATUS and value == f.external_placeholder and stage is not None:
            refusal = "rule 21: the placeholder of the inbound field maps to no stage"
        try:
            self.run("map_value", lambda: picklist_values_apply(
                field_mapping=mapping, changes=changes, acting_user=None))
        except ValidationError as exc:
            if refusal is None:
                FINDINGS.fail(MappingRuleMismatch, f"map {name} {value!r} -> {stage} "
                              f"outbound={outbound}: refused ({exc.messages}), rules allow it")
            return
        if refusal is not None:
            FINDINGS.fail(MappingRuleMismatch, f"map {name} {value!r} -> {stage} "
                          f"outbound={outbound}: accepted, but {refusal}")
        stage_moved = any(new[v].stage != f.values[v].stage for v in new)
        f.values = new
        if stage_moved and name == STATUS:
            self.ref.reapply(self.now())
        if stage_moved:
            self.adopt_requeued()

    @rule(name=st.sampled_from((STATUS, LIFECYCLE)),
          option=st.sampled_from(("forward_only", "policy", "skip_empty_inbound",
                                  "skip_empty_outbound", "placeholder_stage",
                                  "external_placeholder", "mirror")),
          flag=st.booleans(), policy=st.sampled_from(POLICIES), stage=stage_choice,
          n=st.integers(0, 12))
    def edit_options(self, name, option, flag, policy, stage, n):
        from mappings.services.fields import field_mapping_save

        f = self.ref.fields[name]
        mapping = self.mapping(name)
        refusal = None
        if option == "forward_only":
            f.forward_only = mapping.forward_only = flag
        elif option == "policy":
            if name != STATUS:
                return
            f.policy = mapping.conflict_policy = policy
        elif option == "skip_empty_inbound":
            if name != STATUS:
                return
            f.skip_empty_inbound = mapping.skip_empty_inbound = flag
        elif option == "skip_empty_outbound":
            f.skip_empty_outbound = mapping.skip_empty_outbound = flag
        elif option == "placeholder_stage":
            if name != STATUS or (stage is not None and (
                    stage not in self.ref.stages or not self.ref.stages[stage].active)):
                return
            f.placeholder_stage = stage
            mapping.empty_placeholder_stage = self.db_stages()[stage] if stage else None
        elif option == "external_placeholder":
            pool = sorted(f.values) + ["", "Not A Value"]
            value = pool[n % len(pool)]
            known = f.values.get(value)
            if value and (known is None or not known.active):
                refusal = "rule 21: the placeholder is an active value of the field"
            elif value and name == STATUS and known.stage is not None:
                refusal = "rule 21: on the inbound field the placeholder maps to no stage"
            mapping.external_placeholder_value = value
            if refusal is None:
                f.external_placeholder = value
        else:
            if name != LIFECYCLE:
                return
            f.mirror = mapping.mirror = flag
        self.tick("edit_options")
        try:
            self.run("edit_options", lambda: field_mapping_save(
                field_mapping=mapping, acting_user=None))
        except ValidationError as exc:
            if refusal is None:
                FINDINGS.fail(MappingRuleMismatch, f"{name}.{option}: refused ({exc.messages})")
            return
        if refusal is not None:
            FINDINGS.fail(MappingRuleMismatch, f"{name}.{option} = {value!r}: accepted, "
                          f"but {refusal}")

    @rule(key=st.sampled_from(EXTRA_STAGES), order=st.sampled_from((5, 15, 25, 35, 45, 55)))
    def add_stage(self, key, order):
        from mappings.models import Stage
        from mappings.services.stages import stage_save

        if key in self.ref.stages:
            return
        self.tick("add_stage")
        stage = self.run("add_stage", lambda: stage_save(
            stage=Stage(key=key, name=key.replace("_", " ").title(), order=order),
            acting_user=None))
        self.ref.stages[key] = RefStage(key, order, pk=stage.pk)

    @rule(source=st.sampled_from(STAGE_KEYS), into=st.sampled_from(STAGE_KEYS))
    def merge(self, source, into):
        """Rule 13. The converted stage is never merged away (see the report: rule 2 would
        then depend on which stage is next in line)."""
        from mappings.services.merge import stage_merge

        ref = self.ref
        if source not in ref.stages or into not in ref.stages:
            return
        if ref.stages[source].category == "converted":
            return
        self.tick("merge")
        refusal = None
        if source == into:
            refusal = "same stage"
        elif not ref.stages[into].active:
            refusal = "rule 10: the target is inactive"
        elif any(f.outbound_value(source) and f.outbound_value(into)
                 for f in ref.fields.values()):
            refusal = "rule 20: two outbound values for the target"
        stages = self.db_stages()
        try:
            self.run("merge", lambda: stage_merge(source=stages[source], target=stages[into],
                                                  acting_user=None))
        except ValidationError as exc:
            if refusal is None:
                FINDINGS.fail(MappingRuleMismatch, f"merge {source} -> {into}: refused "
                              f"({exc.messages})")
            return
        if refusal is not None:
            FINDINGS.fail(MappingRuleMismatch, f"merge {source} -> {into}: accepted, but "
                          f"{refusal}")
        now = self.now()
        for f in ref.fields.values():
            for value in f.values.values():
                if value.stage == source:
                    value.stage = into
            if f.placeholder_stage == source:
                f.placeholder_stage = into
        for lead in ref.leads:
            if lead.known and lead.stage == source:
                if lead.read_converted:
                    lead.stage = into
                    lead.stage_changed_at = now
                else:
                    ref.move(lead, into, now)
        ref.stages[source].active = False
        ref.reapply(now)
        self.adopt_requeued()

    # -- stagemap's side: local moves ---------------------------------------------------------

    def movable(self):
        return [lead for lead in self.ref.leads if lead.known and not lead.known_deleted]

    @rule(i=lead_index, stage=stage_choice, allow_backward=st.booleans())
    def move_one(self, i, stage, allow_backward):
        from sync.services.record_stage import record_set_stage

        leads = self.movable()
        if not leads or (stage is not None and stage not in self.ref.stages):
            return
        lead = leads[i % len(leads)]
        self.tick("move_one")
        record = self.records()[lead.sf_id]
        target = self.db_stages()[stage] if stage else None
        verdict = None if lead.stage == stage else self.ref.move_verdict(
            lead, stage, allow_backward)
        try:
            moved = self.run("move_one", lambda: record_set_stage(
                records=[record], stage=target, acting_user=None, allow_backward=allow_backward))
        except ValidationError as exc:
            if verdict is None:
                FINDINGS.fail(MoveOutcomeMismatch, f"move {lead.sf_id} {lead.stage} -> {stage} "
                              f"refused ({exc.messages}); the rules allow it")
            return
        if verdict is not None:
            FINDINGS.fail(MoveOutcomeMismatch, f"move {lead.sf_id} {lead.stage} -> {stage} "
                          f"allowed (moved {moved}); the rules refuse it: {verdict}")
        if lead.stage != stage:
            self.ref.move(lead, stage, self.now())

    @rule(mask=st.integers(1, 63), stage=stage_choice, allow_backward=st.booleans())
    def move_bulk(self, mask, stage, allow_backward):
        from sync.models import SyncedRecord
        from sync.services.record_stage import records_move_to_stage

        leads = [lead for n, lead in enumerate(self.movable()) if mask & (1 << n)]
        if not leads or (stage is not None and stage not in self.ref.stages):
            return
        self.tick("move_bulk")
        target = self.db_stages()[stage] if stage else None
        records = SyncedRecord.objects.filter(
            connection=self.harness.connection, sf_id__in=[lead.sf_id for lead in leads]
        )
        outcome = self.run("move_bulk", lambda: records_move_to_stage(
            records=records, stage=target, acting_user=None, allow_backward=allow_backward))
        moved, refused = 0, {}
        for lead in leads:
            if lead.stage == stage:
                continue  # already there: nothing to move or refuse
            verdict = self.ref.move_verdict(lead, stage, allow_backward)
            if verdict is None:
                self.ref.move(lead, stage, self.now())
                moved += 1
            else:
                refused[verdict] = refused.get(verdict, 0) + 1
        skipped = {code: count for code, count in outcome.refused.items() if count}
        if (outcome.moved, skipped) != (moved, refused):
            FINDINGS.fail(MoveOutcomeMismatch, f"bulk move to {stage}: moved {outcome.moved}, "
                          f"skipped {dict(outcome.refused)}; the rules say moved {moved}, "
                          f"skipped {refused}")

    # -- syncs, re-apply, push ----------------------------------------------------------------

    @rule()
    def sync_delta(self):
        self.sync(full=False)

    @rule()
    def sync_full(self):
        self.sync(full=True)

    def sync(self, *, full: bool) -> None:
        from sync.services.inbound import sync_run_inbound

        self.tick("sync_full" if full else "sync_delta")
        runs = self.run("sync", lambda: sync_run_inbound(
            connection=self.harness.connection, full=full, object_name="Lead"))
        for run in runs:
            if run.status not in ("ok", "partial"):
                FINDINGS.fail(StepCrashed, f"sync run {run.status}: {run.error}")
        self.ref.sync(full=full, now=self.now())

    @rule()
    def reapply(self):
        from sync.services.reapply import records_reapply_mappings

        self.tick("reapply")
        self.run("reapply", lambda: records_reapply_mappings(connection=self.harness.connection))
        self.ref.reapply(self.now())

    @rule()
    def push(self):
        self.tick("push")
        self.do_push()

    def do_push(self) -> dict:
        from sync.services.outbound import sync_run_push

        start = len(self.harness.write_log)
        run = self.run("push", lambda: sync_run_push(connection=self.harness.connection))
        if run.status not in ("ok", "partial"):
            FINDINGS.fail(StepCrashed, f"push run {run.status}: {run.error}")
        expected = self.ref.push(self.now())
        self.pushed_in_step = True
        self.push_writes = self.harness.write_log[start:]
        self.push_expected = expected
        return expected

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def holds(self):
        if not self.ref.leads:
            return  # before setup
        self.check_all()

    def check_all(self) -> None:
        FINDINGS.checks += 1
        records = self.records()
        converted_stage = self.ref.converted_stage()
        for lead in self.ref.leads:
            record = records.get(lead.sf_id)
            if lead.known != (record is not None):
                FINDINGS.fail(RowsMismatch, f"{lead.sf_id}: stored={record is not None}, "
                              f"the reference says {lead.known}")
            if record is None:
                continue
            if record.is_deleted != lead.known_deleted:
                FINDINGS.fail(RowsMismatch, f"{lead.sf_id}: deleted={record.is_deleted}, "
                              f"the reference says {lead.known_deleted}")
            if lead.known_deleted:
                continue
            key = record.stage.key if record.stage_id else None
            if lead.read_converted and key != converted_stage:
                FINDINGS.fail(ConvertedMisplaced, f"converted lead {lead.sf_id} is in {key}, "
                              f"not {converted_stage} ({self.describe(lead, record)})")
            if key != lead.stage:
                FINDINGS.fail(StageMismatch, f"{lead.sf_id}: stage {key}, the reference says "
                              f"{lead.stage} ({self.describe(lead, record)})")
        for lead in self.ref.leads:
            sf = self.org.get_record("Lead", lead.sf_id)
            for name in (STATUS, LIFECYCLE):
                if sf.get(name) != lead.sf[name]:
                    FINDINGS.fail(OrgFieldMismatch, f"{lead.sf_id}.{name} is {sf.get(name)!r} "
                                  f"in the org, the reference says {lead.sf[name]!r} "
                                  f"({self.describe(lead, records.get(lead.sf_id))})")
        for write in self.harness.write_log:
            if write.converted_before:
                FINDINGS.fail(ConvertedWritten, f"step {write.step}: converted lead "
                              f"{write.sf_id} was sent {write.fields}")
        if self.pushed_in_step:
            self.check_push(records)

    def check_push(self, records) -> None:
        from sync.models import SyncedRecord

        pending = SyncedRecord.objects.filter(
            connection=self.harness.connection, outbound_state="pending"
        ).values_list("sf_id", flat=True)
        if pending:
            FINDINGS.fail(PendingAfterPush, f"pending after the push: {sorted(pending)}")
        seen = set()
        mappings = {name: self.mapping(name) for name in (STATUS, LIFECYCLE)}
        by_value = {name: {pv.value: (pv.stage.key if pv.stage_id else None)
                           for pv in m.values.select_related("stage")}
                    for name, m in mappings.items()}
        for write in self.push_writes:
            for name, value in write.fields.items():
                if write.before.get(name) == value:
                    FINDINGS.fail(WrittenTwice, f"{write.sf_id}.{name} = {value!r} was sent "
                                  "while Salesforce already held it")
                if (write.sf_id, name) in seen:
                    FINDINGS.fail(WrittenTwice, f"{write.sf_id}.{name} sent twice in one push")
                seen.add((write.sf_id, name))
                if not write.success or name not in by_value:
                    continue
                record = records.get(write.sf_id)
                key = record.stage.key if record is not None and record.stage_id else None
                placeholder = mappings[name].external_placeholder_value
                if value != placeholder and by_value[name].get(value) != key:
                    FINDINGS.fail(WrongStageWritten, f"{write.sf_id}.{name} = {value!r} maps to "
                                  f"{by_value[name].get(value)}, the record is in {key}")

    def describe(self, lead: RefLead, record) -> str:
        if record is None:
            return "not stored"
        return (f"stored raw={record.raw_value!r} source={record.stage_source} "
                f"state={record.outbound_state} pushed={record.last_pushed_values}; reference "
                f"raw={lead.raw!r} source={lead.source} state={lead.state} "
                f"pushed={lead.last_pushed} sf={lead.sf} converted={lead.sf_converted}")

    def teardown(self):
        """A final delta sync and push: then everything must agree, and a second push must
        write nothing. Skipped when the example already failed (its failure is the report)."""
        if self.ref.leads and FINDINGS.failed_examples == self.failed_before:
            self.final_check()

    def final_check(self) -> None:
        from sync.services.inbound import sync_run_inbound

        self.tick("final_sync")
        self.run("final sync", lambda: sync_run_inbound(
            connection=self.harness.connection, object_name="Lead"))
        self.ref.sync(full=False, now=self.now())
        self.check_all()
        self.tick("final_push")
        self.do_push()
        self.check_all()
        self.tick("final_second_push")
        start = len(self.harness.write_log)
        self.do_push()
        self.check_all()
        again = self.harness.write_log[start:]
        if again:
            FINDINGS.fail(WrittenTwice, f"a second push right after a clean one sent "
                          f"{[(w.sf_id, w.fields) for w in again]}")


def _reset_database() -> None:
    """Every row an example may have written, gone; the default funnel as the migration has it."""
    from mappings.models import FieldMapping, PicklistRefresh, Stage
    from sync.models import (
        RecordError,
        StageChange,
        SyncCursor,
        SyncedRecord,
        SyncLease,
        SyncRun,
    )

    for model in (RecordError, StageChange, SyncedRecord, SyncCursor, SyncLease, SyncRun,
                  PicklistRefresh, FieldMapping):
        model.objects.all().delete()
    Stage.objects.exclude(key__in=[key for key, *_ in DEFAULT_STAGES]).delete()
    for key, name, order, category in DEFAULT_STAGES:
        Stage.objects.update_or_create(
            key=key, defaults={"name": name, "order": order, "category": category,
                               "active": True}
        )


def install_write_log(server, machine_step) -> list[LoggedWrite]:
    """Record every record update the org is asked for (collections and single PATCH), with
    the record as it was before, by wrapping this test's own server's REST handler."""
    from salesforce_emulator.ids import normalize

    rest = server._httpd.app.rest
    log: list[LoggedWrite] = []
    original_collections = rest.collections_update
    original_patch = rest.patch

    def snapshot(raw_id):
        rid = normalize(str(raw_id or ""))
        with server.org.lock:
            current = server.org.state.records["Lead"].get(rid)
            return rid, dict(current) if current else {}

    def collections_update(body, user_id):
        items = body.get("records") if isinstance(body, dict) else None
        before = [snapshot(item.get("id") or item.get("Id")) for item in items or []
                  if isinstance(item, dict)]
        results = original_collections(body, user_id)
        for (rid, record), item, result in zip(before, items or [], results, strict=False):
            fields = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
            log.append(LoggedWrite(rid, fields, record, bool(record.get("IsConverted")),
                                   bool(result.get("success")), machine_step()))
        return results

    def patch(name, record_id, body, user_id):
        rid, record = snapshot(record_id)
        ok = False
        try:
            original_patch(name, record_id, body, user_id)
            ok = True
        finally:
            log.append(LoggedWrite(rid, dict(body or {}), record,
                                   bool(record.get("IsConverted")), ok, machine_step()))

    rest.collections_update = collections_update
    rest.patch = patch
    return log


def restore_write_log(server) -> None:
    rest = server._httpd.app.rest
    for name in ("collections_update", "patch"):
        rest.__dict__.pop(name, None)


def fake_now(server):
    """django.utils.timezone.now on the org's clock: local changes and Salesforce changes then
    share one timeline (each step a distinct second), so "latest change wins" is decidable."""

    def now():
        return server.org.clock.now()

    return now




@contextmanager
def empty_org(tmp_path_factory) -> Iterator:
    """An org of the test module's own with no records: each sequence creates its few leads."""
    from salesforce_emulator.server import EmulatorServer

    server = EmulatorServer(tmp_path_factory.mktemp("empty-org"), seed="empty")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def harness(server, name: str, *, settings, monkeypatch, capture_on_commit,
            step: Callable[[], int]) -> Iterator[Harness]:
    """A connection to `server`, pushes as explicit steps (never queued tasks), one clock for
    both sides and every write the org is asked for logged."""
    from connections import crypto
    from connections.models import Connection

    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = str(server.ca_path)
    settings.STAGEMAP_SALESFORCE_BACKOFF = 0
    settings.STAGEMAP_SYNC_OPPORTUNITIES = False
    creds = server.credentials
    connection = Connection.objects.create(
        name=name,
        auth_method=Connection.AuthMethod.CLIENT_CREDENTIALS,
        login_url=server.login_url,
        consumer_key=creds.consumer_key,
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": creds.consumer_secret}),
    )
    enqueued: list = []
    monkeypatch.setattr("sync.services.outbound.push_enqueue", enqueued.append)
    monkeypatch.setattr("django.utils.timezone.now", fake_now(server))
    log = install_write_log(server, step)
    try:
        yield Harness(server, connection, capture_on_commit, log, enqueued)
    finally:
        restore_write_log(server)
        server.org.clock.unfreeze()
