"""The builtin generator on a CPU: quality per CPU-minute. Train a recipe (the `small` preset unless
--set says otherwise) on CIFAR-10's six animal classes, sample a labelled set through `synthgap generate`,
and measure it.

Prints the Classification Accuracy Score (CAS: a classifier trained only on the generated images,
tested on real CIFAR-10 test photos) next to the same classifier trained on as many real images,
the sampling speed, and FID-Lite0 (Fréchet distance in EfficientNet-Lite0 feature space, not
Inception-FID) of the set and of real training images against the real test split.

    # one budget, shaped by the clock (the hour-long figure of docs/benchmarks.md)
    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/builtin_generator.py [--minutes 60] [--per-class 1000]
    # several budgets from one run: minutes become steps at the rate measured on this machine first
    # (kept in OUT/budgets.json), the shorter budgets are snapshots of the longest; one table, one figure
    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/builtin_generator.py --minutes 8,20,60 --cas-seeds 0,1
    # a fixed step count (the main job's recipe table)
    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/builtin_generator.py --minutes 0 --steps 5000

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
from synthgap.config import load_config
from synthgap.data.sets import load_class_folders, load_spec
from synthgap.experiments.config import TransferConfig
from synthgap.experiments.transfer import run_transfer, stratified_sample
from synthgap.generate import generate
from synthgap.generate.builtin import saved_config, train_generator
from synthgap.generate.config import GenerateConfig, GeneratorConfig
from synthgap.generate.fid import FEATURES, frechet_distance, lite0_features
from synthgap.generate.generator import read_manifest
from synthgap.generate.quality import class_grid_of_set
from synthgap.io import write_json
from synthgap.report.plots import plot_samples


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--minutes",
        default="60",
        help="training budget in minutes (0: --steps); several, e.g. 8,20,60: one run of the longest, measured at each",
    )
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead (with --minutes 0)")
    ap.add_argument(
        "--steps-per-minute",
        type=float,
        default=None,
        help="with several --minutes: the rate that turns minutes into steps [default: measured here by a short run]",
    )
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
    try:
        args.budgets = sorted({float(m) for m in args.minutes.split(",")})
    except ValueError:
        ap.error(f"--minutes: expected minutes or a comma-separated list of them, e.g. 8,20,60 (got {args.minutes!r})")
    if len(args.budgets) > 1 and (min(args.budgets) <= 0 or args.steps is not None):
        ap.error("--minutes with several budgets: every budget > 0, and no --steps")
    return args


def recipe_config(args, **flags) -> GeneratorConfig:

    flags = {"preset": args.preset, "classes": list(ANIMALS), **flags}
    return load_config(GeneratorConfig, None, [f"sampler={args.sampler}", *args.overrides], flags=flags)


def steps_per_minute(args, out: Path) -> float:
    """The recipe's training steps per minute on this machine, measured once by a 300-step run (with the
    recipe's grids and checkpoints) and kept in OUT/budgets.json, so a re-run resumes the same step counts."""
    record = out / "budgets.json"
    if args.steps_per_minute:
        rate, how = args.steps_per_minute, "given (--steps-per-minute)"
    elif record.exists():
        kept = json.loads(record.read_text())
        rate, how = kept["steps_per_minute"], f"measured {kept['measured']} (kept in {record})"
    else:
        probe = out / "calibration"
        train_generator("cifar10", probe, recipe_config(args, steps=300), root=args.root, resume=probe.exists())
        done = json.loads((probe / "training.json").read_text())
        rate, how = 60 * done["steps"] / done["seconds"], f"measured now ({done['steps']} steps, {probe})"
        write_json(record, {"steps_per_minute": rate, "measured": time.strftime("%Y-%m-%d %H:%M")})
    print(f"training rate: {rate:.0f} steps per minute, {how}", flush=True)
    return rate


def sample_set(args, model: Path, name: str, per_class: int) -> tuple[Path, dict]:
    """A labelled set of `per_class` images per class from `model` through `synthgap generate`, with its grid."""
    t1 = time.perf_counter()
    synthetic = generate(
        GenerateConfig(
            model=str(model),
            classes=list(ANIMALS),
            per_class=per_class,
            batch_size=args.batch_size,
            guidance_scale=args.guidance,
            steps=args.sample_steps,
        ),
        args.out_dir / name,
    )
    wall = time.perf_counter() - t1
    rows = read_manifest(synthetic)[0]
    class_grid_of_set(synthetic, rows, [Image.open(synthetic / r["path"]).convert("RGB") for r in rows])
    per_image = sum(r["seconds"] for r in rows) / len(rows)
    print(
        f"sampling {name}: {len(rows)} images, {rows[0]['steps']} {args.sampler} steps, guidance "
        f"{rows[0]['guidance_scale']}, batch {args.batch_size}: {1 / per_image:.1f} images/s in the model "
        f"({len(rows) / wall:.1f} images/s end to end this run{' (resumed)' if wall < 0.5 * len(rows) * per_image else ''})",
        flush=True,
    )
    return synthetic, {"images": len(rows), "sampling_images_per_second": round(1 / per_image, 2)}


def measure_set(args, synthetic: Path, transfer_dir: Path, real: dict) -> dict:
    """FID-Lite0 of the set against the real test split and its CAS (mean and seed range) beside real->real."""
    classes = list(ANIMALS)
    fake = load_class_folders(synthetic, classes, 32, "synthetic")
    fid = frechet_distance(lite0_features(fake.images), real["test_features"])
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
    records = run_transfer("cifar10", str(synthetic), transfer_dir, cfg, root=args.root)
    by_arm: dict = {}
    for r in records:
        by_arm.setdefault((r["training_set"], r["test_domain"]), []).append(r["accuracy"])
    cas, real_real = (by_arm[arm] for arm in (("synthetic", "real"), ("real", "real")))
    return {
        "fid_lite0": round(fid, 3),
        "cas": float(np.mean(cas)),
        "cas_seeds": dict(zip(seeds, cas)),
        "real_to_real": float(np.mean(real_real)),
        "real_to_real_seeds": dict(zip(seeds, real_real)),
        "classifier_train_size": n_train,
        "seeds": seeds,
        "images_measured": len(fake),
    }


def real_reference(args, n: int) -> dict:
    """The real test split's Lite0 features and the floor: FID-Lite0 of `n` real training images against them."""
    classes = list(ANIMALS)
    real_test = load_spec("cifar10", "test", classes, 32, args.root)
    real_train = load_spec("cifar10", "train", classes, 32, args.root)
    test_features = lite0_features(real_test.images)
    reference = real_train.subset(
        stratified_sample(real_train.labels, min(n, len(real_test)), np.random.default_rng(0))
    )
    fid_ref = frechet_distance(lite0_features(reference.images), test_features)
    print(
        f"FID-Lite0 ({FEATURES}) reference: {len(reference)} real training images against the real test split "
        f"({len(real_test)} images): {fid_ref:.2f} (the floor)",
        flush=True,
    )
    return {"test_features": test_features, "test_size": len(real_test), "train": reference, "fid_floor": fid_ref}


def describe_training(args, gen_dir: Path) -> dict:
    training = json.loads((gen_dir / "training.json").read_text())
    training["batch_size"] = saved_config(gen_dir).batch_size
    print(
        f"generator: {args.preset} preset, {training['parameters'] / 1e6:.2f}M parameters, {training['steps']} steps "
        f"of {training['batch_size']} in {training['seconds'] / 60:.1f} min "
        f"({training['images_per_second']:.0f} training images/s), "
        f"loss (mean of last 100 steps) {training['final_loss_mean_last_100']:.4f}, "
        f"LR cooldown from step {training.get('cooldown_from_step')}",
        flush=True,
    )
    return training


def cas_text(m: dict) -> str:
    values = list(m["cas_seeds"].values())
    spread = f" (seeds {'/'.join(str(s) for s in m['seeds'])}: {' / '.join(f'{v:.1%}' for v in values)})"
    return f"{m['cas']:.1%}" + (spread if len(values) > 1 else "")


def per_budget(args, out: Path, classes: list[str]) -> None:
    """--minutes 8,20,60: one run of the longest budget in steps, saved whole at the shorter budgets' steps."""
    rate = steps_per_minute(args, out)
    steps = {m: max(1, round(rate * m)) for m in args.budgets}
    longest = max(args.budgets)
    gen_dir = out / "generator"
    recipe = recipe_config(args, steps=steps[longest], snapshots=sorted(steps[m] for m in args.budgets if m != longest))
    train_generator("cifar10", gen_dir, recipe, root=args.root, resume=gen_dir.exists())
    training = describe_training(args, gen_dir)
    real = real_reference(args, args.per_class * len(classes))
    rows, panels = [], {"real (training images)": real["train"]}
    for m in args.budgets:
        model = gen_dir if m == longest else gen_dir / "snapshots" / f"step_{steps[m]:06d}"
        name = f"synthetic-{m:g}min"
        synthetic, sampling = sample_set(args, model, name, args.per_class)
        measured = measure_set(args, synthetic, out / f"transfer-{m:g}min", real)
        rows.append({"minutes": m, "steps": steps[m], **sampling, **measured})
        panels[f"{m:g} min ({steps[m]:,} steps)"] = load_class_folders(synthetic, classes, 32, "synthetic")
        print(f"{m:g} min: FID-Lite0 {measured['fid_lite0']:.1f}, CAS {cas_text(measured)}", flush=True)
    plot_samples(panels, out / "grids.png")
    batch = training["batch_size"]
    print(
        f"\n{args.preset} preset{' with ' + ', '.join(args.overrides) if args.overrides else ''}: one run of "
        f"{steps[longest]:,} steps of {batch} ({training['images_per_second']:.0f} training images/s, "
        f"{training['seconds'] / 60:.1f} min), the shorter budgets its snapshots (constant LR, EMA weights: "
        f"no cooldown of their own); {args.per_class} images per class each; CAS classifier on "
        f"{rows[0]['classifier_train_size']} images, tested on {real['test_size']} real test photos; chance "
        f"{1 / len(classes):.1%}\n"
    )
    print("| minutes | steps | training images/s | sampling s/image | FID-Lite0 | CAS | real -> real (same size) |")
    print("|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['minutes']:g} | {r['steps']:,} | {training['images_per_second']:.0f} | "
            f"{1 / r['sampling_images_per_second']:.3f} | {r['fid_lite0']:.1f} | {cas_text(r)} | {r['real_to_real']:.1%} |"
        )
    print(f"| (floor: {len(real['train'])} real training images) | | | | {real['fid_floor']:.1f} | | |")
    write_json(
        out / "budgets-results.json",
        {
            "preset": args.preset,
            "overrides": args.overrides,
            "steps_per_minute": rate,
            "training": training,
            "budgets": rows,
            "fid_lite0_real_train_reference": round(real["fid_floor"], 3),
            "fid_features": FEATURES,
            "torch_threads": torch.get_num_threads(),
        },
    )
    print(f"\nresults: {out}/budgets-results.json; grids side by side: {out}/grids.png")


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out_dir = Path(args.out)
    classes = list(ANIMALS)
    if len(args.budgets) > 1:
        return per_budget(args, out, classes)

    t0 = time.perf_counter()
    gen_dir = out / "generator"
    recipe = recipe_config(args, time_budget=args.budgets[0], steps=args.steps)
    train_generator("cifar10", gen_dir, recipe, root=args.root, resume=gen_dir.exists())
    training = describe_training(args, gen_dir)

    name = "synthetic" if args.guidance is None else f"synthetic-guidance{args.guidance:g}"
    name += "" if args.sample_steps is None else f"-steps{args.sample_steps}"
    synthetic, sampling = sample_set(args, gen_dir, name, args.per_class)
    real = real_reference(args, sampling["images"])
    # One set per guidance scale (a larger --per-class extends it); one classifier run per set size.
    tag = name.removeprefix("synthetic") + ("" if args.per_class == 1000 else f"-{args.per_class}per-class")
    tag += "".join(f"-{o.replace('=', '')}" for o in args.cas_train)
    m = measure_set(args, synthetic, out / f"transfer{tag}", real)
    print(
        f"FID-Lite0 ({FEATURES}) vs the real test split: generated {m['fid_lite0']:.2f}; "
        f"{len(real['train'])} real training images {real['fid_floor']:.2f} (the floor)"
    )
    print(
        f"classifier: airnet, {m['classifier_train_size']} training images, same budget both ways, tested on "
        f"{real['test_size']} real test photos"
    )
    print(
        f"CAS (synthetic -> real): {cas_text(m)}   real -> real: {m['real_to_real']:.2%}   "
        f"chance: {1 / len(classes):.1%}"
    )
    write_json(
        out / f"results{tag}.json",
        {
            "preset": args.preset,
            "budget_minutes": args.budgets[0],
            "training": training,
            **sampling,
            "fid_lite0": m["fid_lite0"],
            "fid_lite0_real_train_reference": round(real["fid_floor"], 3),
            "fid_features": FEATURES,
            "cas": m["cas"],
            "cas_seeds": m["cas_seeds"],
            "real_to_real": m["real_to_real"],
            "classifier_train_size": m["classifier_train_size"],
            "total_minutes": round((time.perf_counter() - t0) / 60, 1),
            "torch_threads": torch.get_num_threads(),
        },
    )
    print(f"results: {out}/results{tag}.json; grids: {gen_dir / 'samples'}; set: {synthetic} (grid.png)")


if __name__ == "__main__":
    main()
