"""An audit's summary as a person reads it: the kinds of twin pair, worst first, with what each one is; a
few lines for the terminal and the logs; the counts in HTML, also embedded in the experiments' reports."""

from __future__ import annotations

import html

# Kinds, worst first: a test image with a twin a model was trained on inflates its score.
KINDS = (
    "train_test",
    "memorisation",
    "real_synthetic",
    "within_train",
    "within_test",
    "within_set",
    "across_sets",
    "other",
)
KIND_ABOUT = {
    "train_test": "a training and a test image of the same set",
    "memorisation": "a synthetic image and a real training image (the generator copied its data)",
    "real_synthetic": "a synthetic image and a real test image",
    "within_train": "two images of one training split",
    "within_test": "two images of one test split",
    "within_set": "two images of one set without splits",
    "across_sets": "two sets of the same domain",
    "other": "any other pair",
}


def kinds_table(summary: dict) -> list[tuple[str, int, int]]:
    """(kind, exact, near) for every kind that occurs, worst first."""
    counts = summary["counts"]
    return [
        (k, counts["exact"].get(k, 0), counts["near"].get(k, 0))
        for k in KINDS
        if counts["exact"].get(k, 0) or counts["near"].get(k, 0)
    ]


def summary_lines(summary: dict) -> list[str]:
    """The audit in a few lines, for the terminal and the logs."""
    n_parts = len(summary["parts"])
    took = "from the cache" if summary["from_cache"] else f"{summary['seconds']:.0f} s"
    lines = [
        f"audited {summary['images']:,} images in {n_parts} part{'s' * (n_parts != 1)} ({took}): "
        f"{summary['pairs']['exact']:,} exact and {summary['pairs']['near']:,} near twin pairs, "
        f"{summary['label_conflicts']:,} with two labels"
    ]
    for kind, exact, near in kinds_table(summary):
        lines.append(f"  {kind:<15} {exact:>7,} exact {near:>7,} near   ({KIND_ABOUT[kind]})")
    sizes = {p["name"]: p["n"] for p in summary["parts"]}
    for name, n in summary["test_images_with_training_twin"].items():
        if n:
            lines.append(
                f"  {n:,} of {sizes[name]:,} test images of {name} ({100 * n / max(sizes[name], 1):.1f}%) "
                "have a twin in a training split"
            )
    for name, r in summary.get("removed", {}).items():
        lines.append(f"  removed {r['removed']:,} from {name} ({r['why']}); {r['kept']:,} kept")
    return lines


def counts_html(summary: dict) -> str:
    """The counts table and the leakage lines: also embedded in the experiments' reports."""
    rows = "".join(
        f'<tr><td>{k}</td><td>{e:,}</td><td>{n:,}</td><td style="text-align:left">{html.escape(KIND_ABOUT[k])}</td></tr>'
        for k, e, n in kinds_table(summary)
    )
    table = (
        (
            f"<table><thead><tr><th>kind</th><th>exact</th><th>near</th><th>what it is</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        if rows
        else "<p class=ok>No twins found.</p>"
    )
    sizes = {p["name"]: p["n"] for p in summary["parts"]}
    leaks = "".join(
        f"<li>{n:,} of {sizes[k]:,} test images of <b>{html.escape(k)}</b> ({100 * n / max(sizes[k], 1):.1f}%) "
        "have a twin in a training split</li>"
        for k, n in summary["test_images_with_training_twin"].items()
        if n
    )
    removed = "".join(
        f"<li>removed {r['removed']:,} from <b>{html.escape(k)}</b> ({html.escape(r['why'])}); {r['kept']:,} kept</li>"
        for k, r in summary.get("removed", {}).items()
    )
    out = table
    if leaks:
        out += f'<div class="warn"><ul>{leaks}</ul></div>'
    if summary["label_conflicts"]:
        out += f'<p class="warn">{summary["label_conflicts"]:,} twin pairs carry two different labels.</p>'
    if removed:
        out += f"<p>With <code>dedupe: drop</code>:</p><ul>{removed}</ul>"
    return out
