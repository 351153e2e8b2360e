"""Small helpers for safe, reproducible outputs: atomic writes, hashes, run environment."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds.

    A crash or kill leaves the old file (or nothing) in place, never a half-written one. The temp path
    is unique and not yet created: the writer creates it, with the permissions any new file gets.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` atomically (`atomic_path`); `mode` (e.g. 0o600): the file's permissions, set
    before any byte is written (default: what any new file gets)."""
    with atomic_path(path) as tmp:
        if mode is None:
            tmp.write_bytes(data)
        else:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
                os.fchmod(f.fileno(), mode)  # exactly `mode`, whatever the umask
                f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_weights(path: str | os.PathLike, model) -> None:
    """A module's state dict (or a dict of tensors) as safetensors (atomic): tensors only, nothing that runs
    code when loaded."""
    from safetensors.torch import save_file

    state = {
        k: v.detach().cpu().contiguous() for k, v in (model if isinstance(model, dict) else model.state_dict()).items()
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def load_weights(path: str | os.PathLike) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def user_cache() -> Path:
    """synthgap's folder in the user cache ($XDG_CACHE_HOME or ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthgap"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def environment() -> dict:
    """Library versions and hardware, recorded beside every run's outputs."""
    import numpy
    import PIL
    import torch
    import torchvision

    import synthgap

    return {
        "synthgap": synthgap.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }


def progress_bar(*args, enabled: bool = True, **kwargs):
    """A tqdm bar where a person watches it (a terminal, or a notebook); none in a log file or a pipe,
    whose reader gets the one line per epoch or stage the caller prints instead of every redraw."""
    from tqdm.auto import tqdm

    return tqdm(*args, disable=not (enabled and watched()), **kwargs)


def watched() -> bool:
    """Whether a person watches the output: stderr is a terminal, or this runs in a notebook."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules
