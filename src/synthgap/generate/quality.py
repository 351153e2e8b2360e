"""Quality figures of a generated set: a per-class sample grid, FID-Lite0 against a real test set,
blanked images, and the data audit's twins inside the set, against the real test split and against the
real training split (a generator that copies its training data shows up there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from synthgap.generate.generator import read_manifest
from synthgap.io import write_json


def class_grid_of_set(out: Path, rows: list[dict], images: list[Image.Image], per_class: int = 10) -> Path | None:
    """DIR/grid.png: the first `per_class` images of each class, one row per class."""
    import torch

    from synthgap.report.plots import save_image_grid

    if not rows:
        return None
    size = images[0].size

    def tile(im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(im.resize(size))).permute(2, 0, 1).float() / 255

    tiles = []
    for c in dict.fromkeys(r["label"] for r in rows):
        mine = [tile(im) for r, im in zip(rows, images) if r["label"] == c][:per_class]
        tiles += mine + [torch.ones(3, size[1], size[0])] * (per_class - len(mine))
    save_image_grid(torch.stack(tiles), out / "grid.png", nrow=per_class)
    return out / "grid.png"


def quality_report(out: str | Path, real=None, real_train=None) -> dict:
    """Write DIR/quality.json (and DIR/grid.png, DIR/audit/): FID-Lite0 against `real`, blanked-and-regenerated
    images, and the data audit's twins within the set, against `real` and against `real_train`.

    real: an ImageSet (e.g. the real test split), compared at the same size; real_train: the real training
    split, where a twin means the generator reproduced an image it was trained on (memorisation).
    """
    import torch

    from synthgap.audit import AuditPart, audit
    from synthgap.data.images import decode_files
    from synthgap.data.sets import ImageSet

    out = Path(out)
    rows = read_manifest(out)[0]
    images = [Image.open(out / r["path"]).convert("RGB") for r in rows]
    class_grid_of_set(out, rows, images)
    report = {
        "images": len(rows),
        "blanked_and_regenerated": [
            {"id": r["id"], "blanked_seeds": r["blanked_seeds"], "seed": r["seed"]}
            for r in rows
            if r.get("blanked_seeds")
        ],
    }
    if not rows:
        write_json(out / "quality.json", report)
        return report
    size = real.images.shape[-1] if real is not None else images[0].size[0]
    decoded = decode_files([str(out / r["path"]) for r in rows], size, progress=False)
    classes = list(dict.fromkeys(r["label"] for r in rows))
    ids = [rows[i]["id"] for i in decoded.kept]
    generated = ImageSet(
        decoded.images,
        torch.tensor([classes.index(rows[i]["label"]) for i in decoded.kept]),
        classes,
        str(out),
        "synthetic",
        decoded.skipped,
        [str(out / rows[i]["path"]) for i in decoded.kept],
        decoded.pixel_hashes,
    )
    parts = [AuditPart(str(out), "all", "synthetic", generated)]
    for split, s in (("test", real), ("train", real_train)):
        if s is not None:
            parts.append(AuditPart(s.name.split("[")[0], split, "real", s, reference=True))
    result = audit(parts, progress=False)
    result.write(out / "audit")

    twins: dict[str, list[dict]] = {"all": [], "test": [], "train": []}
    for k in range(len(result)):  # the generated side first: part 0
        i, q, j = (
            (int(result.a_index[k]), int(result.b_part[k]), int(result.b_index[k]))
            if result.a_part[k] == 0
            else (int(result.b_index[k]), int(result.a_part[k]), int(result.a_index[k]))
        )
        record = {
            "id": ids[i],
            "match": "exact" if result.exact[k] else "near",
            "hamming": int(result.hamming[k]),
            "correlation": round(float(result.correlation[k]), 4),
        }
        other = {"other": ids[j]} if q == 0 else {"real_index": j, "real_path": result.path(q, j)}
        twins[parts[q].split].append({**record, **other})
    report["audit"] = {k: v for k, v in result.summary().items() if k in ("pairs", "counts", "label_conflicts")}
    report["twins_within"] = twins["all"]
    if real is not None:
        from synthgap.generate.fid import FEATURES, fid_lite0

        report["real_set"] = real.name
        report["fid_lite0"] = (
            round(fid_lite0(generated.images, real.images), 4) if min(len(generated), len(real)) >= 2 else None
        )
        report["fid_features"] = FEATURES
        report["twins_vs_real_test"] = twins["test"]
    if real_train is not None:
        report["real_train_set"] = real_train.name
        report["twins_vs_real_train"] = twins["train"]  # memorisation
    write_json(out / "quality.json", report)
    return report
