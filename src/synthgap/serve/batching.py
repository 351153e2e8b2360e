"""Sharing a model between request threads: a micro-batcher for the fast models, a bounded queue
for the generator."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import torch


class MicroBatcher:
    """Runs `predict` (a batch of uint8 images in, one row per image out) for many request threads.

    One thread per model takes the first waiting image, then whatever else arrives within
    `max_wait` seconds (up to `max_batch`), and makes one model call for all of them: under load
    the images that queued during the previous call go together, at no cost when idle but the wait.
    """

    def __init__(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        max_batch: int = 32,
        max_wait: float = 0.002,
        name: str = "batcher",
    ):
        self.predict, self.max_batch, self.max_wait, self.name = predict, max_batch, max_wait, name
        self._queue: queue.SimpleQueue[tuple[torch.Tensor, Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batch_sizes: list[int] = []  # the last few batch sizes, for /api/models and tests

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The model's output row for one image (3 x S x S uint8); blocks until it is computed."""
        self._start()
        done: Future = Future()
        self._queue.put((image, done))
        return done.result()

    def many(self, images: torch.Tensor) -> torch.Tensor:
        """Output rows for several images (N x 3 x S x S), queued together so they can share a model call."""
        self._start()
        futures = []
        for image in images:
            futures.append(Future())
            self._queue.put((image, futures[-1]))
        return torch.stack([torch.as_tensor(f.result()) for f in futures])

    def _start(self) -> None:
        # Started on first use, not at construction: gunicorn forks workers after the app may have
        # been built, and threads do not survive a fork.
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()

    def _take_batch(self) -> list[tuple[torch.Tensor, Future]]:
        items = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while True:
            items = self._take_batch()
            self.batch_sizes = (self.batch_sizes + [len(items)])[-100:]
            try:
                out = self.predict(torch.stack([image for image, _ in items]))
            except Exception as e:  # a model failure fails these requests, not the batcher
                for _, done in items:
                    done.set_exception(e)
                continue
            for (_, done), row in zip(items, out):
                done.set_result(row)


class QueueFull(Exception):
    """The generation queue is full; `retry_after` is an estimate in seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the generator is busy; try again in about {retry_after} s")
        self.retry_after = retry_after


class DeviceQueue:
    """One job at a time on a device, at most `capacity` more waiting; beyond that QueueFull at once.

    Request threads wait for the device themselves (no extra thread): `with queue.turn(): ...`.
    lock_file: a file every worker process of the server locks (flock) around a job, so the device
    runs one generation at a time across gunicorn workers too, not only within one.
    """

    def __init__(self, capacity: int, timeout: float, lock_file: str | None = None):
        self.capacity, self.timeout, self.lock_file = capacity, timeout, lock_file
        self._device = threading.Lock()
        self._count_lock = threading.Lock()
        self._count = 0  # running + waiting
        self._seconds = 1.0  # moving average of one job, for Retry-After

    @property
    def pending(self) -> int:
        return self._count

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._count_lock:
            if self._count > self.capacity:
                raise QueueFull(max(1, round(self._count * self._seconds)))
            self._count += 1
        try:
            deadline = time.monotonic() + self.timeout
            if not self._device.acquire(timeout=self.timeout):
                raise QueueFull(max(1, round(self._count * self._seconds)))
            try:
                with self._other_workers_done(deadline):
                    t0 = time.perf_counter()
                    yield
                    self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - t0)
            finally:
                self._device.release()
        finally:
            with self._count_lock:
                self._count -= 1

    @contextmanager
    def _other_workers_done(self, deadline: float) -> Iterator[None]:
        if not self.lock_file:
            yield
            return
        import fcntl

        with open(self.lock_file, "a") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise QueueFull(max(1, round(self._count * self._seconds))) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
