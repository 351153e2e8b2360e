"""What the web app keeps on disk, and for how long: generated images (OUTPUT/generated) and, when asked,
uploads (OUTPUT/uploads), under one size cap and optional count and age limits, the oldest removed first.

Every gunicorn worker has its own `Retention` on the same folder; they agree through an fcntl lock file,
OUTPUT/.retention.lock, which also holds the running total of the kept files (bytes, files, writes since
the folder was last listed): a write adds to it under the lock (~6 µs). Listing the folder costs ~4 ms per
1,000 files, so it is listed only when the total goes over a cap, after RESCAN_EVERY writes (which
corrects the total for files replaced or removed by hand), at start, and, with an age limit, every tenth
of that age (at most 10 minutes) from a background thread. Over a cap the oldest files are removed down
to 90% of it, so a full folder is listed about once per tenth of the cap written, not on every write.
Files are 0600, folders 0700.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from synthgap import SynthgapError
from synthgap.io import write_bytes

log = logging.getLogger("synthgap")

FOLDERS = ("generated", "uploads")
LOCK_FILE = ".retention.lock"
RESCAN_EVERY = 64  # writes (of all workers) between two listings of the folder, at most
STALE_TMP_SECONDS = 3600  # a temporary file this old is a killed writer's: removed


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class Retention:
    """Keeps files under `root` (in FOLDERS) within `max_bytes` in all, `max_files` (0: no count limit)
    and `max_age_hours` (0: no age limit), evicting the oldest first."""

    def __init__(
        self, root: str | os.PathLike, max_bytes: int, max_files: int = 0, max_age_hours: float = 0, sweep: bool = True
    ):
        self.root = Path(root)
        self.max_bytes, self.max_files, self.max_age_hours = int(max_bytes), int(max_files), float(max_age_hours)
        try:
            if not self.root.exists():
                self.root.mkdir(mode=0o700, parents=True)
            for name in FOLDERS:
                folder = self.root / name
                folder.mkdir(mode=0o700, exist_ok=True)
                os.chmod(folder, 0o700)  # also one an earlier version made world-readable
            self.evict()  # what an earlier run left, at start
        except OSError as e:  # said before any worker serves, not at the first write
            raise SynthgapError(f"serve setting 'output': cannot keep files in {self.root}: {e.strerror}") from None
        self._stop = threading.Event()
        if sweep and self.max_age_hours > 0:
            threading.Thread(target=self._sweep, name="synthgap-retention", daemon=True).start()

    # -------------------------------------------------------------- writing

    def keep(self, rel: str, data: bytes) -> str | None:
        """Write `data` to ROOT/`rel` (atomically, 0600), then evict what is over the limits. `rel` is
        `<folder>/<name>`, named by the server, never by a client. None: larger than the size cap, not kept."""
        parts = PurePosixPath(rel).parts
        if len(parts) != 2 or parts[0] not in FOLDERS or parts[1].startswith(".") or "\\" in rel:
            raise ValueError(f"not a kept file's name: {rel!r}")
        if len(data) > self.max_bytes:
            log.warning("not kept: %s is %d bytes, over the size cap of %d", rel, len(data), self.max_bytes)
            return None
        path = self.root / rel
        write_bytes(path, data, mode=0o600)
        with self._locked() as fd:
            state = _read_state(fd)
            if state is not None:
                total, count, writes = state[0] + len(data), state[1] + 1, state[2] + 1
                if not (
                    total > self.max_bytes or (self.max_files and count > self.max_files) or writes >= RESCAN_EVERY
                ):
                    _write_state(fd, total, count, writes)
                    return rel
            self._evict(fd, protect=str(path))
        return rel

    # -------------------------------------------------------------- evicting

    @contextmanager
    def _locked(self):
        """The folder's lock (its file descriptor), across the threads and processes that keep files in it."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _scan(self) -> list[tuple[int, str, int]]:
        """(mtime_ns, path, size) of every kept file, oldest first; removes stale temporary files."""
        files, now = [], time.time()
        for name in FOLDERS:
            try:
                entries = os.scandir(self.root / name)
            except FileNotFoundError:
                continue
            with entries:
                for e in entries:
                    try:
                        if not e.is_file(follow_symlinks=False):
                            continue
                        st = e.stat(follow_symlinks=False)
                        if e.name.startswith("."):  # a write in progress (synthgap.io.atomic_path)
                            if e.name.endswith(".tmp") and now - st.st_mtime > STALE_TMP_SECONDS:
                                os.unlink(e.path)
                            continue
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    files.append((st.st_mtime_ns, e.path, st.st_size))
        files.sort()
        return files

    def evict(self) -> list[str]:
        """List the folder and remove what is over the limits (see `_evict`)."""
        with self._locked() as fd:
            return self._evict(fd)

    def _evict(self, fd: int, protect: str | None = None) -> list[str]:
        """Remove the oldest files until every limit holds (over a cap: down to 90% of it), never `protect`
        (the file just written) unless it is too old; under the lock `fd`, whose running total it resets.
        The removed files' paths under ROOT."""
        files = self._scan()
        total, count = sum(f[2] for f in files), len(files)
        keep_bytes = self.max_bytes if total <= self.max_bytes else self.max_bytes - self.max_bytes // 10
        keep_files = self.max_files if count <= self.max_files else self.max_files - self.max_files // 10
        cutoff = time.time_ns() - int(self.max_age_hours * 3600e9) if self.max_age_hours > 0 else None
        removed = []
        for mtime, path, size in files:  # oldest first
            expired = cutoff is not None and mtime < cutoff
            over = total > keep_bytes or bool(self.max_files and count > keep_files)
            if not (expired or over):
                break  # every later file is younger
            if path == protect and not expired:
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:  # removed meanwhile
                pass
            total, count = total - size, count - 1
            removed.append(Path(path).relative_to(self.root).as_posix())
        _write_state(fd, total, count, 0)
        if removed:
            log.info("retention: removed %d kept file(s), %d left (%s)", len(removed), count, human_bytes(total))
        return removed

    def _sweep(self) -> None:
        """Removes files past the age limit while no request writes any."""
        interval = min(600.0, max(1.0, self.max_age_hours * 360))  # a tenth of the age limit, in seconds
        while not self._stop.wait(interval):
            try:
                self.evict()
            except OSError as e:  # e.g. the folder removed under a running server: say so, keep serving
                log.warning("retention: %s", e)

    def close(self) -> None:
        """Stop the background sweep."""
        self._stop.set()

    # -------------------------------------------------------------- description

    def describe(self, writes: list[str]) -> dict:
        """What is kept and for how long (/api/models and the Models page), without the folder's path."""
        limits = [f"at most {human_bytes(self.max_bytes)}"]
        if self.max_files:
            limits.append(f"{self.max_files:,} files")
        age = ""
        if self.max_age_hours:
            days = self.max_age_hours / 24
            age = f", each for at most {self.max_age_hours:g} hours" + (f" ({days:g} days)" if days >= 1 else "")
        return {
            "writes": writes,
            "max_bytes": self.max_bytes,
            "max_files": self.max_files or None,
            "max_age_hours": self.max_age_hours or None,
            "summary": f"{' and '.join(writes).capitalize()} are kept on the server, {' and '.join(limits)} in all"
            f"{age}; the oldest are removed first",
        }


def _read_state(fd: int) -> tuple[int, int, int] | None:
    """The running total in the lock file: (bytes, files, writes since the last listing); None if unknown."""
    try:
        total, count, writes = (int(x) for x in os.pread(fd, 64, 0).split())
    except ValueError:  # a new lock file, or one a killed worker left half written
        return None
    return total, count, writes


def _write_state(fd: int, total: int, count: int, writes: int) -> None:
    data = b"%d %d %d\n" % (total, count, writes)
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
