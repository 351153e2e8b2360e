"""What a detector was trained on, and whether an image lies inside it; answers it cannot give.

A detector only knows the images it saw: their pixel sizes, file formats and JPEG qualities, and the
generators of its synthetic side. `training_domain` records them in the bundle; `inside` compares one
image's file metadata with them. An image outside is answered "outside the training domain", its
probability shown as unreliable, never "real" or "synthetic". Inside, `verdicts` also asks whether the
answer survives mild changes that do not change what an image is (JPEG q90, a 0.75 downscale, a
one-pixel shift): if the verdict flips, the answer is "unsure", with the spread of the probabilities.

File metadata cannot see content: a held-out photo of a familiar size and format may show something no
training image showed (a face to a detector trained on landscapes). So the bundle also keeps the trained
backbone's features of (a sample of) its training images, and an image whose features lie far from all of
them (the mean cosine distance to its KNN_K nearest, above the KNN_QUANTILE of validation images' distances)
is outside the training domain too.
"""

from __future__ import annotations

import random
from collections import Counter

import torch

from synthgap.data.sides import CLASSES
from synthgap.detect.config import from_scratch

SIZE_TOLERANCE = 1.25  # a side may be this much smaller or larger than the training range and still be inside
QUALITY_TOLERANCE = 10  # JPEG quality points beyond the training range (files and JPEG augmentation)
SAMPLE = 2000  # files per side whose headers are read for the record
PERTURBATIONS = ("jpeg q90", "downscale x0.75", "shift 1 px")

VERDICT_OUTSIDE = "outside the training domain"
KNN_K = 5  # nearest training images whose mean distance is an image's content score
KNN_QUANTILE = 0.95  # of the validation images' scores: the threshold (5% of in-domain images abstain)
KNN_MIN = 40  # validation images below which no threshold is set
KNN_BANK = 1500  # training images kept in the bundle (float16 features: 3.8 MB with Lite0's 1,280)


def content_scores(features: torch.Tensor, bank: torch.Tensor, k: int = KNN_K, exclude_self: bool = False):
    """Per row of `features` (N x F), the mean cosine distance to its k nearest rows of `bank` (M x F), both
    centred on the bank's mean (what every training image shares says nothing about which one is near)."""
    centre = bank.float().mean(0)
    f = torch.nn.functional.normalize(features.float() - centre, dim=1)
    b = torch.nn.functional.normalize(bank.float() - centre, dim=1)
    d = 1 - f @ b.T
    k = min(k + exclude_self, len(b))
    near = d.topk(k, dim=1, largest=False).values
    return (near[:, 1:] if exclude_self else near).mean(1)


def content_check(domain: dict | None) -> dict | None:
    """A domain's content record when it has a threshold (None: no content check for this bundle)."""
    known = (domain or {}).get("content")
    return known if isinstance(known, dict) and "threshold" in known else None


def content_record(bank: torch.Tensor, val_features: torch.Tensor) -> dict:
    """The domain's `content` record: the threshold on content_scores, the KNN_QUANTILE of the validation
    images' scores (images the model never trained on, as it will meet them); with fewer than KNN_MIN
    validation images, no content check (a quantile of a handful of scores would refuse at random)."""
    if len(val_features) < KNN_MIN or len(bank) <= KNN_K:
        return {"skipped": f"{len(val_features)} validation images: too few to set its threshold ({KNN_MIN} needed)"}
    scores = content_scores(val_features, bank)
    return {
        "k": KNN_K,
        "quantile": KNN_QUANTILE,
        "threshold": round(float(torch.quantile(scores, KNN_QUANTILE)), 6),
        "bank": len(bank),
        "val_median": round(float(scores.median()), 6),
        "metric": f"mean cosine distance of the trained backbone's features (centred on the training images' mean) "
        f"to the {KNN_K} nearest training images",
    }


def training_domain(train, cfg, sources: dict | None = None, seed: int = 0) -> dict:
    """The bundle's `domain` record: pixel sizes, formats and JPEG qualities of (a sample of) the training
    files per side, the JPEG qualities its augmentation produced, and the sources."""
    from synthgap.detect.audit import file_metadata

    stage = cfg.scratch if from_scratch(cfg) else cfg.finetune if cfg.finetune_blocks > 0 else cfg.head
    rng = random.Random(seed)
    sides = {}
    for label, side in enumerate(CLASSES):
        files = sorted({f for f, y in zip(train.files, train.labels.tolist()) if y == label}) if train.files else []
        if files:
            metas = [file_metadata(f) for f in (files if len(files) <= SAMPLE else rng.sample(files, SAMPLE))]
        else:  # not from files (CIFAR-10 batches): the arrays' own size, no format
            h, w = train.images.shape[-2:]
            metas = [{"format": "", "width": w, "height": h, "jpeg_quality": 0}]
        qualities = [m["jpeg_quality"] for m in metas if m["jpeg_quality"]]
        sides[side] = {
            "files_read": len(metas) if files else 0,
            "width": [min(m["width"] for m in metas), max(m["width"] for m in metas)],
            "height": [min(m["height"] for m in metas), max(m["height"] for m in metas)],
            "formats": dict(Counter(m["format"] for m in metas if m["format"])),
            "jpeg_quality": [min(qualities), max(qualities)] if qualities else None,
        }
    aug = stage.augment
    return {
        "sides": sides,
        "width": [min(s["width"][0] for s in sides.values()), max(s["width"][1] for s in sides.values())],
        "height": [min(s["height"][0] for s in sides.values()), max(s["height"][1] for s in sides.values())],
        "formats": sorted({f for s in sides.values() for f in s["formats"]}),
        "jpeg_quality": _span(
            [s["jpeg_quality"] for s in sides.values()] + ([aug.jpeg_quality] if aug.jpeg > 0 else [])
        ),
        "sources": {side: sorted(v) for side, v in (sources or {}).items()},
        "rules": {
            "size_tolerance": SIZE_TOLERANCE,
            "quality_tolerance": QUALITY_TOLERANCE,
            "perturbations": list(PERTURBATIONS),
        },
    }


def _span(ranges: list) -> list[int] | None:
    ranges = [r for r in ranges if r]
    return [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else None


def inside(domain: dict | None, meta: dict | None) -> tuple[bool, list[str]]:
    """(inside, why not) for an image whose file metadata is `meta` (detect.audit.file_metadata); an
    older bundle without a domain record, or an image without metadata, is taken as inside."""
    if not domain or not meta:
        return True, []
    why = []
    if any(
        not lo / SIZE_TOLERANCE <= meta[side] <= hi * SIZE_TOLERANCE
        for side, (lo, hi) in (("width", domain["width"]), ("height", domain["height"]))
    ):

        def span(lo, hi):
            return f"{lo}" if lo == hi else f"{lo}-{hi}"

        why.append(
            f"size {meta['width']}x{meta['height']} px, trained on {span(*domain['width'])}x{span(*domain['height'])} px"
        )
    if domain["formats"] and meta.get("format") and meta["format"] not in domain["formats"]:
        why.append(f"format {meta['format']}, trained on {', '.join(domain['formats'])}")
    q, span = meta.get("jpeg_quality"), domain.get("jpeg_quality")
    if q and span and not span[0] - QUALITY_TOLERANCE <= q <= span[1] + QUALITY_TOLERANCE:
        why.append(f"JPEG quality {q}, trained on {span[0]}-{span[1]}")
    return not why, why


def perturbed(x: torch.Tensor) -> torch.Tensor:
    """The PERTURBATIONS of uint8 images N x 3 x S x S, stacked: 3N images, perturbation-major."""
    from synthgap.train.robust import downscale, jpeg

    shifted = torch.nn.functional.pad(x.float(), (1, 0, 1, 0), mode="replicate")[..., : x.shape[-2], : x.shape[-1]]
    return torch.cat([jpeg(x, 90), downscale(x, 0.75), shifted.round().to(torch.uint8)])


def verdicts(
    p: torch.Tensor,
    p_perturbed: torch.Tensor,
    threshold: float,
    metas: list[dict | None],
    domain: dict | None,
    band: float = 0.0,
    content: torch.Tensor | None = None,
    *,
    real_bound: dict | None = None,
) -> list[dict]:
    """One record per image: p_synthetic, the range under PERTURBATIONS, the verdict and the rule that gave it.

    content: per image, its content score (content_scores), checked against the domain's `content` threshold.
    Rules, first that applies: outside the training domain (file metadata or content); unstable (the verdict
    flips under a perturbation): "unsure"; within `band` of the threshold: "unsure"; below the threshold but not
    below `real_bound` ({"p", "quantile"}: the bundle's real_quantile of its validation real images' P): "unsure";
    else synthetic or real."""
    n = len(p)
    pp = p_perturbed.view(len(PERTURBATIONS), n)
    known = content_check(domain)
    out = []
    for i in range(n):
        ok, why = inside(domain, metas[i])
        if known and content is not None and float(content[i]) > known["threshold"]:
            ok = False
            why.append(
                f"content unlike its training images (feature distance {float(content[i]):.3f} > "
                f"{known['threshold']:.3f}, which {known['quantile']:.0%} of validation images stay under)"
            )
        allp = [float(p[i])] + pp[:, i].tolist()
        side = [q >= threshold for q in allp]
        flips = [name for name, s in zip(PERTURBATIONS, side[1:]) if s != side[0]]
        rec = {
            "p_synthetic": round(float(p[i]), 6),
            "p_range": [round(min(allp), 6), round(max(allp), 6)],
            "threshold": threshold,
            "domain": {"inside": ok, "why": why},
        }
        if known and content is not None:
            rec["content_score"] = round(float(content[i]), 6)
        if real_bound:
            rec["real_bound"] = real_bound["p"]  # "real" only under it
        if not ok:
            rec.update(
                verdict=VERDICT_OUTSIDE,
                rule="outside_domain",
                reliable=False,
                why=f"outside the training domain: {'; '.join(why)}",
            )
        elif flips:
            rec.update(
                verdict="unsure",
                rule="unstable",
                reliable=False,
                why=f"the verdict flips under {', '.join(flips)} (P from {min(allp):.2f} to {max(allp):.2f})",
            )
        elif abs(float(p[i]) - threshold) < band:
            rec.update(
                verdict="unsure",
                rule="near_threshold",
                reliable=False,
                why=f"within {band:g} of the threshold {threshold:.2f}",
            )
        elif real_bound and real_bound["p"] <= float(p[i]) < threshold:
            rec.update(
                verdict="unsure",
                rule="not_confidently_real",
                reliable=False,
                why=f"P {float(p[i]):.2f} is under the threshold {threshold:.2f} but not under {real_bound['p']:.2f}, "
                f"which {real_bound['quantile']:.0%} of its validation real images stay under: not confidently real "
                "(images of a generator it was not trained on often score here)",
            )
        else:
            rec.update(
                verdict="synthetic" if side[0] else "real",
                rule="threshold",
                reliable=True,
                why=f"P {'>=' if side[0] else '<'} threshold {threshold:.2f}, stable under {', '.join(PERTURBATIONS)}",
            )
        out.append(rec)
    return out
