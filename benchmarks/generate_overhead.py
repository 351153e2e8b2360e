"""What synthgap's generation costs on top of the diffusion model itself.

For batch sizes 1, 8 and 32, prints images/s of (a) a bare loop of pipeline calls (same model,
prompts, per-image generators, batch size and steps) and (b) `synthgap generate` (resizing, PNG
metadata, atomic writes, manifest with fsync), and their ratio (target >= 0.95). The model is the
tiny offline pipeline on the CPU, so the overhead shows at its largest: a real model spends far
longer per image in the network.

    .venv/bin/python benchmarks/generate_overhead.py [--images 64] [--steps 2]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from synthgap.config import GenerateConfig
from synthgap.generate import DatasetGenerator, load_pipeline, save_tiny_pipeline
from synthgap.generate.generator import Job
from synthgap.generate.prompts import image_seed


def bare_loop(pipe, gen: DatasetGenerator, jobs: list[Job], batch_size: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(jobs), batch_size):
        batch = jobs[i : i + batch_size]
        pipe(prompt=[gen.prompt(j) for j in batch], num_inference_steps=gen.cfg.steps, guidance_scale=gen.cfg.guidance_scale,
             generator=[torch.Generator().manual_seed(image_seed(gen.cfg.seed, j.cls, j.index)) for j in batch],
             output_type="pil")
    return len(jobs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="images per measurement (split over 2 classes)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs of each measurement")
    args = ap.parse_args()
    logging.getLogger("synthgap").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_pipeline(Path(tmp) / "tiny")
        pipe = load_pipeline(str(model))
        print(f"model: tiny offline StableDiffusionPipeline (32x32), {args.steps} steps, CPU, "
              f"{torch.get_num_threads()} threads; {args.images} images per measurement, best of {args.repeats}")
        print(f"{'batch':>5} {'bare img/s':>11} {'synthgap img/s':>15} {'ratio':>6}")
        for bs in (1, 8, 32):
            cfg = GenerateConfig(model=str(model), classes=["bird", "cat"], per_class=args.images // 2,
                                 steps=args.steps, batch_size=bs)
            gen = DatasetGenerator(cfg, pipeline=pipe)
            jobs = [Job(c, i) for c in cfg.classes for i in range(cfg.per_class)]
            bare_loop(pipe, gen, jobs[:bs], bs)  # warm-up
            bare, ours = 0.0, 0.0
            for r in range(args.repeats):
                bare = max(bare, bare_loop(pipe, gen, jobs, bs))
                out = Path(tmp) / f"out-{bs}-{r}"
                t = time.perf_counter()
                gen.run(out, progress=False)
                ours = max(ours, len(jobs) / (time.perf_counter() - t))
            print(f"{bs:>5} {bare:>11.1f} {ours:>15.1f} {ours / bare:>6.2f}")


if __name__ == "__main__":
    main()
