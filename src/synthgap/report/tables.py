"""Summary records -> mean ± std per (training set, test domain)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def aggregate(records: list[dict]) -> list[dict]:
    """One row per training set, in first-seen order, with mean/std over seeds for each test domain."""
    groups: dict[str, dict] = {}
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        row = groups.setdefault(r["training_set"], {
            "training_set": r["training_set"], "train_domain": r["train_domain"],
            "synthetic_fraction": r["synthetic_fraction"], "seeds": set(), "n_train": r.get("n_train"),
        })
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


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| trained on | images | synthetic share | seeds | test real: acc % | test synthetic: acc % | test real: macro-F1 % | test synthetic: macro-F1 % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['training_set']} | {r.get('n_train') or '–'} | {r['synthetic_fraction']:.2f} | {len(r['seeds'])} | {_pm(r, 'accuracy_real')} | "
            f"{_pm(r, 'accuracy_synthetic')} | {_pm(r, 'macro_f1_real')} | {_pm(r, 'macro_f1_synthetic')} |"
        )
    return "\n".join(lines) + "\n"
