"""Plots a person would rather look at than read: confusion heatmaps, accuracy vs synthetic share."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthgap.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(metrics: dict, path: str | Path, title: str = "") -> None:
    """Counts and row-normalised confusion matrices side by side, labelled with class names."""
    classes = metrics["classes"]
    counts = np.asarray(metrics["confusion_matrix"])
    norm = np.asarray(metrics["confusion_matrix_normalized"])
    size = 2.2 + 0.55 * len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, m, label, fmt in ((axes[0], counts, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle(f"{title}  accuracy {100 * metrics['accuracy']:.1f}%" if title else f"accuracy {100 * metrics['accuracy']:.1f}%")
    _save(fig, path)


def plot_accuracy_vs_fraction(rows: list[dict], path: str | Path) -> None:
    """Test accuracy (mean ± std over seeds) against the synthetic share of a fixed-size training set."""
    fixed = sorted((r for r in rows if r["train_domain"] in ("real", "synthetic", "mixed")), key=lambda r: r["synthetic_fraction"])
    extra = [r for r in rows if r not in fixed]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for domain, color in (("real", "tab:blue"), ("synthetic", "tab:orange")):
        x = [r["synthetic_fraction"] for r in fixed]
        y = [100 * r[f"accuracy_{domain}_mean"] for r in fixed]
        e = [100 * r[f"accuracy_{domain}_std"] for r in fixed]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=color, label=f"test on {domain}")
        for r in extra:
            ax.errorbar([r["synthetic_fraction"]], [100 * r[f"accuracy_{domain}_mean"]],
                        yerr=[100 * r[f"accuracy_{domain}_std"]], marker="*", markersize=11, capsize=3, color=color,
                        linestyle="none", label=f"{r['training_set']} → {domain}")
    ax.set_xlabel("synthetic share of the training set")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy against synthetic share (fixed training-set size)")
    _save(fig, path)
