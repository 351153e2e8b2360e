"""What a detector is judged on: threshold chosen on validation, metrics on test (scikit-learn's
definitions), ROC, precision-recall, calibration, and accuracy under common degradations."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from synthgap.data.sides import CLASSES
from synthgap.train.evaluate import classification_metrics
from synthgap.train.robust import PERTURBATIONS


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The P(synthetic) cut-off with the best balanced accuracy (Youden's J) on the given split;
    call it on validation, never on test."""
    y, p = np.asarray(y), np.asarray(p)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def binary_metrics(y, p, threshold: float) -> dict:
    """Accuracy, per-class precision/recall/F1, confusion matrix at `threshold`; AUC, AP, Brier
    score and expected calibration error from the probabilities."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    out = classification_metrics(y, (p >= threshold).astype(int), list(CLASSES))
    both = len(np.unique(y)) == 2
    out.update(
        {
            "threshold": float(threshold),
            "auc": float(roc_auc_score(y, p)) if both else float("nan"),
            "average_precision": float(average_precision_score(y, p)) if both else float("nan"),
            "brier": float(brier_score_loss(y, p)),
            "ece": expected_calibration_error(y, p),
            "f1_synthetic": out["per_class"]["synthetic"]["f1"],
        }
    )
    return out


def expected_calibration_error(y, p, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width bins, weighted by bin size."""
    y, p = np.asarray(y), np.asarray(p)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def robustness_table(
    predict, images: torch.Tensor, y: np.ndarray, threshold: float, clean_p: np.ndarray, chunk: int = 1024
) -> list[dict]:
    """Accuracy and AUC on the clean test set (its probabilities `clean_p`) and under each fixed
    degradation, predicted by `predict` (same threshold), `chunk` images at a time (the degradations
    work in float: a whole photo-scale test set at once would not fit in memory)."""
    rows = []
    for name, perturb in [("clean", None), *PERTURBATIONS.items()]:
        p = (
            clean_p
            if perturb is None
            else np.concatenate([predict(perturb(images[i : i + chunk])).numpy() for i in range(0, len(images), chunk)])
        )
        m = binary_metrics(y, p, threshold)
        rows.append(
            {
                "test set": name,
                "accuracy": m["accuracy"],
                "auc": m["auc"],
                "recall_real": m["per_class"]["real"]["recall"],
                "recall_synthetic": m["per_class"]["synthetic"]["recall"],
            }
        )
    return rows


ROBUSTNESS_SAMPLE = 200  # crop mode: test images whose windows are degraded


def set_robustness(
    bundle, s, y: np.ndarray, p: np.ndarray, *, seed: int = 0, workers: int = 2
) -> tuple[list[dict], str]:
    """(robustness_table, what it was measured on) of a DetectorBundle on an ImageSet with labels y and clean
    P(synthetic) p: its thumbnails degraded; with crops, every window of a seeded sample of its images,
    their P averaged per image. The bundle's format normalisation applies after the degradation, as in use."""
    chain = bundle.chain
    if not chain.crop:
        chunk = max(16, 1024 * 64 * 64 // (s.images.shape[-1] * s.images.shape[-2]))  # memory follows pixels
        return robustness_table(bundle.predict, s.images, y, bundle.threshold, p, chunk), f"all {len(s)} images"
    from synthgap.detect.crops import eval_batches

    pick = np.sort(np.random.default_rng(seed).choice(len(s), min(ROBUSTNESS_SAMPLE, len(s)), replace=False))
    views = torch.cat([x for _, x in eval_batches([s.files[i] for i in pick], chain, workers=workers)])

    def per_image(x):
        return bundle.predict(x).view(-1, chain.views).mean(1)

    table = robustness_table(per_image, views.flatten(0, 1), y[pick], bundle.threshold, p[pick], chunk=16 * chain.views)
    return table, f"{len(pick)} images (a seeded sample), every window degraded"


def curves(y, p) -> dict:
    """Points of the ROC and reliability curves, for plots and for the record."""
    y, p = np.asarray(y), np.asarray(p)
    fpr, tpr, _ = roc_curve(y, p)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    return {
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "calibration": {"mean_predicted": mean_pred.tolist(), "fraction_synthetic": frac_pos.tolist()},
    }


def per_source_rows(y, p, sources: list[str], threshold: float) -> list[dict]:
    """Per source of a labelled set: its side, count and accuracy at `threshold`; for a synthetic source also
    the AUC of its images against every real image of the set."""
    y, p = np.asarray(y), np.asarray(p)
    if not len(sources):
        return []
    sources = np.asarray(sources)
    rows = []
    for name in dict.fromkeys(sources.tolist()):
        m = sources == name
        row = {
            "source": name,
            "side": CLASSES[int(y[m][0])],
            "n": int(m.sum()),
            "accuracy": float(((p[m] >= threshold) == y[m]).mean()),
        }
        if row["side"] == "synthetic" and (y == 0).any():
            sel = m | (y == 0)
            row["auc"] = float(roc_auc_score(y[sel], p[sel]))
        rows.append(row)
    return rows


def selective(y, p, threshold: float, inside=None, points: int = 20) -> dict:
    """Accuracy against coverage: the images decided most confidently first (distance of P from the
    threshold), accuracy on the first k% of them for k up to 100; and, given `inside` (per image, whether the
    content check keeps it in the training domain), the operating point of deciding only those."""
    y, p = np.asarray(y), np.asarray(p)
    right = (p >= threshold) == y
    order = np.argsort(-np.abs(p - threshold), kind="stable")
    coverage = np.linspace(1 / points, 1, points)
    counts = np.maximum(1, np.round(coverage * len(y)).astype(int))
    cumulative = np.cumsum(right[order])
    out = {
        "coverage": coverage.round(4).tolist(),
        "accuracy": (cumulative[counts - 1] / counts).round(4).tolist() if len(y) else [],
        "n": int(len(y)),
    }
    if inside is not None and len(y):
        inside = np.asarray(inside, dtype=bool)
        out["decided"] = {
            "coverage": float(inside.mean()),
            "accuracy": float(right[inside].mean()) if inside.any() else None,
            "rule": "content check (kNN distance to training images)",
        }
    return out
