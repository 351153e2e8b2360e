"""Scale-out of generation on Ray Data: the (class, index) space sharded over pipeline actors.

Each actor loads the pipeline once and writes its images atomically into the shared output
folder; the driver appends their manifest lines as batches finish, so layout, manifest and
resume semantics are those of a local run. A running cluster is joined (RAY_ADDRESS), else a
local Ray is started on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synthgap import SynthgapError


class _PipelineActor:
    """One per GPU (or CPU worker): a DatasetGenerator that renders and saves batches."""

    def __init__(self, cfg: dict, out: str):
        from synthgap.config import from_dict
        from synthgap.generate.config import GenerateConfig
        from synthgap.generate.generator import DatasetGenerator

        self.gen = DatasetGenerator(from_dict(GenerateConfig, cfg))
        self.out = Path(out)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import json

        from synthgap.generate.generator import Job

        jobs = [Job(str(c), int(i)) for c, i in zip(batch["cls"], batch["index"])]
        rows = self.gen.make(self.out, jobs)
        return {"row": np.array([json.dumps(r) for r in rows], dtype=object)}


def make_with_ray(gen, out: Path, jobs: list, workers: int = 0) -> Iterator[list[dict]]:
    """Yield manifest rows batch by batch as the actors finish them."""
    import json

    try:
        import ray
    except ImportError:
        raise SynthgapError("--ray needs Ray: pip install 'ray[data]'") from None
    import torch

    from synthgap.config import to_dict

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # synthgap's own bar counts the images
    ctx.print_on_execution_start = False
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and gen.cfg.device in ("auto", "cuda")
    n = workers or (
        gpus if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, torch.get_num_threads()))
    )
    cfg = to_dict(gen.cfg)
    ds = ray.data.from_items([{"cls": j.cls, "index": j.index} for j in jobs])
    ds = ds.map_batches(
        _PipelineActor,
        fn_constructor_kwargs={"cfg": cfg, "out": str(out)},
        batch_size=gen.cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=n),
        num_gpus=1 if use_gpu else 0,
        batch_format="numpy",
    )
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield [json.loads(r) for r in batch["row"]]
    except ray.exceptions.RayTaskError as e:  # a user-facing error inside an actor stays one clear line
        cause = getattr(e, "cause", None)
        if isinstance(cause, SynthgapError):
            raise SynthgapError(str(cause)) from None
        raise
