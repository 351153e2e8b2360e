"""What synthgap's generation costs on top of the diffusion model itself.

For batch sizes 1, 8 and 32, prints images/s of (a) a bare loop of pipeline calls (same model,
prompts, per-image generators, batch size and steps) and (b) `synthgap generate` (resizing, PNG
metadata, atomic writes, manifest), and their ratio (target >= 0.95); the bare loop makes the very
images synthgap saves (checked). The model is the tiny offline pipeline on the CPU, so the overhead
shows at its largest: a real model spends far longer per image in the network. Last, the cost of
writing one file alone, the floor of any saver that writes a file per image.

    .venv/bin/python benchmarks/generate_overhead.py [--images 256] [--steps 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthgap.config import GenerateConfig
from synthgap.generate import DatasetGenerator, load_pipeline, save_tiny_pipeline
from synthgap.generate.generator import Job
from synthgap.io import write_bytes


def bare_loop(pipe, gen: DatasetGenerator, jobs: list[Job], batch_size: int) -> tuple[float, list]:
    """images/s of the pipeline alone, called exactly as synthgap calls it (same prompts, negative prompt,
    per-image generators, steps, guidance); also returns the last batch's images."""
    t = time.perf_counter()
    for i in range(0, len(jobs), batch_size):
        images = pipe(**gen.pipeline_kwargs(jobs[i : i + batch_size])).images
    return len(jobs) / (time.perf_counter() - t), images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="images per measurement (split over 2 classes)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="best of this many runs of each measurement")
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
                rate, images = bare_loop(pipe, gen, jobs, bs)
                bare = max(bare, rate)
                out = Path(tmp) / f"out-{bs}-{r}"
                t = time.perf_counter()
                gen.run(out, progress=False)
                ours = max(ours, len(jobs) / (time.perf_counter() - t))
            # The same work both ways: the bare loop's last images are the files synthgap wrote.
            saved = [np.asarray(Image.open(out / f"{j.cls}/{j.id}.png").convert("RGB")) for j in jobs[-len(images):]]
            same = all(np.array_equal(np.asarray(im.convert("RGB")), s) for im, s in zip(images, saved))
            print(f"{bs:>5} {bare:>11.1f} {ours:>15.1f} {ours / bare:>6.2f}   same images: {'yes' if same else 'NO'}")
        # The floor no saver avoids: one new file per image, which on some disks costs a good share of
        # the tiny model's few milliseconds per image in kernel CPU (taken from the model's cores).
        data = (out / f"{jobs[0].cls}/{jobs[0].id}.png").read_bytes()
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(args.images):
            write_bytes(Path(tmp) / "floor" / f"{i:05d}.png", data)
        cpu, wall = (time.process_time() - cpu) / args.images, (time.perf_counter() - wall) / args.images
        print(f"writing a {len(data):,}-byte PNG file alone (create, write, rename): {wall * 1e3:.2f} ms wall, "
              f"{cpu * 1e3:.2f} ms CPU per file here; the model alone at batch {bs}: {1e3 / bare:.2f} ms per image")


if __name__ == "__main__":
    main()
