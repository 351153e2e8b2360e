"""Summary records -> mean ± std per (training set, test domain)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def aggregate(records: list[dict]) -> list[dict]:
    """One row per training set, in first-seen order, with mean/std over seeds for each test domain."""
    groups: dict[str, dict] = {}
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        row = groups.setdefault(
            r["training_set"],
            {
                "training_set": r["training_set"],
                "train_domain": r["train_domain"],
                "synthetic_fraction": r["synthetic_fraction"],
                "seeds": set(),
                "n_train": r.get("n_train"),
            },
        )
        row["seeds"].add(r["seed"])
        for metric in ("accuracy", "macro_f1"):
            values[(r["training_set"], r["test_domain"], metric)].append(r[metric])
    rows = []
    for name, row in groups.items():
        row = dict(row, seeds=sorted(row["seeds"]))
        for (ts, domain, metric), v in values.items():
            if ts == name:
                row[f"{metric}_{domain}_mean"] = float(np.mean(v))
                row[f"{metric}_{domain}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else None  # one seed: no spread
        rows.append(row)
    return rows


def _pm(row: dict, key: str) -> str:
    if f"{key}_mean" not in row:
        return "–"
    std = row[f"{key}_std"]
    return f"{100 * row[f'{key}_mean']:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def md_table(rows: list[dict], columns: list[str], percent: tuple[str, ...] = ()) -> str:
    """The one Markdown table writer: `rows` under `columns`, the first column left-aligned, the rest right;
    floats in `percent` columns as % with 2 decimals, other floats to 4 significant digits."""

    def cell(r, c):
        v = r.get(c)
        if isinstance(v, float):
            return f"{100 * v:.2f}" if c in percent else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


STUDY_COLUMNS = [
    "trained on",
    "images",
    "synthetic share",
    "seeds",
    "test real: acc %",
    "test synthetic: acc %",
    "test real: macro-F1 %",
    "test synthetic: macro-F1 %",
]


def markdown_table(rows: list[dict]) -> str:
    """The transfer study's table: one row per training set, mean ± std over its seeds."""
    cells = [
        dict(
            zip(
                STUDY_COLUMNS,
                (
                    r["training_set"],
                    r.get("n_train") or "–",
                    f"{r['synthetic_fraction']:.2f}",
                    len(r["seeds"]),
                    _pm(r, "accuracy_real"),
                    _pm(r, "accuracy_synthetic"),
                    _pm(r, "macro_f1_real"),
                    _pm(r, "macro_f1_synthetic"),
                ),
            )
        )
        for r in rows
    ]
    return md_table(cells, STUDY_COLUMNS)
