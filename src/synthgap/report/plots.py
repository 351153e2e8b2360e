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
                ax.text(
                    j,
                    i,
                    format(m[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.suptitle(
        f"{title}  accuracy {100 * metrics['accuracy']:.1f}%" if title else f"accuracy {100 * metrics['accuracy']:.1f}%"
    )
    _save(fig, path)


def plot_accuracy_vs_fraction(rows: list[dict], path: str | Path) -> None:
    """Test accuracy (mean ± std over seeds) against the synthetic share of a fixed-size training set."""
    fixed = sorted(
        (r for r in rows if r["train_domain"] in ("real", "synthetic", "mixed")), key=lambda r: r["synthetic_fraction"]
    )
    extra = [r for r in rows if r not in fixed]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for domain, color in (("real", "tab:blue"), ("synthetic", "tab:orange")):
        x = [r["synthetic_fraction"] for r in fixed]
        y = [100 * r[f"accuracy_{domain}_mean"] for r in fixed]
        e = [100 * (r[f"accuracy_{domain}_std"] or 0) for r in fixed]  # one seed: no error bar
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=color, label=f"test on {domain}")
        for r in extra:
            ax.errorbar(
                [r["synthetic_fraction"]],
                [100 * r[f"accuracy_{domain}_mean"]],
                yerr=[100 * (r[f"accuracy_{domain}_std"] or 0)],
                marker="*",
                markersize=11,
                capsize=3,
                color=color,
                linestyle="none",
                label=f"{r['training_set']} → {domain}",
            )
    ax.set_xlabel("synthetic share of the training set")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy against synthetic share (fixed training-set size)")
    _save(fig, path)


def plot_scarcity_curve(rows: list[dict], path: str | Path, chance: float | None = None) -> None:
    """Accuracy on real test photos against real training images per class (log scale), from the rows of
    synthgap.experiments.scarcity.curve_rows: real only and real + synthetic (mean ± std over the seeds that
    learned), the synthetic set alone as a dashed line (its std as a band), chance (when given) dotted, the
    gap-closing arms as markers at their k, and every run that did not learn as a hollow grey circle."""
    from synthgap.experiments.scarcity import arm_label, synthetic_only_row

    ks = sorted({r["real_per_class"] for r in rows if r["real_per_class"] > 0})
    # Runs with no real image (k = 0) have no place on a log axis: the synthetic-only run is a horizontal line,
    # the others (an arm on the synthetic set alone, runs that did not learn) sit at a "0" tick left of the curve.
    x0 = ks[0] / 3 if ks else 1.0

    def x(r):
        return r["real_per_class"] or x0

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    curve = [r for r in rows if r["arm"] is None and r["real_per_class"] > 0]
    for with_synthetic, color, label in ((False, "tab:blue", "real only"), (True, "tab:orange", "real + synthetic")):
        learned = sorted((r for r in curve if r["with_synthetic"] == with_synthetic and r["n_seeds"]), key=x)
        if learned:
            ax.errorbar(
                [x(r) for r in learned],
                [100 * r["accuracy_mean"] for r in learned],
                yerr=[100 * (r["accuracy_std"] or 0) for r in learned],  # one seed: no error bar
                marker="o",
                capsize=3,
                color=color,
                label=label,
            )
    syn = synthetic_only_row(rows)
    if syn and syn["n_seeds"]:
        mean, std = 100 * syn["accuracy_mean"], 100 * (syn["accuracy_std"] or 0)
        ax.axhline(mean, ls="--", color="tab:green", label=f"synthetic only ({mean:.1f}%)")
        if std:
            ax.axhspan(mean - std, mean + std, color="tab:green", alpha=0.12, lw=0)
    if chance is not None:
        ax.axhline(100 * chance, ls=":", color="grey", label=f"chance ({100 * chance:.1f}%)")
    failed = [(x(r), 100 * a) for r in rows if r["arm"] is None for a in r["did_not_learn_accuracies"]]
    if failed:
        ax.plot(*zip(*failed), "o", mfc="none", color="grey", markersize=7, label="did not learn")
    arms = [r for r in rows if r["arm"] is not None]
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in arms)):
        marker = "sD^vPX*"[i % 7]
        mine = [r for r in arms if r["arm"] == arm and r["n_seeds"]]
        if mine:
            ax.errorbar(
                [x(r) for r in mine],
                [100 * r["accuracy_mean"] for r in mine],
                yerr=[100 * (r["accuracy_std"] or 0) for r in mine],
                marker=marker,
                markersize=8,
                capsize=3,
                linestyle="none",
                color=f"C{(i + 3) % 10}",
                label=arm_label(arm),
            )
        # An arm's runs that did not learn keep its marker, hollow and grey, so the legend still says whose they are.
        failed = [(x(r), 100 * a) for r in arms if r["arm"] == arm for a in r["did_not_learn_accuracies"]]
        if failed:
            ax.plot(
                *zip(*failed),
                marker,
                mfc="none",
                color="grey",
                markersize=8,
                linestyle="none",
                label=f"{arm_label(arm)}: did not learn",
            )
    ax.set_xscale("log")
    zero = any(r["real_per_class"] == 0 and (r["arm"] or r["did_not_learn"]) for r in rows)
    ax.set_xticks(([x0] if zero else []) + ks, (["0"] if zero else []) + [f"{k:g}" for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("real training images per class (log scale)")
    ax.set_ylabel("accuracy on real test photos (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: no point hidden under it
    ax.set_title("What the synthetic set is worth in real images")
    _save(fig, path)


def plot_roc_calibration(curve: dict, metrics: dict, path: str | Path, title: str = "") -> None:
    """ROC curve (with AUC and the operating point) beside the reliability diagram."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    a.plot(curve["roc"]["fpr"], curve["roc"]["tpr"], lw=2, label=f"AUC {metrics['auc']:.4f}")
    a.plot([0, 1], [0, 1], ls=":", color="grey")
    cm = np.asarray(metrics["confusion_matrix"])
    fpr = cm[0, 1] / max(1, cm[0].sum())
    tpr = cm[1, 1] / max(1, cm[1].sum())
    a.plot([fpr], [tpr], "o", color="C3", label=f"threshold {metrics['threshold']:.3f}")
    a.set(xlabel="false positive rate (real called synthetic)", ylabel="true positive rate", title="ROC")
    a.legend(loc="lower right")
    b.plot(
        curve["calibration"]["mean_predicted"],
        curve["calibration"]["fraction_synthetic"],
        "o-",
        lw=2,
        label=f"ECE {metrics['ece']:.3f}",
    )
    b.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    b.set(
        xlabel="predicted P(synthetic)",
        ylabel="observed fraction synthetic",
        title="reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    b.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_bars(rows: list[dict], label: str, metrics: list[str], path: str | Path, title: str = "") -> None:
    """Grouped bars: one group per row (e.g. backbone), one bar per metric, values printed on top."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(rows), 4))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for k, m in enumerate(metrics):
        vals = [100 * r[m] for r in rows]
        bars = ax.bar(x + (k - (len(metrics) - 1) / 2) * width, vals, width, label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [r[label] for r in rows])
    lo = min(100 * r[m] for r in rows for m in metrics)
    ax.set_ylim(max(0, lo - 10), 100.5)
    ax.set_ylabel("%")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_tune_history(points: list[tuple[int, float | None, str]], path: str | Path) -> None:
    """Each trial's validation score (pruned trials hollow) and the best so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [(n, v) for n, v, s in points if s == "COMPLETE" and v is not None]
    pruned = [(n, v) for n, v, s in points if s == "PRUNED" and v is not None]
    if done:
        ax.plot(*zip(*done), "o", label="complete")
        best, run = [], -np.inf
        for n, v in sorted(done):
            run = max(run, v)
            best.append((n, run))
        ax.step(*zip(*best), where="post", color="C3", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "o", mfc="none", color="grey", label="pruned (last report)")
    ax.set(xlabel="trial", ylabel="validation accuracy", title="hyperparameter search")
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_loss_curve(losses: list[float], path: str | Path, title: str = "training loss") -> None:
    """Per-step loss (faint) and its running mean over 1% of the run (at least 10 steps)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    y = np.asarray(losses, dtype=float)
    if len(y):
        x = np.arange(1, len(y) + 1)
        ax.plot(x, y, color="C0", alpha=0.25, lw=0.8, label="per step")
        k = min(len(y), max(10, len(y) // 100))
        ax.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), color="C0", label=f"mean of {k} steps")
        ax.set_yscale("log")
        ax.legend(loc="upper right")
    ax.set(xlabel="step", ylabel="loss", title=title)
    _save(fig, path)


def plot_matrix(
    values: np.ndarray,
    rows: list[str],
    cols: list[str],
    path: str | Path,
    title: str = "",
    marked: np.ndarray | None = None,
    fmt: str = "{:.0f}",
    scale: float = 100,
    vmin: float = 0.5,
) -> None:
    """A heatmap of values (rows x cols, in [vmin, 1]) with the number in each cell; `marked` cells (e.g. a
    source the detector was trained on) are outlined."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.15 * len(cols), 1.0 + 0.5 * len(rows)))
    im = ax.imshow(values, cmap="RdYlGn", vmin=vmin, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, fmt.format(scale * values[i, j]), ha="center", va="center", fontsize=8)
            if marked is not None and marked[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, color="black"))
    ax.set_xlabel("tested on (real test images + this source's)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    if title:
        ax.set_title(title)
    _save(fig, path)


def save_image_grid(images, path: str | Path, nrow: int, scale: int = 2) -> None:
    """Images (N x 3 x H x W, floats in [0, 1]) as one PNG, `nrow` to a row with white 1-px gaps, every
    pixel `scale` x `scale` (32-px images are small to look at)."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.cpu(), nrow=nrow, padding=1, pad_value=1.0)
    image = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def plot_samples(sets: dict, path: str | Path, per_class: int = 8) -> None:
    """Side by side, one panel per set (e.g. real and synthetic training images): the first `per_class`
    images of each class, one row per class, so the two can be compared by eye."""
    import torch
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(
        1, len(sets), figsize=(3.6 * len(sets), 0.5 * max(len(s.classes) for s in sets.values()) + 0.8)
    )
    for k, (ax, (title, s)) in enumerate(zip(np.atleast_1d(axes), sets.items())):
        tiles = []
        for c in range(len(s.classes)):
            mine = s.images[torch.nonzero(s.labels == c).flatten()[:per_class]].float() / 255
            tiles += list(mine) + [torch.ones_like(s.images[0], dtype=torch.float)] * (per_class - len(mine))
        grid = make_grid(torch.stack(tiles), nrow=per_class, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        step = grid.shape[1] / len(s.classes)
        ax.set_yticks([step * (c + 0.5) for c in range(len(s.classes))], s.classes if k == 0 else [])
        ax.set_xticks([])
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_risk_coverage(curves: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Accuracy on the images a detector decides against the share it decides (most confident first), one
    line per named set (detect.evaluate.selective), with the content check's operating point where known."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for k, (name, sel) in enumerate(curves.items()):
        if not sel.get("accuracy"):
            continue
        ax.plot(sel["coverage"], sel["accuracy"], "-", lw=2, color=f"C{k}", label=f"{name} (n={sel['n']})")
        point = sel.get("decided")
        if point and point.get("accuracy") is not None:
            ax.plot([point["coverage"]], [point["accuracy"]], "o", color=f"C{k}", ms=8)
            ax.annotate(
                f"content check: {100 * point['accuracy']:.0f}% on {100 * point['coverage']:.0f}%",
                (point["coverage"], point["accuracy"]),
                textcoords="offset points",
                xytext=(-10, -16),
                ha="right",
                fontsize=8,
                color=f"C{k}",
            )
    ax.axhline(0.5, ls=":", color="grey", label="chance")
    ax.set(
        xlabel="coverage (share of images decided, most confident first)",
        ylabel="accuracy on the decided images",
        xlim=(0, 1.02),
        ylim=(0.4, 1.02),
        title=title or "risk against coverage",
    )
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)
