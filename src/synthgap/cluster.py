"""Independent tasks (the runs of a study, the cells of a matrix), one after the other or as Ray tasks.

`run_tasks(fn, items)` returns `[fn(item, **shared) for item in items]`. With `ray=ADDRESS` each item is
a Ray task with its own CPUs (and GPUs); `shared` (e.g. a study's decoded images) goes into the object
store once for all of them. Tasks write their own (resumable) run folders, so those must lie on storage
every node sees; results come back in the order of `items`. It can be called several times in one
process (a second wave of tasks that needs the first wave's outputs): Ray stays up until the process ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from synthgap import SynthgapError

log = logging.getLogger("synthgap")


def ray_address(address: str | None) -> str:
    """The address of `ray: true` without one: the cluster $RAY_ADDRESS names, else a local Ray."""
    return address or ("auto" if os.environ.get("RAY_ADDRESS") else "local")


def connect(address: str):
    """The ray module, initialised: 'local' starts Ray on this machine, 'auto' joins the running cluster
    ($RAY_ADDRESS, or the one `ray start` made here), anything else is a cluster's address
    (HOST:6379, ray://HOST:10001). A Ray already initialised in this process is used as it is."""
    try:
        import ray
    except ImportError:
        raise SynthgapError("--ray needs Ray: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        extra = {"include_dashboard": False} if address == "local" else {}
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False, **extra)
        except ConnectionError as e:
            why = "none running here and $RAY_ADDRESS unset" if address == "auto" else str(e)
            raise SynthgapError(
                f"--ray {address}: no Ray cluster to join ({why}); start one (`ray start --head`, KubeRay) or use "
                "--ray local to run on this machine"
            ) from None
    return ray


def _task(fn: Callable, item: Any, shared: dict, cpus: float, *after: Any) -> Any:
    """One task on a Ray worker: torch gets the task's CPUs, whatever the worker's machine has. `after`: the
    results of the tasks it needs (Ray starts it once they are done)."""
    from synthgap.device import share_cpus

    share_cpus(max(1, int(cpus)))
    return fn(item, **shared)


def _failed(what: str, error: BaseException) -> SynthgapError:
    if isinstance(error, SynthgapError):
        return SynthgapError(f"{what}: {error}")
    return SynthgapError(f"{what} failed: {type(error).__name__}: {error}")


def run_tasks(
    fn: Callable,
    items: Sequence,
    *,
    ray: str | None = None,
    shared: dict | None = None,
    cpus: float = 1,
    gpus: float = 0,
    desc: str = "",
    describe: Callable[[Any], str] = str,
    needs: Sequence[Sequence[int]] | None = None,
) -> list:
    """`fn(item, **shared)` for every item, in the order of `items`.

    ray: None runs them here, one after the other; else a Ray address (see `connect`) to run each as a task
    with `cpus` CPUs and `gpus` GPUs. desc names the tasks in the log, describe(item) each one. A task that
    fails stops the rest (on Ray: cancels them) with a SynthgapError naming it; a bug in a task run here
    keeps its traceback (with a note naming the item), on Ray the worker's traceback shows with -v.

    needs[k]: the indices of the items whose tasks must finish before item k's starts (it reads what they
    wrote); each comes before k in `items`. On Ray a task waits for its own needs alone, not for a whole wave."""
    shared = shared or {}
    what = (lambda item: f"{desc}: {describe(item)}") if desc else describe
    needs = [list(n) for n in needs] if needs is not None else [[] for _ in items]
    if len(needs) != len(items) or any(not 0 <= j < k for k, n in enumerate(needs) for j in n):
        raise ValueError("needs: one list per item, of indices of earlier items")
    if ray is None:
        results = []
        for item in items:
            try:
                results.append(fn(item, **shared))
            except SynthgapError as e:
                raise _failed(what(item), e) from None
            except Exception as e:
                e.add_note(f"in {what(item)}")
                raise
        return results
    if cpus <= 0 or gpus < 0:
        raise SynthgapError(f"each Ray task needs a positive number of CPUs and no negative GPUs (got {cpus}, {gpus})")
    ray_mod = connect(ray)
    have = ray_mod.cluster_resources()
    log.info(
        "%s%d tasks on Ray, %g CPUs and %g GPUs each (the cluster has %g CPUs, %g GPUs)",
        f"{desc}: " if desc else "",
        len(items),
        cpus,
        gpus,
        have.get("CPU", 0),
        have.get("GPU", 0),
    )
    if have.get("CPU", 0) < cpus or have.get("GPU", 0) < gpus:
        log.warning("the Ray cluster has too few CPUs or GPUs for one task now: the tasks wait until nodes join")
    shared_ref = ray_mod.put(shared)  # once: every task reads the same copy from the object store
    remote = ray_mod.remote(_task).options(num_cpus=cpus, num_gpus=gpus)
    refs: list = [None] * len(items)
    for k in range(len(items)):  # a need comes first: its ref is an argument of the task that needs it
        refs[k] = remote.remote(fn, items[k], shared_ref, cpus, *(refs[j] for j in needs[k]))
    index = {ref: k for k, ref in enumerate(refs)}
    results: list = [None] * len(items)
    pending = list(index)
    while pending:
        [ready], pending = ray_mod.wait(pending, num_returns=1)
        k = index[ready]
        try:
            results[k] = ray_mod.get(ready)
        except ray_mod.exceptions.RayError as e:
            for ref in pending:
                ray_mod.cancel(ref)
            log.debug("%s failed on Ray:\n%s", what(items[k]), e)
            raise _failed(what(items[k]), getattr(e, "cause", None) or e) from None
        log.info("%s: finished (%d of %d)", what(items[k]), len(items) - len(pending), len(items))
    return results
