"""The detector on the CIFAKE benchmark restricted to six classes (CIFAR-10 real vs Stable
Diffusion 1.4 fake, both JPEG q75, train/test as given), on this machine's CPU.

Prints, for the small CNN from scratch (32x32) and for EfficientNet-Lite0 (offline ImageNet
weights, cached features then fine-tuning): training minutes, test accuracy and AUC against the
targets (>= 95%; >= 97% and AUC >= 0.995; each within 30 minutes); the speed-up of a head epoch
on cached features over an epoch through the frozen backbone (target >= 20x); and the robustness
table and format-bias verdict of the best model. Outputs (bundles, reports) go to --out.

    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/detector.py [--only airnet|lite0|speed]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from synthgap import ANIMALS
from synthgap.config import load_config
from synthgap.detect.config import DetectorConfig
from synthgap.detect.data import load_detector_data
from synthgap.detect.model import build_detector
from synthgap.detect.report import robustness_md
from synthgap.detect.train import extract_features, run_detector
from synthgap.train.loop import fit

ROOT = Path(os.environ.get("SYNTHGAP_DATA", "../shared/data"))
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def head_speedup(data, n: int = 4096) -> None:
    """One epoch of head training on cached features vs one epoch through the frozen backbone."""
    torch.manual_seed(0)
    part = data.train.subset(torch.arange(n))
    model = build_detector("efficientnet_lite0")
    model.backbone.set_trainable(0)
    cfg = DetectorConfig().head
    cfg = dataclasses.replace(cfg, epochs=1, val_fraction=0.0)
    t = time.perf_counter()
    fit(part, cfg, model=model, progress=False)
    frozen = time.perf_counter() - t
    t = time.perf_counter()
    feats = extract_features(model, part.images, "cpu", progress=False)
    extract = time.perf_counter() - t
    from synthgap.detect.train import _as_features

    cfg_f = dataclasses.replace(cfg, tta=False)
    t = time.perf_counter()
    fit(_as_features(part, feats), cfg_f, model=model.head, prepare=lambda x, g=None: x, progress=False)
    cached = time.perf_counter() - t
    print(
        f"head epoch over {n} images: through the frozen backbone {frozen:.2f} s, on cached features "
        f"{cached:.3f} s -> {frozen / cached:.0f}x faster (target >= 20x); extracting the features once: {extract:.2f} s"
    )


def run(name: str, config: str, data, out: Path) -> dict:
    cfg = load_config(DetectorConfig, CONFIGS / config)
    t = time.perf_counter()
    meta = run_detector(data, cfg, out / name, progress=False)
    wall = time.perf_counter() - t
    m = meta["metrics"]
    print(
        f"{name}: test accuracy {100 * m['accuracy']:.2f}%, AUC {m['auc']:.4f}, AP {m['average_precision']:.4f}; "
        f"training {meta['training']['seconds'] / 60:.1f} min ({wall / 60:.1f} min with evaluation); stages "
        + json.dumps(meta["training"]["stages"]),
        flush=True,
    )
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["airnet", "lite0", "speed"], default=None)
    ap.add_argument("--out", default="runs/bench-detector")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    real, fake = ROOT / "cifar10-jpeg", ROOT / "cifake-sd14-fake"
    if not real.is_dir() or not fake.is_dir():
        raise SystemExit(f"needs {real} and {fake} (set SYNTHGAP_DATA to the shared data folder)")
    data = load_detector_data(real=str(real), synthetic=str(fake), classes=list(ANIMALS), size=32)
    print(f"data: train {len(data.train)}, val {len(data.val)}, test {len(data.test)}", flush=True)
    out = Path(args.out)
    results = {}
    if args.only in (None, "speed"):
        head_speedup(data)
    if args.only in (None, "airnet"):
        results["small CNN (airnet, from scratch)"] = (run("airnet", "detector-airnet.yaml", data, out), 0.95, None)
    if args.only in (None, "lite0"):
        results["efficientnet_lite0"] = (run("efficientnet_lite0", "detector-lite0.yaml", data, out), 0.97, 0.995)
    for name, (meta, acc_target, auc_target) in results.items():
        m, minutes = meta["metrics"], meta["training"]["seconds"] / 60
        ok = m["accuracy"] >= acc_target and (auc_target is None or m["auc"] >= auc_target) and minutes <= 30
        print(
            f"TARGET {name}: accuracy {100 * m['accuracy']:.2f}% (>= {100 * acc_target:.0f}%)"
            + (f", AUC {m['auc']:.4f} (>= {auc_target})" if auc_target else "")
            + f", {minutes:.1f} min (<= 30): {'met' if ok else 'NOT met'}"
        )
    if results:
        best_name, (best, _, _) = max(results.items(), key=lambda kv: kv[1][0]["metrics"]["auc"])
        print(f"\nrobustness of the best model ({best_name}):\n" + robustness_md(best["robustness"]))
        print(f"format-bias audit: {best['format_bias']['verdict']}")


if __name__ == "__main__":
    main()
