"""Summary records -> mean ± std per (training set, test domain), and the tables of the scarcity curve."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from synthgap.experiments.scarcity import arm_label, arm_needs, format_estimate, format_interval


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
        if r.get("learned") is False and r["test_domain"] == "real":  # one flag per run, not per test domain
            row["did_not_learn"] = row.get("did_not_learn", 0) + 1
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


def did_not_learn(row: dict) -> str:
    """The flag of an aggregated row whose runs' validation accuracy never left chance: their figures are
    a model that predicts (almost) one class, not a result."""
    n = row.get("did_not_learn", 0)
    if not n:
        return ""
    return " (did not learn)" if n == len(row["seeds"]) else f" ({n} of {len(row['seeds'])} seeds did not learn)"


def markdown_table(rows: list[dict]) -> str:
    """The transfer study's table: one row per training set, mean ± std over its seeds."""
    cells = [
        dict(
            zip(
                STUDY_COLUMNS,
                (
                    r["training_set"] + did_not_learn(r),
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


SCARCITY_COLUMNS = [
    "real per class",
    "real only: acc %",
    "real + synthetic: acc %",
    "real + synthetic ≈ real per class",
    "steps: real only / + synthetic",
    "seeds",
]
ARM_COLUMNS = [
    "arm",
    "real per class",
    "needs",
    "acc %",
    "real only at this k: acc %",
    "≈ real per class",
    "steps",
    "seeds",
]


def _accuracy_cell(row: dict | None) -> str:
    """mean ± std over the seeds that learned; "did not learn" instead of a figure when none did."""
    if row is None:
        return "–"
    if not row["n_seeds"]:
        return "did not learn"
    std = row["accuracy_std"]
    cell = f"{100 * row['accuracy_mean']:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
    if row["did_not_learn"]:
        cell += f" ({row['did_not_learn']} of {row['did_not_learn'] + row['n_seeds']} did not learn)"
    if row.get("unchecked"):
        cell += " (not checked for learning: under 20 validation images)"
    return cell


def _steps_cell(*rows: dict | None) -> str:
    """The training steps each row's budget rule gave (0: an arm that trains nothing, as adabn)."""
    return " / ".join("–" if r is None or r.get("budget_steps") is None else f"{r['budget_steps']:,}" for r in rows)


def _rate_cell(row: dict | None) -> str:
    """The exchange rate with the seeds' interval; a rate without an interval is not given as a figure."""
    if row is None or not row["with_synthetic"]:
        return "–"
    if not row["n_seeds"]:
        return "did not learn"
    rate = row["exchange_rate"]
    if rate is None:
        return "–"
    if rate["interval"] is None:
        return "not reported (one seed)"
    return f"{'' if rate['bound'] else '≈ '}{format_estimate(rate)} ({format_interval(rate)})"


def _seeds_run(*rows: dict | None) -> int:
    return max((r["n_seeds"] + r["did_not_learn"] for r in rows if r), default=0)


def _k_label(k: int, rows: list[dict]) -> str:
    if k == 0:
        return "0 (synthetic only)"
    # `synthgap transfer` names the runs on the whole real training split curve-realall(+synthetic): their k
    # is the split's actual count per class, and the table says it is all there is.
    whole = any(r["real_per_class"] == k and "realall" in str(r.get("training_set")) for r in rows)
    return f"{k} (all)" if whole else str(k)


def scarcity_table(rows: list[dict]) -> str:
    """The scarcity curve (rows of synthgap.experiments.scarcity.curve_rows, arms left out): per k, the
    accuracy on real test photos of the k real images per class alone and with the synthetic set, and what the
    latter is worth in real images per class."""
    curve = {(r["real_per_class"], r["with_synthetic"]): r for r in rows if r["arm"] is None}
    cells = []
    for k in sorted({k for k, _ in curve}):
        real, mixed = curve.get((k, False)), curve.get((k, True))
        values = (_k_label(k, rows), _accuracy_cell(real), _accuracy_cell(mixed), _rate_cell(mixed))
        cells.append(dict(zip(SCARCITY_COLUMNS, (*values, _steps_cell(real, mixed), _seeds_run(real, mixed)))))
    return md_table(cells, SCARCITY_COLUMNS)


def arms_table(rows: list[dict]) -> str:
    """The gap-closing arms (rows with an `arm`), each beside the real-only run at its k, with what it needs
    beyond the synthetic set; transductive arms are marked. "" when there are none."""
    real = {r["real_per_class"]: r for r in rows if r["arm"] is None and not r["with_synthetic"]}
    cells = [
        dict(
            zip(
                ARM_COLUMNS,
                (
                    arm_label(r["arm"]),
                    _k_label(r["real_per_class"], rows),
                    arm_needs(r["arm"]),
                    _accuracy_cell(r),
                    _accuracy_cell(real.get(r["real_per_class"])),
                    _rate_cell(r),
                    _steps_cell(r),
                    _seeds_run(r),
                ),
            )
        )
        for r in rows
        if r["arm"] is not None
    ]
    return md_table(cells, ARM_COLUMNS) if cells else ""
