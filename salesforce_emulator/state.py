"""The org's data: schema, records and id counters, as one copyable, persistable value."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from salesforce_emulator import schema
from salesforce_emulator.ids import make_id


@dataclass
class OrgState:
    org_id: str
    users: dict[str, str]
    objects: dict[str, schema.SObjectDef]
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    seed: str = "demo"
    size: int = 0
    anchor: str = ""  # the seed's "now": regenerating with it gives the same records
    purged_at: str | None = None  # recycle bin emptied: deleted/ cannot reach further back

    def new_id(self, prefix: str) -> str:
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return make_id(prefix, self.counters[prefix])

    def copy(self) -> OrgState:
        # Records are replaced, never mutated in place, so a shallow copy per record suffices.
        return OrgState(
            org_id=self.org_id,
            users=dict(self.users),
            objects=copy.deepcopy(self.objects),
            records={name: dict(rows) for name, rows in self.records.items()},
            counters=dict(self.counters),
            seed=self.seed,
            size=self.size,
            anchor=self.anchor,
            purged_at=self.purged_at,
        )

    def meta_json(self) -> dict[str, Any]:
        return {"org_id": self.org_id, "users": self.users, "counters": self.counters,
                "seed": self.seed, "size": self.size, "purged_at": self.purged_at,
                "anchor": self.anchor,
                "objects": schema.to_json(self.objects)}

    def apply_saved(self, meta: dict[str, Any],
                    rows: list[tuple[str, str, dict[str, Any] | None]]) -> None:
        """Replay what was saved on top of a freshly regenerated seed."""
        self.objects = schema.from_json(meta["objects"])
        self.users = meta["users"]
        self.counters = meta["counters"]
        self.purged_at = meta.get("purged_at")
        for name in self.objects:
            self.records.setdefault(name, {})
        for sobject, rid, record in rows:
            if record is None:
                self.records.get(sobject, {}).pop(rid, None)
            else:
                self.records.setdefault(sobject, {})[rid] = record
