"""Prepare the next batches in a background thread while the model trains on this one.

With `num_workers=0` the DataLoader augments in the training loop itself, so the model waits for every
batch. Worker processes avoid that but, on a machine with few cores, take CPU from the model and cost a
start-up per epoch. A thread is the middle way: image decoding, PIL transforms and tensor conversion
release the GIL, so they overlap with the model's own threads. The batches and their order are exactly
those of the loader (one producer, a FIFO queue), so results do not change.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["prefetch"]

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(batches: Iterable[Any], depth: int) -> Iterator[Any]:
    """The items of `batches`, produced up to `depth` ahead in a daemon thread (`depth` 0: inline).

    An exception in the producer is raised in the consumer at the item where it happened; a consumer
    that stops early (an exception, `break`) stops the producer too.
    """
    if depth <= 0:
        yield from batches
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Failure(e))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="pipnet-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
