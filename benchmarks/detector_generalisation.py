"""How detectors do on generators they never saw: the generalisation matrix of `synthgap detector cross`
on CIFAR-10's six animal classes (real) against CIFAKE's Stable Diffusion 1.4 images and four offline
generators made here from synthgap's builtin class-conditional diffusion model (one hour of training
reused for its variants), for the detector families efficientnet_lite0, npr and airnet. Prints, asserts
nothing; every stage resumes from --out.

Sources (6,000 images each, 1,000 per class, stored as JPEG q75 like the real set, so the format does not
separate them):
    sd14            CIFAKE's Stable Diffusion 1.4 images (../shared)
    builtin         the `small` preset after its full hour, DPM-Solver++ 20 steps, guidance 4
    builtin-short   the same run's snapshot after --short-steps steps (a rougher generator)
    builtin-ddim    the full model sampled with DDIM (20 steps) instead
    builtin-g2      the full model at guidance 2

Then: the audit of all of them together, the matrix (configs/detector-cross.yaml: the same budget for every
detector), the domain check on photo-sized images and on the real and SD 1.4 test images, and the figures
against the targets (best family's leave-one-out mean AUC >= 0.90 and accuracy >= 80% on unseen sources;
in-domain accuracy on SD 1.4 >= 97% for the best detector trained on all sources).

    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/detector_generalisation.py   # ~2.6 h on 2 cores (2026-12-01)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from pathlib import Path

import torch

from synthgap import ANIMALS

ROOT = Path(os.environ.get("SYNTHGAP_DATA", "../shared/data"))
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def stamp(what: str, t0: float) -> None:
    print(f"[{(time.perf_counter() - t0) / 60:6.1f} min] {what}", flush=True)


def make_generators(out: Path, minutes: float, short_steps: int, per_class: int, t0: float) -> dict[str, str]:
    """Train (or resume) the builtin generator, derive its variants, sample each into a JPEG q75 set."""
    from synthgap.generate import generate
    from synthgap.generate.builtin import saved_config, train_generator
    from synthgap.generate.config import GenerateConfig, GeneratorConfig

    gen = out / "generator"
    cfg = GeneratorConfig(preset="small", time_budget=minutes, snapshots=[short_steps], sample_every=0)
    train_generator("cifar10", gen, cfg, root=ROOT, resume=True, progress=False)
    stamp(f"generator: {gen} ({saved_config(gen).steps} steps max, {minutes:g} min budget)", t0)
    short = gen / "snapshots" / f"step_{short_steps:06d}"
    if not (short / "model_index.json").exists():
        raise SystemExit(f"{short}: no snapshot (the run made fewer than {short_steps} steps); lower --short-steps")
    ddim = out / "generator-ddim"  # the same weights with the DDIM sampler: re-exported through the trainer's resume
    if not (ddim / "model_index.json").exists():
        shutil.copytree(gen, ddim, dirs_exist_ok=True, ignore=shutil.ignore_patterns("snapshots", "samples"))
        train_generator(
            "cifar10",
            ddim,
            dataclasses.replace(cfg, sampler="ddim", snapshots=[]),
            root=ROOT,
            resume=True,
            progress=False,
        )
    variants = {
        "builtin": (gen, None),
        "builtin-short": (short, None),
        "builtin-ddim": (ddim, None),
        "builtin-g2": (gen, 2.0),
    }
    sets = {}
    for k, (name, (model, guidance)) in enumerate(variants.items()):
        folder = out / "sets" / name
        # A run seed of its own: with the same seeds the variants start from the same noise and make near-identical
        # images (the audit finds 14,010 such pairs), so no variant would be unseen by a detector trained on another.
        gcfg = GenerateConfig(
            model=str(model),
            classes=list(ANIMALS),
            per_class=per_class,
            batch_size=100,
            seed=1 + k,
            guidance_scale=guidance,
            image_format="jpeg",
            jpeg_quality=75,
        )
        t = time.perf_counter()
        generate(gcfg, folder, progress=False)
        stamp(f"sampled {name}: {folder} ({time.perf_counter() - t:.0f} s)", t0)
        sets[name] = str(folder)
    return sets


def domain_check(bundle_dir: Path, out: Path, t0: float) -> None:
    """Photo-sized images (CIFAR-10 test photos upscaled to 768 px and to 3000 x 2000) and the real and SD 1.4
    test images: how many each detector calls outside its training domain."""
    from PIL import Image

    from synthgap.detect.model import load_bundle

    photos = out / "photo-sized"
    if not photos.is_dir():
        photos.mkdir(parents=True)
        files = sorted((ROOT / "cifar10-jpeg" / "test" / "bird").glob("*.jpg"))[:100]
        for k, f in enumerate(files):
            size = (768, 768) if k % 2 else (3000, 2000)
            Image.open(f).convert("RGB").resize(size, Image.BICUBIC).save(photos / f"{k:03d}.jpg", quality=90)
    bundle = load_bundle(bundle_dir)
    for name, files in (
        ("photo-sized (768 px and 3000x2000)", sorted(photos.glob("*.jpg"))),
        ("CIFAR-10 test", sorted((ROOT / "cifar10-jpeg" / "test").rglob("*.jpg"))[::10]),
        ("CIFAKE SD 1.4 test", sorted((ROOT / "cifake-sd14-fake" / "test").rglob("*.jpg"))[::10]),
    ):
        recs = bundle.assess_files([str(f) for f in files])
        outside = sum(r["rule"] == "outside_domain" for r in recs)
        unsure = sum(r["rule"] in ("unstable", "near_threshold") for r in recs)
        print(
            f"  {name:>36}: {outside}/{len(recs)} ({100 * outside / len(recs):.1f}%) outside the training domain, "
            f"{unsure} unsure"
        )
    t = time.perf_counter()
    bundle.assess_files([str(sorted(photos.glob("*.jpg"))[0])])
    stamp(f"one 3000x2000 photo through assess_files: {time.perf_counter() - t:.2f} s", t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-generalisation")
    ap.add_argument("--minutes", type=float, default=60, help="the builtin generator's training budget")
    ap.add_argument("--short-steps", type=int, default=800, help="the step of the 'short run' snapshot")
    ap.add_argument("--per-class", type=int, default=1000, help="images per class of each builtin source")
    ap.add_argument("--backbones", default="efficientnet_lite0,npr,airnet")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if not (ROOT / "cifar10-jpeg").is_dir() or not (ROOT / "cifake-sd14-fake").is_dir():
        raise SystemExit(
            f"needs {ROOT}/cifar10-jpeg and {ROOT}/cifake-sd14-fake (set SYNTHGAP_DATA to the shared data folder)"
        )
    out = Path(args.out)
    t0 = time.perf_counter()
    sets = make_generators(out, args.minutes, args.short_steps, args.per_class, t0)

    from synthgap.config import load_config
    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.data import load_sources
    from synthgap.detect.generalise import cross_matrix

    cfg = load_config(DetectorConfig, CONFIGS / "detector-cross.yaml")
    synthetic = [f"sd14={ROOT / 'cifake-sd14-fake'}"] + [f"{k}={v}" for k, v in sets.items()]
    loaded = load_sources(
        [f"cifar10={ROOT / 'cifar10-jpeg'}"],
        synthetic,
        classes=list(ANIMALS),
        size=cfg.image_size,
        dedupe=cfg.dedupe,
        progress=False,
    )
    if loaded.audit:
        from synthgap.audit import summary_lines

        print("\n".join(summary_lines(loaded.audit.summary())), flush=True)
        loaded.audit.write(out / "audit")
    stamp("sources loaded and audited", t0)
    backbones = [b for b in args.backbones.split(",") if b]
    result = cross_matrix(loaded, cfg, backbones, out / "cross", progress=False)
    stamp(f"matrix: {out / 'cross' / 'cross.md'}", t0)
    print(f"\nsizes: {result['sizes']}")
    for row in result["summary"]:
        print(
            f"{row['backbone']:>20}: unseen (leave-one-out) AUC {100 * row['unseen_leave_one_out_auc']:.1f}%, accuracy "
            f"{100 * row['unseen_leave_one_out_accuracy']:.1f}%; unseen (single source) AUC "
            f"{100 * row['unseen_single_source_auc']:.1f}%, accuracy {100 * row['unseen_single_source_accuracy']:.1f}%; "
            f"trained on all: AUC {100 * row['all_sources_auc']:.1f}%, accuracy {100 * row['all_sources_accuracy']:.1f}%"
        )
    best = max(result["summary"], key=lambda r: r["unseen_leave_one_out_auc"])
    sd = {r["backbone"]: r["accuracy"] for r in result["rows"] if r["detector"] == "all" and r["test_source"] == "sd14"}
    print(
        f"TARGET best family ({best['backbone']}) on unseen sources: AUC {best['unseen_leave_one_out_auc']:.3f} (>= 0.90), "
        f"accuracy {100 * best['unseen_leave_one_out_accuracy']:.1f}% (>= 80%): "
        f"{'met' if best['unseen_leave_one_out_auc'] >= 0.9 and best['unseen_leave_one_out_accuracy'] >= 0.8 else 'NOT met'}"
    )
    top = max(sd, key=sd.get)
    print(
        f"TARGET in-domain accuracy on SD 1.4 of the best detector trained on all sources ({top}): "
        f"{100 * sd[top]:.1f}% (>= 97%): {'met' if sd[top] >= 0.97 else 'NOT met'}"
    )
    print("\ndomain check of the detectors trained on all sources:")
    for b in backbones:
        print(f" {b}:")
        domain_check(out / "cross" / b / "all", out, t0)
    stamp("done", t0)


if __name__ == "__main__":
    main()
