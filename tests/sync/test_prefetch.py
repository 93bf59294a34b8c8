"""The reading thread of `prefetched`: started at once, stopped however the reader ends."""

import threading

import pytest

from sync.services.prefetch import prefetched


def _pages(started: threading.Event, count: int = 3):
    started.set()
    for number in range(count):
        yield [number]


def _reading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sync-prefetch"]


def test_the_first_page_is_asked_for_before_anyone_reads():
    started = threading.Event()

    pages = prefetched(_pages(started))
    try:
        assert started.wait(timeout=5)
        assert list(pages) == [[0], [1], [2]]
    finally:
        pages.close()
    assert not _reading_threads()


def test_closing_unread_pages_stops_the_thread():
    started = threading.Event()

    pages = prefetched(_pages(started, count=10))
    assert started.wait(timeout=5)
    pages.close()

    assert not _reading_threads()
    assert list(pages) == []


def test_an_error_reaches_the_reader_after_the_pages_before_it():
    def failing():
        yield [1]
        raise RuntimeError("503 burst")

    pages = prefetched(failing())
    assert next(pages) == [1]
    with pytest.raises(RuntimeError, match="503 burst"):
        next(pages)
    assert not _reading_threads()
    with pytest.raises(StopIteration):
        next(pages)
