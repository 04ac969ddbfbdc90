"""The background-thread prefetcher: same items in the same order, errors where they happened, clean stops."""

from __future__ import annotations

import threading
import time

import pytest

from pipnet.train.prefetch import prefetch


def test_items_come_in_order_for_every_depth():
    for depth in (0, 1, 3):
        assert list(prefetch(iter(range(50)), depth)) == list(range(50))


def test_the_producer_runs_ahead_of_the_consumer():
    produced = []

    def items():
        for i in range(5):
            produced.append(i)
            yield i

    it = prefetch(items(), 2)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(produced) >= 3  # item 0 taken, items 1 and 2 waiting in the queue
    assert list(it) == [1, 2, 3, 4]


def test_an_error_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad image: x.png")

    it = prefetch(items(), 2)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(ValueError, match="bad image: x.png"):
        next(it)


def test_stopping_early_stops_the_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    it = prefetch(endless(), 2)
    assert next(it) == 0
    it.close()  # what a `break` or an exception in the training loop does
    assert not any(t.name == "pipnet-prefetch" and t.is_alive() for t in threading.enumerate())
