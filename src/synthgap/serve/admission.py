"""Admission by pixels in flight: how much image one worker decodes and judges at once.

An upload's memory is its decoded pixels (3 bytes each in RGB, a few times that while it is converted),
not its file size: a 154 KB PNG can hold 40 megapixels. Each worker admits requests while the pixels they
hold stay within a budget; the rest wait in arrival order, briefly, and past that get 503 with Retry-After.
Memory is then bounded by the budget (docs/web_app.md#sizing), never by how many requests arrive at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.exceptions import ServiceUnavailable

TRIM_PIXELS = 4_000_000  # after an image this large, freed memory is handed back to the system


def give_back_freed_memory() -> None:
    """Hand the memory freed after a large image back to the system (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed memory in the heap of the thread that freed it, and its mmap threshold grows after
    each large free (up to 32 MB), so past the first few uploads every decoded image lands on a heap: a
    burst of 40-megapixel images left a worker gigabytes larger for good. Trimming after the large ones
    only costs a few milliseconds where they cost a second to decode; fixing the threshold instead (mallopt)
    cost photos at 64 clients a fifth of their throughput (benchmarks/serve_load.py, docs/benchmarks.md)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


class PixelBudget:
    """At most `budget` pixels held at once by `hold(pixels)` blocks; a request waits up to `wait` seconds
    for its turn (first come, first served), then 503. One image larger than the budget runs alone."""

    def __init__(self, budget: int, wait: float):
        self.budget, self.wait = budget, wait
        self._cond = threading.Condition()
        self._used = 0
        self._queue: deque[list[int]] = deque()  # [cost] of each waiting request, in arrival order
        self._seconds = 0.5  # moving average of one hold, for Retry-After

    @property
    def in_flight(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        cost = [max(1, min(pixels, self.budget))]
        with self._cond:
            self._queue.append(cost)
            deadline = time.monotonic() + self.wait
            while not (self._queue[0] is cost and self._used + cost[0] <= self.budget):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._queue.remove(cost)
                    self._cond.notify_all()  # the request behind may be first now
                    raise ServiceUnavailable(
                        "the server is busy decoding other images; try again shortly",
                        retry_after=self._retry_after(),
                    )
                self._cond.wait(left)
            self._queue.popleft()
            self._used += cost[0]
            self._cond.notify_all()  # the next in line may fit beside this one
        t0 = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._used -= cost[0]
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - t0)
                self._cond.notify_all()
            if cost[0] >= TRIM_PIXELS:
                give_back_freed_memory()

    def _retry_after(self) -> int:
        """Seconds until what is held and queued now has gone through, at the recent pace."""
        ahead = self._used + sum(c[0] for c in self._queue)
        return max(1, math.ceil(self._seconds * ahead / self.budget))
