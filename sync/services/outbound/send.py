"""Sending a push's collection calls pipelined: calls made in a sender thread, one at a time
and in order, while this thread saves the batch before and plans the one after."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connections as db_connections

from connections.salesforce import RecordUpdateResult, TransientError
from sync.services.outbound.plan import CurrentValues, ObjectPush, Outcome, batch_plan
from sync.services.outbound.save import BatchSaver

logger = logging.getLogger(__name__)


def payload(sendable: list[Outcome]) -> list[dict]:
    """The collection call's records: each one's id and the fields it gets."""
    return [{"Id": o.record.sf_id, **o.writes} for o in sendable]


def batches_push_pipelined(
    *, client, push: ObjectPush, current: CurrentValues, batches: Iterable, saver: BatchSaver
) -> dict[str, int]:
    """Push batches as the sequential push does, with the collection calls made in a sender
    thread: while batch k's call is in flight, batch k+1's waits behind it and this thread
    saves batch k-1 and loads and plans k+2.

    One call at a time, in order; the writes stay in this thread (API usage too), and no
    transaction is open while it waits for a call. The queued call starts as soon as the one
    before it is answered, not when this thread gets to it. Once a call fails the sender sends
    nothing more, so what follows it stays pending, as without the pipeline.
    """
    return _Pipeline(client=client, push=push, current=current, saver=saver).run(batches)


class _NotSent(Exception):
    """A queued collection call dropped because the one before it failed."""


class _Pipeline:
    def __init__(self, *, client, push: ObjectPush, current: CurrentValues, saver: BatchSaver):
        self.client = client
        self.push = push
        self.current = current
        self.saver = saver
        self.written: dict[str, int] = {}
        self.in_flight: deque[tuple[list[Outcome], list[Outcome], Future | None]] = deque()
        self.stopped = threading.Event()

    def run(self, batches: Iterable) -> dict[str, int]:
        sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-push")
        try:
            for records in batches:
                # A re-read from Salesforce waits for (and saves) the calls in flight first.
                outcomes, sendable = batch_plan(
                    self.push, self.current, records, before_read=self.settle
                )
                future = sender.submit(self.send, payload(sendable)) if sendable else None
                self.in_flight.append((outcomes, sendable, future))
                if len(self.in_flight) > 2:
                    self.land_and_save()
            self.settle()
        except BaseException:
            # Whatever stopped us, a call already sent is saved, so it is never sent again.
            self.stopped.set()
            while self.in_flight:
                try:
                    self.land_and_save()
                except Exception:
                    logger.warning("a batch in flight when the push stopped", exc_info=True)
            raise
        finally:
            # A re-authentication in that thread saves the token through a connection of its own.
            sender.submit(db_connections.close_all)
            sender.shutdown(wait=True)
        return self.written

    def send(self, records: list[dict]) -> list[RecordUpdateResult]:
        """In the sender thread: one collection call, unless one before it failed."""
        if self.stopped.is_set():
            raise _NotSent
        try:
            return self.client.update_records(self.push.object_name, records)
        except BaseException:
            self.stopped.set()
            raise

    def land_and_save(self) -> None:
        """Wait for the oldest call in flight and save its batch."""
        outcomes, sendable, future = self.in_flight.popleft()
        results: list[RecordUpdateResult] = []
        if future is not None:
            try:
                results = future.result()
            except _NotSent:
                return  # never sent: its records stay as they were, due
            except TransientError as exc:
                self.saver.count(outcomes)
                self.saver.call_failed(self.push, outcomes, sendable, exc)
                raise
        self.saver.count(outcomes)
        self.written.update(self.saver.save_results(self.push, outcomes, sendable, results))

    def settle(self) -> None:
        while self.in_flight:
            self.land_and_save()
