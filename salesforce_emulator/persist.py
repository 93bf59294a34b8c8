"""SQLite file in the data directory: the org's meta (seed, anchor, schema, counters, tokens)
plus every record changed since the seed, so saving a 100k-lead org takes milliseconds."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

RecordRow = tuple[str, str, dict[str, Any] | None]


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._conn.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, "
                           "sobject TEXT NOT NULL, data TEXT)")
        self._conn.commit()

    def load(self) -> tuple[dict[str, Any], list[RecordRow]] | None:
        """The meta and the changed records; a record of None is a purged seed record."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'org'").fetchone()
            if row is None:
                return None
            rows = self._conn.execute("SELECT sobject, id, data FROM records ORDER BY rowid")
            return json.loads(row[0]), [(sobject, rid, json.loads(data) if data else None)
                                        for sobject, rid, data in rows]

    def write(self, meta: dict[str, Any], rows: list[RecordRow], reset: bool) -> None:
        """Save meta and changed records; `reset` first forgets every change (back to seed)."""
        dumps = json.dumps
        upserts = [(rid, sobject, None if rec is None else dumps(rec))
                   for sobject, rid, rec in rows]
        with self._lock, self._conn:
            if reset:
                self._conn.execute("DELETE FROM records")
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('org', ?)", (dumps(meta),))
            self._conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", upserts)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
