"""Reading Salesforce pages in a worker thread while the caller writes the ones before."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

from django.conf import settings
from django.db import connections as db_connections

T = TypeVar("T")


def prefetched(pages: Iterator[T]) -> Prefetched[T]:
    """Fetch the pages in a thread, started at once, while the caller works on the ones before.

    Network time then overlaps database time, the first page's included: it is on its way
    while the caller still prepares (a sync loads its stage rules meanwhile). The cursor still
    advances only after each page is committed, and an error (budget, transient, auth)
    surfaces after the pages before it. Close it when done (`contextlib.closing`), read to the
    end or not: the thread otherwise waits, with its database connection, for a reader.
    """
    return Prefetched(pages)


class Prefetched(Iterator[T]):
    """The iterator `prefetched` returns: one page read ahead by the thread it started."""

    def __init__(self, pages: Iterator[T]):
        self._pages = pages
        self._slot: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name="sync-prefetch", daemon=True)
        self._worker.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._slot.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for page in self._pages:
                if not self._put(("page", page)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(("error", exc))
        finally:
            # The client may write from this thread (API usage, a new token): close that.
            db_connections.close_all()

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        kind, value = self._slot.get()
        if kind == "page":
            return value
        self.close()
        if kind == "done":
            raise StopIteration
        raise value

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=settings.STAGEMAP_SALESFORCE_TIMEOUT)
