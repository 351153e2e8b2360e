"""What synthgap's generation costs on top of the diffusion model itself.

For batch sizes 1, 8 and 32, two figures against the target (>= 0.95):

- ratio: images/s of `synthgap generate` (resizing, PNG metadata, atomic writes, manifest) over a
  bare loop of pipeline calls (same model, prompts, per-image generators, batch size and steps),
  run in alternating order; the median of the paired ratios and its 95% bootstrap interval. Two runs
  of the same loop back to back differ by ~10% (standard deviation) on this 2-core VM, at 0.5 s as at
  2.5 s per run, so one pair says little and settling 5% takes many pairs (--rounds).
- bounds: synthgap's own work measured without the drift. The pipeline is replaced by a replay of
  the images it made, so a `synthgap generate` run costs nothing but synthgap's own work; its CPU time
  per image is set against the model's time per image. With both cores busy in the model, at worst
  every cycle of that work delays the model by as much (the lower bound on the ratio); at best only
  the main thread's share does, the writer thread running on cycles the model leaves (the upper
  bound, which a machine with a core to spare, or a GPU running the model, would reach).

The bare loop makes the very images synthgap saves (checked). The model is the tiny offline
pipeline on the CPU, so the overhead shows at its largest: a real model spends far longer per image.

    .venv/bin/python benchmarks/generate_overhead.py [--seconds 2.5] [--rounds 8] [--steps 2] [--replay 4096]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from synthgap.generate import DatasetGenerator, load_pipeline, save_tiny_pipeline
from synthgap.generate.config import GenerateConfig
from synthgap.generate.generator import Job


def bare_loop(pipe, gen: DatasetGenerator, jobs: list[Job], batch_size: int) -> tuple[float, list]:
    """images/s of the pipeline alone, called exactly as synthgap calls it (same prompts, negative prompt,
    per-image generators, steps, guidance); also returns every image made."""
    images = []
    t = time.perf_counter()
    for i in range(0, len(jobs), batch_size):
        images += pipe(**gen.pipeline_kwargs(jobs[i : i + batch_size])).images
    return len(jobs) / (time.perf_counter() - t), images


def synthgap_run(gen: DatasetGenerator, out: Path, n: int) -> float:
    t = time.perf_counter()
    gen.run(out, progress=False)
    rate = n / (time.perf_counter() - t)
    os.sync()  # its files' write-back happens now, not during the next measurement
    return rate


class Replay:
    """Stands in for the pipeline: returns the images it made, batch after batch, at no cost."""

    def __init__(self, pipe, images: list, batch_size: int):
        self.device, self.scheduler = pipe.device, pipe.scheduler
        self.batches = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])

    def __call__(self, **kwargs):
        return SimpleNamespace(images=next(self.batches))


def own_cpu(pipe, cfg: GenerateConfig, images: list, out: Path) -> tuple[float, float]:
    """CPU seconds of a `synthgap generate` run whose pipeline replays `images`, in all threads and in
    the main thread (the one calling the pipeline), less the pipeline arguments (prompts, generators),
    which the bare loop builds too."""
    jobs = [Job(c, i) for c in cfg.classes for i in range(cfg.per_class)]
    fresh, cpu = DatasetGenerator(cfg, pipeline=pipe), time.thread_time()
    for i in range(0, len(jobs), cfg.batch_size):
        fresh.pipeline_kwargs(jobs[i : i + cfg.batch_size])
    shared = time.thread_time() - cpu
    replayed = DatasetGenerator(cfg, pipeline=Replay(pipe, images, cfg.batch_size))
    cpu, cpu_main = time.process_time(), time.thread_time()
    replayed.run(out, progress=False)
    seconds = (time.process_time() - cpu - shared, time.thread_time() - cpu_main - shared)
    os.sync()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.5, help="about how long one measurement runs")
    ap.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="pairs of measurements per batch size (40 narrow the interval to about +-1-3%%)",
    )
    ap.add_argument("--steps", type=int, default=2, help="diffusion steps per image")
    ap.add_argument("--replay", type=int, default=4096, help="images in a replayed run (synthgap's own work)")
    args = ap.parse_args()
    logging.getLogger("synthgap").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_pipeline(Path(tmp) / "tiny")
        pipe = load_pipeline(str(model))
        print(
            f"model: tiny offline StableDiffusionPipeline (32x32), {args.steps} steps, CPU, "
            f"{torch.get_num_threads()} threads; {args.rounds} pairs of ~{args.seconds:g} s measurements per batch size"
        )
        print(
            f"{'batch':>5} {'images':>6} {'bare img/s':>11} {'synthgap img/s':>15} {'ratio':>6} {'(95% CI)':>11}"
            f" {'own ms CPU/img (main)':>21} {'bounds':>13}"
        )
        for bs in (1, 8, 32):

            def config(per_class: int, bs: int = bs) -> GenerateConfig:
                return GenerateConfig(
                    model=str(model), classes=["bird", "cat"], per_class=per_class, steps=args.steps, batch_size=bs
                )

            probe = [Job("bird", i) for i in range(max(8, bs))]
            probe_gen = DatasetGenerator(config(1), pipeline=pipe)
            bare_loop(pipe, probe_gen, probe, bs)  # warm-up
            rate, _ = bare_loop(pipe, probe_gen, probe, bs)
            cfg = config(max(1, round(rate * args.seconds / (2 * bs))) * bs)  # whole batches, ~seconds in all
            gen = DatasetGenerator(cfg, pipeline=pipe)
            jobs = [Job(c, i) for c in cfg.classes for i in range(cfg.per_class)]
            bare, ours = [], []
            for r in range(args.rounds):
                out = Path(tmp) / f"out-{bs}-{r}"
                if r % 2:  # alternate the order: neither side always runs on a warmer (or busier) machine
                    ours.append(synthgap_run(gen, out, len(jobs)))
                    rate, images = bare_loop(pipe, gen, jobs, bs)
                else:
                    rate, images = bare_loop(pipe, gen, jobs, bs)
                    ours.append(synthgap_run(gen, out, len(jobs)))
                bare.append(rate)
            # The same work both ways: the bare loop's images are the files synthgap wrote.
            same = all(
                np.array_equal(np.asarray(im.convert("RGB")), np.asarray(Image.open(out / f"{j.cls}/{j.id}.png")))
                for j, im in zip(jobs, images)
            )

            # A replayed run long enough (like a real one) for its fixed cost (config record, resume check) to vanish.
            replay = config(args.replay // 2)
            n = 2 * replay.per_class
            own, own_main = min(
                own_cpu(pipe, replay, images * (n // len(images) + 1), Path(tmp) / f"replay-{bs}-{r}") for r in range(3)
            )
            own, own_main = own / n, max(own_main, 0.0) / n
            ratios = [o / b for o, b in zip(ours, bare)]
            resampled = np.median(np.random.default_rng(0).choice(ratios, (10_000, len(ratios))), axis=1)
            low, high = np.percentile(resampled, [2.5, 97.5])
            model_s = 1 / max(bare)  # the fastest model time: the largest share for synthgap's work
            print(
                f"{bs:>5} {len(jobs):>6} {statistics.median(bare):>11.1f} {statistics.median(ours):>15.1f} "
                f"{statistics.median(ratios):>6.3f} ({low:.2f}-{high:.2f}) "
                f"{own * 1e3:>9.3f} ({own_main * 1e3:.3f}) {model_s / (model_s + own):>7.3f}-{model_s / (model_s + own_main):.3f}"
                f"   same images: {'yes' if same else 'NO'}"
            )
        print(
            f"own ms CPU/img: synthgap's work per image over a replayed run of {args.replay:,} images (blank check, metadata,\n"
            "PNG, hash, file, manifest line, writer thread), in brackets the main thread's share of it;\n"
            "bounds: the ratio if all of it delayed the model, and if only the main thread's share did"
        )


if __name__ == "__main__":
    main()
