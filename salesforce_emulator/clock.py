"""A controllable UTC clock: tests freeze and advance it to make ties and late commits."""

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frozen: datetime | None = None
        self._offset = timedelta()

    def now(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return datetime.now(UTC) + self._offset

    def freeze(self, dt: datetime | None = None) -> None:
        if dt is not None and dt.tzinfo is None:
            raise ValueError("freeze() needs a timezone-aware datetime")
        current = self.now()
        with self._lock:
            self._frozen = (dt or current).astimezone(UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def unfreeze(self) -> None:
        """Back to real time, dropping any offset."""
        with self._lock:
            self._frozen = None
            self._offset = timedelta()

    @property
    def frozen(self) -> bool:
        return self._frozen is not None


def fmt_datetime(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime:
    """Parse Salesforce and ISO 8601 datetimes (Z, +0000, +00:00 offsets, optional millis)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif len(value) >= 5 and value[-5] in "+-" and value[-3] != ":":
        value = value[:-2] + ":" + value[-2:]
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"datetime without a timezone: {text}")
    return dt.astimezone(UTC)
