"""Where models run: the device, the CPU threads, seeds, and mixed precision (one helper each)."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch

from synthgap import SynthgapError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SynthgapError("device 'cuda' requested but no CUDA GPU is available (use device=auto or cpu)")
    return torch.device(name)


# The CPUs this process was given (a Ray task's share, synthgap.cluster); None: every core of the machine.
_CPU_SHARE: int | None = None


def share_cpus(cpus: int | None) -> None:
    """Give this process `cpus` CPUs: torch uses that many threads now, and a config's `threads: 0` means
    that many from here on instead of every core of the machine. None: every core again."""
    global _CPU_SHARE
    _CPU_SHARE = cpus
    set_threads(0)


def set_threads(threads: int) -> None:
    """torch's CPU threads: `threads`, or with 0 the CPUs this process was given (share_cpus), else every core."""
    torch.set_num_threads(threads if threads > 0 else (_CPU_SHARE or os.cpu_count() or 1))


def mixed_precision(device: torch.device, enabled: bool = True):
    """(a factory of autocast contexts, a GradScaler or None): bf16 on CUDA where supported, else fp16 with
    loss scaling; full precision elsewhere (a CPU trains in fp32)."""
    if not (enabled and device.type == "cuda"):
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), (
        torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    )
