"""The builtin generator on a CPU: train the `small` preset for a time budget on CIFAR-10's six animal
classes, sample a labelled set through `synthgap generate`, and measure it.

Prints the Classification Accuracy Score (CAS: a classifier trained only on the generated images,
tested on real CIFAR-10 test photos) next to the same classifier trained on as many real images,
the sampling speed, and FID-Lite0 (Fréchet distance in EfficientNet-Lite0 feature space, not
Inception-FID) of the set and of real training images against the real test split.

    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/builtin_generator.py [--minutes 60] [--per-class 1000]

Every stage resumes: re-running after an interruption continues training from its checkpoint
and skips finished images and classifier runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthgap import ANIMALS
from synthgap.data.sets import load_class_folders, load_spec
from synthgap.experiments.config import TransferConfig
from synthgap.experiments.transfer import run_transfer, stratified_sample
from synthgap.generate import generate
from synthgap.generate.builtin import train_generator
from synthgap.generate.config import GenerateConfig, GeneratorConfig
from synthgap.generate.fid import FEATURES, frechet_distance, lite0_features
from synthgap.generate.generator import read_manifest
from synthgap.generate.quality import class_grid_of_set
from synthgap.io import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="training budget of the generator (0: --steps)")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead (with --minutes 0)")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a GeneratorConfig field of the recipe to measure, e.g. --set batch_size=64 (repeatable)",
    )
    ap.add_argument("--cas-seeds", default="0", help="classifier seeds of the CAS, comma-separated (e.g. 0,1)")
    ap.add_argument(
        "--cas-train",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a field of the CAS classifier's training (TrainConfig), e.g. epochs=8 batch_size=64 as the main job",
    )
    ap.add_argument("--preset", default="small")
    ap.add_argument(
        "--per-class", type=int, default=1000, help="generated images per class (80%% train the CAS classifier)"
    )
    ap.add_argument("--batch-size", type=int, default=100, help="images per sampling call")
    ap.add_argument("--sampler", default="dpm", help="dpm (DPM-Solver++) | ddim: the scheduler saved with the model")
    ap.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale for sampling [default: the model's, 4]; each value gets its own set",
    )
    ap.add_argument(
        "--sample-steps", type=int, default=None, help="sampling steps [default: the model's, 20]; its own set"
    )
    ap.add_argument("--out", default="runs/bench-builtin")
    ap.add_argument("--root", default=None, help="data root holding CIFAR-10 (default: $SYNTHGAP_DATA)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    classes = list(ANIMALS)

    gen_dir = out / "generator"
    t0 = time.perf_counter()
    from synthgap.config import load_config

    flags = {"preset": args.preset, "classes": classes, "time_budget": args.minutes, "steps": args.steps}
    recipe = load_config(GeneratorConfig, None, [f"sampler={args.sampler}", *args.overrides], flags=flags)
    train_generator("cifar10", gen_dir, recipe, root=args.root, resume=gen_dir.exists())
    training = json.loads((gen_dir / "training.json").read_text())
    print(
        f"generator: {args.preset} preset, {training['parameters'] / 1e6:.2f}M parameters, {training['steps']} steps "
        f"in {training['seconds'] / 60:.1f} min ({training['images_per_second']:.0f} training images/s), "
        f"loss (mean of last 100 steps) {training['final_loss_mean_last_100']:.4f}, "
        f"LR cooldown from step {training.get('cooldown_from_step')}",
        flush=True,
    )

    t1 = time.perf_counter()
    name = "synthetic" if args.guidance is None else f"synthetic-guidance{args.guidance:g}"
    name += "" if args.sample_steps is None else f"-steps{args.sample_steps}"
    synthetic = generate(
        GenerateConfig(
            model=str(gen_dir),
            classes=classes,
            per_class=args.per_class,
            batch_size=args.batch_size,
            guidance_scale=args.guidance,
            steps=args.sample_steps,
        ),
        out / name,
    )
    wall = time.perf_counter() - t1
    rows = read_manifest(synthetic)[0]
    class_grid_of_set(synthetic, rows, [Image.open(synthetic / r["path"]).convert("RGB") for r in rows])
    per_image = sum(r["seconds"] for r in rows) / len(rows)
    print(
        f"sampling: {len(rows)} images, {rows[0]['steps']} {args.sampler} steps, guidance {rows[0]['guidance_scale']}, "
        f"batch {args.batch_size}: {1 / per_image:.1f} images/s in the model "
        f"({len(rows) / wall:.1f} images/s end to end this run{' (resumed)' if wall < 0.5 * len(rows) * per_image else ''})",
        flush=True,
    )

    real_test = load_spec("cifar10", "test", classes, 32, args.root)
    real_train = load_spec("cifar10", "train", classes, 32, args.root)
    fake = load_class_folders(synthetic, classes, 32, "synthetic")
    n = min(len(fake), len(real_test))
    test_features = lite0_features(real_test.images)
    fid = frechet_distance(lite0_features(fake.images), test_features)
    reference = real_train.subset(stratified_sample(real_train.labels, n, np.random.default_rng(0)))
    fid_ref = frechet_distance(lite0_features(reference.images), test_features)
    print(
        f"FID-Lite0 ({FEATURES}) vs the real test split ({len(real_test)} images): generated {fid:.2f}; "
        f"{n} real training images {fid_ref:.2f} (the floor)",
        flush=True,
    )

    n_train = int(len(fake) * 0.8)  # a folder without splits holds 20% out as its test split
    seeds = [int(k) for k in args.cas_seeds.split(",")]
    cfg = load_config(
        TransferConfig,
        None,
        [f"train.{o}" for o in args.cas_train],
        flags={
            "classes": classes,
            "seeds": seeds,
            "fractions": [0.0, 1.0],
            "extra_synthetic": [],
            "train_size": n_train,
        },
    )
    # One set per guidance scale (a larger --per-class extends it); one classifier run per set size.
    tag = name.removeprefix("synthetic") + ("" if args.per_class == 1000 else f"-{args.per_class}per-class")
    tag += "".join(f"-{o.replace('=', '')}" for o in args.cas_train)
    records = run_transfer("cifar10", str(synthetic), out / f"transfer{tag}", cfg, root=args.root)
    by_arm: dict = {}
    for r in records:
        by_arm.setdefault((r["training_set"], r["test_domain"]), []).append(r["accuracy"])
    cas, real_real = (float(np.mean(by_arm[arm])) for arm in (("synthetic", "real"), ("real", "real")))
    spread = {arm: (min(v), max(v)) for arm, v in by_arm.items()}
    print(
        f"classifier: airnet, {n_train} training images, same budget both ways, tested on {len(real_test)} real test photos"
    )
    print(
        f"CAS (synthetic -> real): {cas:.2%} (seeds {seeds}: {spread[('synthetic', 'real')][0]:.1%}-"
        f"{spread[('synthetic', 'real')][1]:.1%})   real -> real: {real_real:.2%}   chance: {1 / len(classes):.1%}   "
        f"(target CAS >= 50%: {'met' if cas >= 0.5 else 'not met'})"
    )
    write_json(
        out / f"results{tag}.json",
        {
            "preset": args.preset,
            "budget_minutes": args.minutes,
            "training": training,
            "sampling_images_per_second": round(1 / per_image, 2),
            "images": len(rows),
            "fid_lite0": round(fid, 3),
            "fid_lite0_real_train_reference": round(fid_ref, 3),
            "fid_features": FEATURES,
            "cas": cas,
            "real_to_real": real_real,
            "classifier_train_size": n_train,
            "total_minutes": round((time.perf_counter() - t0) / 60, 1),
            "torch_threads": torch.get_num_threads(),
        },
    )
    print(f"results: {out}/results{tag}.json; grids: {gen_dir / 'samples'}; set: {synthetic} (grid.png)")


if __name__ == "__main__":
    main()
