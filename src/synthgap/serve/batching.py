"""Sharing a model between request threads: a micro-batcher for the fast models, a bounded queue
for the generator."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
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
    """The generation queue is full, or a request waited out its timeout. `wait`: the expected seconds until
    the jobs now in line are done; `retry_after`: that in whole seconds (at least 1), for the header."""

    def __init__(self, wait: float):
        self.wait = max(0.0, float(wait))
        self.retry_after = max(1, math.ceil(self.wait))
        super().__init__(f"the generator is busy; try again in about {self.retry_after} s")


def _process_key(pid: int) -> str | None:
    """A process by its pid and start time (Linux /proc: a pid used again is not taken for the worker that
    had it); None if it is gone. Elsewhere the pid alone, while one is running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return f"{pid}:{int(fields[19])}"  # field 22, the start time in clock ticks after boot
    except (OSError, IndexError, ValueError):
        if os.path.exists("/proc/self/stat"):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


def _load_line(text: str) -> dict:
    """The shared line from its file: the jobs of processes still running, in arrival order, and the
    moving average of one job's seconds by the queues' names; an empty line if the file is new or unreadable."""
    try:
        state = json.loads(text)
        line = [e for e in state["line"] if isinstance(e["id"], str) and isinstance(e["pid"], int)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return {"line": [], "seconds": {}}
    try:
        seconds = {
            str(k): float(v)
            for k, v in state["seconds"].items()
            if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
        }
    except (TypeError, KeyError, AttributeError):
        seconds = {}
    keys: dict[int, str | None] = {}
    for e in line:
        if e["pid"] not in keys:
            keys[e["pid"]] = _process_key(e["pid"])
    return {"line": [e for e in line if keys[e["pid"]] == e.get("proc")], "seconds": seconds}


class DeviceQueue:
    """One job at a time on a device, first come first served; at most `capacity` more of this worker's
    jobs waiting, beyond that QueueFull at once, with the expected wait (`expected_wait`) as Retry-After.

    Request threads wait for the device themselves (no extra thread): `with queue.turn(): ...`. The line
    holds every job in arrival order, the running one first; a thread runs its job when it heads the line.
    lock_file: the line is kept in LOCK_FILE.queue, which every worker process of the server shares (under
    flock), so jobs run in arrival order across gunicorn workers too and the expected wait counts the jobs
    of every worker; the device is held with an flock of LOCK_FILE around each job (as a guarantee: the
    line already keeps jobs apart). Without lock_file the line is this process's only.
    name: what runs the jobs (the model): each job in line is expected to take the moving average of the
    jobs of its name, so servers with other models on the same device are counted at their own pace.
    """

    POLL = 0.02  # seconds between looks at a shared line while another process's job runs
    FIRST_GUESS = 1.0  # seconds of one job until one of its name has been measured
    NAMES = 32  # the moving averages a shared line keeps, the latest names'

    def __init__(self, capacity: int, timeout: float, lock_file: str | None = None, name: str = ""):
        self.capacity, self.timeout, self.lock_file, self.name = capacity, timeout, lock_file, name
        # the name in the shared file: a digest (a model's name can be a server path)
        self._key = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16] if name else ""
        self._cond = threading.Condition()  # guards _mine and _memory; woken when a job of this process ends
        self._mine: list[str] = []  # this queue's jobs in the line, for `capacity` and `pending`
        self._memory: dict = {"line": [], "seconds": {}}  # the line without a lock file
        self._tickets = itertools.count()

    @property
    def pending(self) -> int:
        """This worker's jobs: the running one (if it is this worker's) and the waiting ones."""
        return len(self._mine)

    def expected_wait(self) -> float:
        """Seconds until the jobs in line now (every worker's) are done: what a job arriving now waits."""
        with self._cond, self._line() as state:
            return self._estimate(state)

    def _estimate(self, state: dict) -> float:
        """What is left of the running job, and the moving average of its name for each waiting one (before
        one was measured: FIRST_GUESS, or for the running one at least what it has taken so far)."""
        total = 0.0
        for k, e in enumerate(state["line"]):
            average = state["seconds"].get(e.get("key", ""))
            if k == 0:
                elapsed = max(0.0, time.time() - e["started"]) if e.get("started") is not None else 0.0
                total += max(0.0, (average if average is not None else max(self.FIRST_GUESS, elapsed)) - elapsed)
            else:
                total += average if average is not None else self.FIRST_GUESS
        return total

    @contextmanager
    def _line(self) -> Iterator[dict]:
        """The line, to read and change (written back unless the block raises); the caller holds _cond."""
        if not self.lock_file:
            yield self._memory
            return
        import fcntl

        with os.fdopen(os.open(self.lock_file + ".queue", os.O_RDWR | os.O_CREAT, 0o600), "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # held for the read and the write only
            try:
                f.seek(0)
                text = f.read()
                state = _load_line(text)
                yield state
                if json.dumps(state) != text:
                    f.seek(0)
                    f.truncate()
                    f.write(json.dumps(state))
                    f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextmanager
    def turn(self) -> Iterator[None]:
        deadline = time.monotonic() + self.timeout
        pid = os.getpid()
        me = {
            "id": f"{pid}-{id(self):x}-{next(self._tickets)}",
            "pid": pid,
            "proc": _process_key(pid) if self.lock_file else None,
            "key": self._key,
            "started": None,
        }
        with self._cond:
            with self._line() as state:
                if len(self._mine) > self.capacity:
                    raise QueueFull(self._estimate(state))
                state["line"].append(me)
                self._mine.append(me["id"])
        device, seconds = None, None
        try:
            with self._cond:
                while True:
                    with self._line() as state:
                        line = state["line"]
                        if not any(e["id"] == me["id"] for e in line):  # the shared file was lost: in again
                            line.append(dict(me))
                        if line[0]["id"] == me["id"]:
                            break
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            line.remove(next(e for e in line if e["id"] == me["id"]))
                            raise QueueFull(self._estimate(state))
                    # Woken when a job of this queue ends; the first of its jobs in line also looks at the
                    # shared line every POLL seconds, for the end of another process's job.
                    polls = self.lock_file and self._mine[0] == me["id"]
                    self._cond.wait(min(remaining, self.POLL) if polls else remaining)
            device = self._hold_device(deadline)
            with self._cond, self._line() as state:
                for e in state["line"]:
                    if e["id"] == me["id"]:
                        e["started"] = time.time()
            t0 = time.perf_counter()
            yield
            seconds = time.perf_counter() - t0
        finally:
            if device is not None:
                import fcntl

                fcntl.flock(device, fcntl.LOCK_UN)
                device.close()
            with self._cond:
                with self._line() as state:
                    state["line"] = [e for e in state["line"] if e["id"] != me["id"]]
                    if seconds is not None:  # a job that ran to its end: the moving average of its name's
                        averages = state["seconds"]
                        old = averages.pop(self._key, None)  # put back last: the latest names are kept
                        averages[self._key] = seconds if old is None else 0.8 * old + 0.2 * seconds
                        for name in list(averages)[: -self.NAMES]:
                            del averages[name]
                self._mine.remove(me["id"])
                self._cond.notify_all()

    def _hold_device(self, deadline: float):
        """The open LOCK_FILE, flocked: no other process's job runs on the device until it is unlocked."""
        if not self.lock_file:
            return None
        import fcntl

        f = open(self.lock_file, "a")
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                if time.monotonic() > deadline:
                    f.close()
                    with self._cond, self._line() as state:
                        raise QueueFull(self._estimate(state)) from None
                time.sleep(self.POLL)
