"""The real-data scarcity curve of a transfer study: what a synthetic image set is worth in real images.

Pure functions over summary.json's records (no training). The curve is the accuracy on real test photos
against k, the real training images per class, of runs on the k real images alone and with the synthetic set
added; a run on the synthetic set alone sits at k = 0, and the gap-closing arms (`arm`) at their own k. The
exchange rate of a run is how many real images per class the real-only curve needs to match its accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from synthgap.experiments.config import GAP_CLOSING


def _parts(arm: str) -> list[str]:
    return arm.split("+")  # a combined arm, e.g. "augment+adabn": the augment arm's model, then adabn


def arm_needs(arm: str) -> str:
    """What an arm (or a combined arm such as "augment+adabn") needs beyond the synthetic set."""
    needs = [n for n in dict.fromkeys(GAP_CLOSING.get(p, ("?", False))[0] for p in _parts(arm)) if n != "nothing"]
    return " and ".join(needs) or "nothing"


def is_transductive(arm: str | None) -> bool:
    return bool(arm) and any(GAP_CLOSING.get(p, ("", False))[1] for p in _parts(arm))


def arm_label(arm: str) -> str:
    """The arm's name as the report shows it: marked when it is transductive."""
    return f"{arm} (transductive)" if is_transductive(arm) else arm


def _estimate(ks: list[int], accuracies: list[float], target: float) -> dict:
    """Where `target` first crosses the curve going up, interpolated linearly in log(k); a bound when it is
    below the first point or never reached (no extrapolation)."""
    if target < accuracies[0]:
        return {"k": None, "bound": "below", "bound_k": ks[0]}
    if target == accuracies[0]:
        return {"k": float(ks[0]), "bound": None, "bound_k": None}
    for k0, a0, k1, a1 in zip(ks, accuracies, ks[1:], accuracies[1:]):
        if a0 < target <= a1:
            t = (target - a0) / (a1 - a0)
            return {"k": math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0))), "bound": None, "bound_k": None}
    return {"k": None, "bound": "above", "bound_k": ks[-1]}


def _order(e: dict) -> tuple[float, int]:
    # A bound sorts just outside the k it names: "below 10" before 10, "above 1000" after 1000.
    if e["bound"] is None:
        return e["k"], 0
    return e["bound_k"], -1 if e["bound"] == "below" else 1


def exchange_rate(real_curve: dict[int, list[float]], target: list[float]) -> dict:
    """How many real images per class the real-only curve needs to match the accuracy `target`.

    `real_curve` maps k (real images per class, > 0) to the accuracies of its seeds; `target` holds one
    accuracy per seed, in the same seed order as every point of the curve. Runs that did not learn (summary
    records with `learned: False`) must be left out by the caller, from the curve and from the target alike:
    an accuracy at chance is not a point on the curve.

    The estimate is where the target first crosses the curve going up (from the smallest k), interpolated
    linearly in log(k) between the two points that bracket it. Below the smallest k's accuracy, or above every
    point of the curve, the answer is a bound instead of a number ({"bound": "below"/"above", "bound_k": k}):
    nothing is extrapolated.

    Returns {"k": float | None, "bound": None | "below" | "above", "bound_k": int | None, "interval": ...,
    "seeds": n, "per_seed": [...]}. The point estimate (k, bound, bound_k) uses the seed-mean curve and the mean
    target. `per_seed` holds each seed's own estimate (its own curve and target) in the same form, and
    `interval` is {"low": estimate, "high": estimate}: the smallest and largest of them. The interval is the
    spread of the rate over seeds, not a confidence interval, and with few seeds it understates the
    uncertainty. With fewer than 2 seeds there is no spread to show: `interval` is None, and the report does not
    print the rate as a figure (an exchange rate without an interval is not reported).
    """
    ks = sorted(k for k in real_curve if k > 0)
    n = len(target)
    if not ks or not n:
        raise ValueError("an exchange rate needs a real-only curve and a target accuracy")
    if any(len(real_curve[k]) != n for k in ks):
        raise ValueError(
            f"the curve's points and the target must hold the same seeds: {n} target accuracies, "
            f"{[len(real_curve[k]) for k in ks]} per point"
        )
    mean_curve = [float(np.mean(real_curve[k])) for k in ks]
    point = _estimate(ks, mean_curve, float(np.mean(target)))
    per_seed = [_estimate(ks, [real_curve[k][s] for k in ks], target[s]) for s in range(n)]
    interval = {"low": min(per_seed, key=_order), "high": max(per_seed, key=_order)} if n >= 2 else None
    return dict(point, interval=interval, seeds=n, per_seed=per_seed)


def format_k(k: float) -> str:
    """A number of images per class as the report prints it: two significant digits from 100 up."""
    if k >= 100:
        return f"{round(k, 1 - math.floor(math.log10(k))):,.0f}"
    return f"{k:.0f}" if k >= 10 or float(k).is_integer() else f"{k:.1f}"


def format_estimate(e: dict) -> str:
    """One estimate (a point, or an end of the interval): "120", "<10" or ">1,000"."""
    if e["bound"] == "below":
        return f"<{format_k(e['bound_k'])}"
    if e["bound"] == "above":
        return f">{format_k(e['bound_k'])}"
    return format_k(e["k"])


def format_interval(rate: dict) -> str:
    """The interval as the report prints it, e.g. "80–170" (the smallest and largest per-seed estimates); "" without one."""
    if not rate or not rate.get("interval"):
        return ""
    low, high = (format_estimate(rate["interval"][end]) for end in ("low", "high"))
    # Both ends shown even when equal (no spread over the seeds), except a bound: ">1,000", not ">1,000–>1,000".
    return low if low == high and rate["interval"]["low"]["bound"] else f"{low}–{high}"


def curve_rows(records: list[dict]) -> list[dict]:
    """The scarcity curve and the gap-closing arms from summary records: one row per (real_per_class,
    with_synthetic, arm), tested on real photos.

    Records without `real_per_class` (the classic fraction arms) and those tested on synthetic images are left
    out. Runs with `learned: False` are counted (`did_not_learn`, their accuracies in
    `did_not_learn_accuracies` for the plot) but left out of the mean, the std and every exchange rate.

    Each row: real_per_class, with_synthetic, arm, training_set, n_train, budget_steps, seeds (those that
    learned, sorted), n_seeds, did_not_learn, unchecked (runs with too few validation images to tell whether
    they learned: counted as learned, and marked in the tables), accuracy_by_seed {seed: accuracy}, accuracy_mean and
    accuracy_std (None without a learned run; std None with one), macro_f1_mean, did_not_learn_accuracies, and
    exchange_rate: for rows with the synthetic set (the synthetic-only run at k = 0 and the arms included), the
    exchange_rate() against the real-only curve, else None (also None when no run of the row learned or no
    real-only point did). The curve keeps the real-only points where some seed learned, and the rate uses the
    seeds that learned at every such point and in the row (seeds are paired: seed s's curve with its target).

    Rows come curve first (by k, real only before real + synthetic), then the arms (by arm, then k).
    """
    groups: dict[tuple, dict] = {}
    for r in records:
        if r.get("real_per_class") is None or r.get("test_domain") != "real":
            continue
        key = (int(r["real_per_class"]), bool(r.get("with_synthetic")), r.get("arm"))
        g = groups.setdefault(
            key,
            {
                "real_per_class": key[0],
                "with_synthetic": key[1],
                "arm": key[2],
                "training_set": r.get("training_set"),
                "n_train": r.get("n_train"),
                "budget_steps": r.get("budget_steps"),
                "accuracy_by_seed": {},
                "macro_f1_by_seed": {},
                "did_not_learn_accuracies": [],
            },
        )
        if r.get("learned", True) is False:
            g["did_not_learn_accuracies"].append(r["accuracy"])
        else:
            g["unchecked"] = g.get("unchecked", 0) + (r.get("learned", True) is None)
            g["accuracy_by_seed"][r["seed"]] = r["accuracy"]
            g["macro_f1_by_seed"][r["seed"]] = r.get("macro_f1")
    rows = []
    for g in groups.values():
        acc = list(g["accuracy_by_seed"].values())
        f1 = [v for v in g.pop("macro_f1_by_seed").values() if v is not None]
        rows.append(
            dict(
                g,
                seeds=sorted(g["accuracy_by_seed"]),
                n_seeds=len(acc),
                did_not_learn=len(g["did_not_learn_accuracies"]),
                unchecked=g.pop("unchecked", 0),
                accuracy_mean=float(np.mean(acc)) if acc else None,
                accuracy_std=float(np.std(acc, ddof=1)) if len(acc) > 1 else None,  # one seed: no spread
                macro_f1_mean=float(np.mean(f1)) if f1 else None,
                exchange_rate=None,
            )
        )
    rows.sort(key=lambda r: (r["arm"] is not None, r["arm"] or "", r["real_per_class"], r["with_synthetic"]))

    curve = {
        r["real_per_class"]: r["accuracy_by_seed"]
        for r in rows
        if r["arm"] is None and not r["with_synthetic"] and r["real_per_class"] > 0 and r["n_seeds"]
    }
    for r in rows:
        if not r["with_synthetic"] or not r["n_seeds"] or not curve:
            continue
        seeds = sorted(set(r["accuracy_by_seed"]).intersection(*curve.values()))
        if seeds:
            r["exchange_rate"] = exchange_rate(
                {k: [by_seed[s] for s in seeds] for k, by_seed in curve.items()},
                [r["accuracy_by_seed"][s] for s in seeds],
            )
    return rows


def synthetic_only_row(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["arm"] is None and r["with_synthetic"] and r["real_per_class"] == 0), None)


def _equivalent(rate: dict) -> str:
    """A rate's point estimate as words: "120", "fewer than 10", "more than 1,000"."""
    if rate["bound"] == "below":
        return f"fewer than {format_k(rate['bound_k'])}"
    if rate["bound"] == "above":
        return f"more than {format_k(rate['bound_k'])}"
    return format_k(rate["k"])


def _worth(rate: dict) -> str:
    """The synthetic-only rate as words: "≈ 120 real images per class", "fewer than 10 ... (the fewest ...)"."""
    edge = {"below": " (the fewest on the curve)", "above": " (the most on the curve)"}.get(rate["bound"], "")
    return f"{'' if rate['bound'] else '≈ '}{_equivalent(rate)} real images per class{edge}"


def headline(rows: list[dict]) -> str:
    """The report's opening line: what the synthetic set is worth in real images per class, alone and added to
    k real ones, with the spread over seeds. A rate without an interval (one seed) is not given as a figure."""
    parts = []
    syn = synthetic_only_row(rows)
    if syn is not None:
        rate = syn["exchange_rate"]
        if not syn["n_seeds"]:
            parts.append("Synthetic-only training did not learn (accuracy at chance)")
        elif rate and rate["interval"]:
            parts.append(
                f"Synthetic-only training is worth {_worth(rate)} ({format_interval(rate)} over {rate['seeds']} seeds)"
            )
        else:
            why = (
                "one seed: no exchange rate without an interval"
                if rate
                else "no real-only run on the same seeds to compare with"
            )
            parts.append(
                f"Synthetic-only training reaches {100 * syn['accuracy_mean']:.1f}% on real test photos ({why})"
            )
    for r in rows:
        rate = r["exchange_rate"]
        if r["arm"] is None and r["with_synthetic"] and r["real_per_class"] > 0 and rate and rate["interval"]:
            verb = "is worth" if rate["bound"] else "≈"
            parts.append(f"{format_k(r['real_per_class'])} real + the set {verb} {_equivalent(rate)} real")
    if not parts:
        return "No exchange rate to report: it needs runs with the synthetic set, real-only runs and 2 seeds or more."
    return "; ".join(parts) + "."
