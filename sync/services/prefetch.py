"""Reading Salesforce pages in a worker thread while the caller writes the ones before."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

from django.conf import settings
from django.db import connections as db_connections

T = TypeVar("T")


def prefetched(pages: Iterator[T]) -> Iterator[T]:
    """Fetch the next page in a thread while the caller writes the current one.

    Network time then overlaps database time. The cursor still advances only after each page
    is committed, and an error (budget, transient, auth) surfaces after the pages before it.
    Close it when done (`contextlib.closing`): a caller that stops early otherwise leaves the
    thread waiting, with its database connection, until garbage collection.
    """
    slot: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slot.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(("page", page)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))
        finally:
            # The client may write from this thread (API usage, a new token): close that.
            db_connections.close_all()

    worker = threading.Thread(target=produce, name="sync-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slot.get()
            if kind == "page":
                yield value
            elif kind == "done":
                return
            else:
                raise value
    finally:
        stop.set()
        worker.join(timeout=settings.STAGEMAP_SALESFORCE_TIMEOUT)
