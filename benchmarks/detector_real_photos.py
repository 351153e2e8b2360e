"""Photo detectors on real data: real photos against AI images of several generator families, at their own
size and in their original bytes (e.g. `$SYNTHGAP_DATA/photos`: `real/<source>/`, `ai/<family>/`).

For each recipe (a detector config; `--recipes`), trains
- one detector on every family (in-distribution: test accuracy and AUC, per real source and per family), and
- one per left-out family (leave-one-family-out: trained on the other families, tested on ALL images of the
  left-out family against the held-out real test photos),
- one per left-out real source (`--folds loro`: trained without it, tested on ALL its photos against the
  held-out AI test images: how often photos from a source never seen are called AI-generated),
and beside each, the shortcut probes on the same splits: the content probe (the same backbone and head on
32 px thumbnails: what the pictures show) and the metadata probe (the format-bias audit of the files as
stored, and of what the model sees after the input chain). Also: accuracy and share of the images the
detector decides (the content check of its training domain and, with real_quantile, its "real" bound), time
and peak memory (PSS of the process and its DataLoader workers), and the latency of checking a 12-megapixel JPEG. Prints the figures; asserts nothing.

    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/detector_real_photos.py            # both recipes
    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/detector_real_photos.py --recipes chain
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# name -> config overrides of DetectorConfig (the default: Lite0, windows at native scale, the shortcut-removing chain)
# ("-head": stage 1 only, on a 2 x 2 grid of windows: a quarter of the default's minutes, for comparing recipes)
NO_CHAIN = {"window_rescale": None, "window_jpeg": None, "eval_jpeg": None}
RECIPES = {
    "chain": {},
    "no-chain": NO_CHAIN,
    "chain-head": {"finetune_blocks": 0, "crop_grid": 2},
    "jpeg-head": {"finetune_blocks": 0, "crop_grid": 2, "window_rescale": None},
    "no-chain-head": {"finetune_blocks": 0, "crop_grid": 2, **NO_CHAIN},
    # chain-head on the pooled outputs of Lite0's blocks (feature_blocks): 4 = its 40-channel stage at 1/8 scale
    # alone, 6 = its 112-channel stage at 1/16 alone: low-level features, less of what the picture shows;
    # 4+9: the 40-channel stage beside the top's 1,280 features
    "bottom4-head": {"finetune_blocks": 0, "crop_grid": 2, "feature_blocks": [4]},
    "bottom6-head": {"finetune_blocks": 0, "crop_grid": 2, "feature_blocks": [6]},
    "levels4+9-head": {"finetune_blocks": 0, "crop_grid": 2, "feature_blocks": [4, 9]},
    # the same two levels, a head each (head_per_block), the logit their mean: two detectors on one backbone pass
    "levels4+9-heads": {"finetune_blocks": 0, "crop_grid": 2, "feature_blocks": [4, 9], "head_per_block": True},
    # ... answering "real" only below the median of its validation real images' P (configs/detector-photo.yaml)
    "levels4+9-heads-q50": {
        "finetune_blocks": 0,
        "crop_grid": 2,
        "feature_blocks": [4, 9],
        "head_per_block": True,
        "real_quantile": 0.5,
    },
}


def held_out_figures(bundle, real_test, family, probe: bool = False) -> dict:
    """AUC of a left-out family against the real test photos (or of a left-out real source against the AI
    test images); accuracy at the bundle's threshold; with the content check and the real bound, the share
    decided and the accuracy on it, overall and per side."""
    from sklearn.metrics import roc_auc_score

    from synthgap.data.sets import concat
    from synthgap.detect.domain import content_check, content_scores

    both = concat([real_test, family], "held-out", "mixed")
    y = both.labels.numpy()
    p = bundle.predict_set(both).numpy()
    right = (p >= bundle.threshold) == y
    out = {
        "auc": float(roc_auc_score(y, p)),
        "accuracy": float(right.mean()),
        "recall_real": float(right[y == 0].mean()),
        "recall_synthetic": float(right[y == 1].mean()),
        "n_real": int((y == 0).sum()),
        "n_synthetic": int((y == 1).sum()),
    }
    known = content_check(bundle.domain)
    bound = bundle.real_bound  # between it and the threshold: "unsure" (real_quantile)
    checked = bundle.bank is not None and known
    if not probe and (checked or bound):
        inside = np.ones(len(y), bool)
        if checked:
            inside = content_scores(bundle.set_features(both), bundle.bank, known["k"]).numpy() <= known["threshold"]
        if bound:
            inside &= (p >= bundle.threshold) | (p < bound["p"])
        out["decided"] = float(inside.mean())
        out["decided_real"], out["decided_synthetic"] = float(inside[y == 0].mean()), float(inside[y == 1].mean())
        out["accuracy_decided_real"] = float(right[inside & (y == 0)].mean()) if (inside & (y == 0)).any() else None
        out["accuracy_decided"] = float(right[inside].mean()) if inside.any() else None
        # AUC over the decided images (both sides present)
        if inside.any() and len(np.unique(y[inside])) == 2:
            out["auc_decided"] = float(roc_auc_score(y[inside], p[inside]))
    return out


def train_pair(
    loaded, chosen: list[str], cfg, folder: Path, robustness: bool = True, real: list[str] | None = None
) -> tuple[dict, dict, float, float]:
    """The detector and its content probe (as a bundle of its own) on the same splits; reused when present.
    robustness: the detector's robustness table (minutes of degraded windows; left out of the left-out folds)."""
    from detector_photo import PeakRSS

    from synthgap.detect.data import assemble
    from synthgap.detect.probes import probe_config
    from synthgap.detect.train import run_detector

    data = assemble(loaded, synthetic=chosen, real=real, val_fraction=cfg.val_fraction, seed=cfg.seed)
    wall, peak = None, None
    if (folder / "detector" / "detector.json").exists():
        meta = json.loads((folder / "detector" / "detector.json").read_text())
    else:
        with PeakRSS() as rss:
            t = time.perf_counter()
            meta = run_detector(data, cfg, folder / "detector", progress=sys.stderr.isatty(), robustness=robustness)
            wall, peak = time.perf_counter() - t, rss.peak
    pcfg = dataclasses.replace(probe_config(cfg), content_probe=False)
    if (folder / "content-probe" / "detector.json").exists():
        pmeta = json.loads((folder / "content-probe" / "detector.json").read_text())
    else:
        pmeta = run_detector(data, pcfg, folder / "content-probe", progress=False, audit_page=False, robustness=False)
    return meta, pmeta, wall, peak


def print_unseen_real(rows: list[dict]) -> None:
    """Left-out real sources (--folds loro): how their photos fare, per recipe and seed."""
    loro = [r for r in rows if r["fold"].startswith("real:")]
    if not loro:
        return
    print("\nLeft-out real sources: every photo of a source never trained on, against the AI test images")
    print(
        "| recipe | left-out source | seed | AUC | its photos called AI at the threshold | decided of them | right of those |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in loro:
        h = r["heldout"]

        def pct(x):
            return "-" if x is None else f"{100 * x:.0f}%"

        print(
            f"| {r['recipe']} | {r['fold'][5:]} | {r['seed']} | {h['auc']:.3f} | {pct(1 - h['recall_real'])} "
            f"| {pct(h.get('decided_real'))} | {pct(h.get('accuracy_decided_real'))} |"
        )


def print_seed_spread(rows: list[dict], families: list[str]) -> None:
    """Left-out AUC per recipe and family over the training seeds: mean ± std (min-max)."""
    import numpy as np

    print("\nLeft-out AUC over training seeds: mean ± std (min-max)")
    print("| recipe | seeds | " + " | ".join(f"without {f}" for f in families) + " | mean of the families |")
    print("|---|---:|" + "---:|" * (len(families) + 1))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        auc = {f: [r["heldout"]["auc"] for r in rows if r["recipe"] == recipe and r["fold"] == f] for f in families}
        if not all(auc.values()):
            continue
        cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in auc.values()]
        means = np.mean([auc[f] for f in families], axis=0)  # each seed's mean over the families
        n = min(len(v) for v in auc.values())
        print(f"| {recipe} | {n} | " + " | ".join(cells) + f" | {np.mean(means):.3f} ± {np.std(means):.3f} |")


def main() -> None:
    from synthgap.config import from_dict
    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.data import load_sources

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_root = os.environ.get("SYNTHGAP_DATA")
    ap.add_argument("--photos", default=str(Path(data_root) / "photos") if data_root else None, help="real/ and ai/")
    ap.add_argument("--recipes", default="chain-head,no-chain-head", help=f"comma-separated, of: {', '.join(RECIPES)}")
    ap.add_argument(
        "--folds",
        default="all,lofo",
        help="all (in-distribution), lofo (leave-one-family-out) and/or loro (leave-one-real-source-out)",
    )
    ap.add_argument("--out", default="runs/bench-real-photos")
    ap.add_argument(
        "--seeds",
        default="0",
        help="training seeds, e.g. 0,1,2: each fold trained once per seed (seed 0 in the fold's folder, seed S in "
        "its seedS/ sub-folder), then the left-out AUC's mean and spread per recipe; one training is noisy",
    )
    ap.add_argument(
        "--extra-synthetic",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a synthetic source added to every fold's training families (e.g. reconstructions of the real photos: one "
        "per real source folder, so their fixed hold-out splits match); a loro fold leaves out the one whose folder is "
        "named as its left-out real source",
    )
    ap.add_argument("--robustness", action="store_true", help="the robustness table of the in-distribution detector")
    args = ap.parse_args()
    if not args.photos or not Path(args.photos, "real").is_dir():
        sys.exit("no photo data: set SYNTHGAP_DATA (with photos/real and photos/ai below it) or give --photos")
    photos, out = Path(args.photos), Path(args.out)
    base = from_dict(DetectorConfig, {})

    def named(side: Path) -> list[str]:  # one source per sub-folder (a real source, an AI family)
        return [f"{p.name}={p}" for p in sorted(side.iterdir()) if p.is_dir()]

    loaded = load_sources(
        named(photos / "real"),
        named(photos / "ai") + args.extra_synthetic,
        classes=base.classes,
        size=base.image_size,
        dedupe=base.dedupe,
    )
    real = [s.name for s in loaded.sides[0]]
    extra = [e.split("=", 1)[0] for e in args.extra_synthetic]
    # an extra made of one real source's photos (`autoencoder reconstruct` mirrors the real folders: its folder
    # is named as that source) is left out with that source in the loro folds
    made_of = {e.split("=", 1)[0]: Path(e.split("=", 1)[1]).name for e in args.extra_synthetic}
    families = [s.name for s in loaded.sides[1] if s.name not in extra]
    print(f"real sources: {real}; AI families: {families}", flush=True)
    from synthgap.data.sets import concat

    real_test = concat([loaded.sets[n, "test"] for n in real], "real[test]", "real")
    rows, last = [], None
    seeds = [int(x) for x in args.seeds.split(",")]
    for recipe, seed in [(r, s) for r in args.recipes.split(",") for s in seeds]:
        cfg = from_dict(DetectorConfig, {**RECIPES[recipe], "seed": seed})
        folds = (
            (["all"] if "all" in args.folds else [])
            + (families if "lofo" in args.folds else [])
            + ([f"real:{r}" for r in real] if "loro" in args.folds else [])
        )
        for fold in folds:
            left_real = fold.removeprefix("real:") if fold.startswith("real:") else None
            used = [e for e in extra if not left_real or made_of[e] != left_real]
            chosen = (families if fold == "all" or left_real else [f for f in families if f != fold]) + used
            name = "all" if fold == "all" else f"without-{left_real or fold}"
            folder = out / "+".join([recipe, *used]) / name
            folder = folder / f"seed{seed}" if seed else folder
            meta, pmeta, wall, peak = train_pair(
                loaded,
                chosen,
                cfg,
                folder,
                robustness=args.robustness and fold == "all" and not seed,
                real=[r for r in real if r != left_real] if left_real else None,
            )
            probes = meta.get("probes", {})
            row = {
                "recipe": "+".join([recipe, *used]),
                "seed": seed,
                "fold": fold,
                "test_auc": meta["metrics"]["auc"],
                "test_accuracy": meta["metrics"]["accuracy"],
                "probe_test_auc": pmeta["metrics"]["auc"],
                "metadata_files": (probes.get("metadata") or {}).get("balanced_accuracy"),
                "metadata_seen": (probes.get("metadata") or {}).get("seen_balanced_accuracy"),
                "train_minutes": None if wall is None else wall / 60,
                "peak_mb": peak,
                "per_source": meta.get("per_source"),
            }
            if fold != "all":
                from synthgap.detect.model import load_bundle

                left = left_real or fold  # every image of the left-out source, against the other side's test split
                unseen = concat(
                    [loaded.sets[left, "train"], loaded.sets[left, "test"]], left, "real" if left_real else "synthetic"
                )
                other = (
                    concat([loaded.sets[f, "test"] for f in families], "ai[test]", "synthetic")
                    if left_real
                    else real_test
                )
                pair = (unseen, other) if left_real else (other, unseen)
                row["heldout"] = held_out_figures(load_bundle(folder / "detector"), *pair)
                row["probe_heldout"] = held_out_figures(load_bundle(folder / "content-probe"), *pair, True)
            rows.append(row)
            last = folder / "detector" if fold == "all" and not seed else last
            print(json.dumps(row, default=float), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=float))
    print(
        "\n| recipe | fold | test acc | test AUC | content probe AUC | metadata (files / seen) | held-out AUC | probe held-out AUC | decided | acc on decided | train min | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, ph = r.get("heldout") or {}, r.get("probe_heldout") or {}

        def f(x, pct=False):
            return "-" if x is None else (f"{100 * x:.1f}%" if pct else f"{x:.3f}")

        def minutes(x):
            return "-" if x is None else f"{x:.1f}"

        print(
            f"| {r['recipe']} | {r['fold']} | {f(r['test_accuracy'], True)} | {f(r['test_auc'])} | {f(r['probe_test_auc'])} "
            f"| {f(r['metadata_files'])} / {f(r['metadata_seen'])} | {f(h.get('auc'))} | {f(ph.get('auc'))} "
            f"| {f(h.get('decided'), True)} | {f(h.get('accuracy_decided'), True)} "
            f"| {minutes(r['train_minutes'])} | {'-' if r['peak_mb'] is None else round(r['peak_mb'])} |"
        )
    if len(seeds) > 1:
        print_seed_spread(rows, families)
    print_unseen_real(rows)
    print("\nPer source, in-distribution test split (detector):")
    for r in rows:
        if r["fold"] == "all":
            for s in r["per_source"] or []:
                print(
                    f"  {r['recipe']}: {s['source']} ({s['side']}, n={s['n']}): accuracy {100 * s['accuracy']:.1f}%"
                    + (f", AUC {s['auc']:.3f}" if "auc" in s else "")
                )
    if last:
        from detector_photo import latency

        latency(last, out, size=(4000, 3000), aim=1.0)  # a 12-megapixel photo


if __name__ == "__main__":
    main()
