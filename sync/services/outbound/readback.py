"""Reading back the SystemModstamp a push's writes gave each record, so that the next read of
the record knows the write as stagemap's own."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from contextlib import closing
from datetime import datetime

from django.db import transaction

from connections.salesforce import QUERY_PAGE_SIZE, parse_datetime, soql_datetime, soql_quote
from sync import db
from sync.models import SyncedRecord
from sync.services.prefetch import prefetched


def modstamps_read_back(
    *, client, connection, object_name: str, written: dict[str, int], since: datetime, overlap: bool
) -> None:
    """Read back the SystemModstamp our writes gave, in pages of 2000 (best effort); with
    `overlap`, the next page is read in a thread while this one saves a page."""
    where = f"SystemModstamp > {soql_datetime(since)}"
    if connection.user_id:
        where += f" AND LastModifiedById = {soql_quote(connection.user_id)}"
    soql = f"SELECT Id, SystemModstamp FROM {object_name} WHERE {where}"
    page_limit = math.ceil(len(written) / QUERY_PAGE_SIZE) + 1
    pages = itertools.islice(client.query(soql), page_limit)
    if not overlap:
        modstamps_save(pages, written)
        return
    # The next page is read while this one is taken in (never a page past the limit). Calls
    # made in that thread leave their API usage to this one, saved when done.
    with client.usage_saved_by_caller(), closing(prefetched(pages)) as read:
        modstamps_save(read, written)


def modstamps_save(pages: Iterable[list[dict]], written: dict[str, int]) -> None:
    """Save the SystemModstamps read back: each page in its own transaction as it comes (the
    writes overlap the reading of the next page), or all in one once every page is in where
    one commit is cheaper (SQLite: each commit may checkpoint the WAL, which costs more than
    the overlap saves).

    No transaction is open while a page is on its way: a re-authentication in the reading
    thread writes too. A page that fails to arrive ends the reading; the stamps read before
    it are saved, then the error is raised."""
    one_commit = db.one_commit_preferred()
    # Records written by one call share a modstamp: one UPDATE per distinct stamp.
    by_stamp: dict[str, list[int]] = {}

    def save() -> None:
        if not by_stamp:
            return
        with transaction.atomic():
            for stamp, pks in by_stamp.items():
                db.ids_update(
                    model=SyncedRecord, values={"system_modstamp": parse_datetime(stamp)}, pks=pks
                )
        by_stamp.clear()

    failure = None
    try:
        for page in pages:
            for row in page:
                pk = written.get(row["Id"][:15])
                if pk is not None:
                    by_stamp.setdefault(row["SystemModstamp"], []).append(pk)
            if not one_commit:
                save()
    except Exception as exc:
        failure = exc
    save()
    if failure is not None:
        raise failure
