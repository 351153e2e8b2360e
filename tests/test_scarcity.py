"""The real-data scarcity curve: the exchange rate, the curve's rows, its plot and the report that opens with it."""

from __future__ import annotations

import json
import math

import pytest

from synthgap.experiments.scarcity import arm_label, arm_needs, curve_rows, exchange_rate, format_interval, headline
from synthgap.report.html import write_report
from synthgap.report.plots import plot_scarcity_curve

KS = (10, 100, 1000)


def accuracy_at(k: float, offset: float = 0.0) -> float:
    """A made-up real-only curve, straight in log(k): 0.4 at 10 real images per class, 0.5 at 100, 0.6 at 1000."""
    return 0.1 * math.log10(k) + 0.3 + offset


def curve(offsets=(0.0,)) -> dict[int, list[float]]:
    return {k: [accuracy_at(k, o) for o in offsets] for k in KS}


def test_the_rate_is_where_the_target_meets_the_curve_interpolated_in_log_k():
    rate = exchange_rate(curve((0.0, 0.0)), [0.45, 0.45])
    assert rate["bound"] is None and rate["k"] == pytest.approx(10**1.5)  # 0.45 = 0.1 log10(k) + 0.3
    assert exchange_rate(curve((0.0, 0.0)), [0.5, 0.5])["k"] == pytest.approx(100)  # on a point: that point
    assert exchange_rate(curve((0.0, 0.0)), [0.4, 0.4])["k"] == pytest.approx(10)


def test_the_interval_is_the_range_of_the_seeds_own_estimates():
    # Same curve for every seed, targets spread: the seeds' estimates are 10^1.4, 10^1.5 and 10^1.6.
    rate = exchange_rate(curve((0.0, 0.0, 0.0)), [0.44, 0.45, 0.46])
    assert rate["seeds"] == 3 and rate["k"] == pytest.approx(10**1.5)
    assert [e["k"] for e in rate["per_seed"]] == pytest.approx([10**1.4, 10**1.5, 10**1.6])
    assert rate["interval"]["low"]["k"] == pytest.approx(10**1.4)
    assert rate["interval"]["high"]["k"] == pytest.approx(10**1.6)
    assert format_interval(rate) == "25–40"
    # Each seed is read on its own curve: the same target is worth more on a seed whose real-only runs did better.
    rate = exchange_rate(curve((0.02, -0.02)), [0.45, 0.45])
    assert rate["k"] == pytest.approx(10**1.5)  # the mean curve and the mean target
    assert [e["k"] for e in rate["per_seed"]] == pytest.approx([10**1.3, 10**1.7])


def test_beyond_the_curve_the_rate_is_a_bound_not_an_extrapolation():
    below = exchange_rate(curve((0.0, 0.0)), [0.35, 0.35])
    assert below["k"] is None and (below["bound"], below["bound_k"]) == ("below", 10)
    above = exchange_rate(curve((0.0, 0.0)), [0.65, 0.65])
    assert above["k"] is None and (above["bound"], above["bound_k"]) == ("above", 1000)
    assert format_interval(above) == ">1,000"
    # Seeds on either side of the first point: a number for the mean, a bound at one end of the interval.
    mixed = exchange_rate(curve((0.0, 0.0)), [0.35, 0.45])
    assert mixed["k"] == pytest.approx(10)  # mean target 0.40
    assert mixed["interval"]["low"]["bound"] == "below" and mixed["interval"]["high"]["k"] == pytest.approx(10**1.5)
    assert format_interval(mixed) == "<10–32"


def test_the_first_crossing_going_up_the_curve_counts():
    bumpy = {10: [0.4, 0.4], 100: [0.6, 0.6], 1000: [0.5, 0.5]}
    # 0.55 is crossed going up between 10 and 100 (and again going down between 100 and 1000).
    assert exchange_rate(bumpy, [0.55, 0.55])["k"] == pytest.approx(10**1.75)


def test_one_seed_gives_an_estimate_but_no_interval():
    rate = exchange_rate(curve(), [0.45])
    assert rate["k"] == pytest.approx(10**1.5) and rate["interval"] is None and rate["seeds"] == 1
    assert format_interval(rate) == ""


def test_the_curve_and_the_target_must_hold_the_same_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        exchange_rate(curve((0.0, 0.0)), [0.45])


SEED_OFFSETS = {0: -0.01, 1: 0.0, 2: 0.01}


def record(k, accuracy, seed, *, with_synthetic=False, arm=None, learned=True, name=None, test_domain="real"):
    """One summary.json row of a curve run, named as `synthgap transfer` names them unless `name` is given."""
    if name is None:
        name = (
            f"{arm}-{k}"
            if arm
            else f"curve-real{k}" + ("+synthetic" if with_synthetic else "")
            if k
            else "curve-synthetic"
        )
    return {
        "training_set": name,
        "train_domain": "mixed" if with_synthetic else "real",
        "test_domain": test_domain,
        "synthetic_fraction": 0.5 if with_synthetic else 0.0,
        "seed": seed,
        "accuracy": accuracy,
        "macro_f1": accuracy - 0.02,
        "n_train": 10 * k,
        "real_per_class": k,
        "with_synthetic": with_synthetic,
        "arm": arm,
        "learned": learned,
        "budget_steps": 200,
    }


def curve_records(seeds=(0, 1, 2)) -> list[dict]:
    """Real-only runs on the made-up curve (each seed shifted a little), the synthetic set alone, 10 real + the
    set, and 100 real + the set whose seed 2 did not learn (at chance: it must not count anywhere)."""
    records = []
    for s in seeds:
        o = SEED_OFFSETS[s]
        for k in KS:
            records.append(record(k, accuracy_at(k, o), s, name="curve-realall" if k == 1000 else None))
            records.append(record(k, 0.9, s, test_domain="synthetic"))  # tested on synthetic images: not the curve
        # The synthetic set alone: per seed, 10^(1.5 + 10 o) on that seed's own curve (25, 32 and 40).
        records.append(record(0, accuracy_at(10**1.5, 2 * o), s, with_synthetic=True))
        records.append(record(10, accuracy_at(10**2.5), s, with_synthetic=True))  # worth 316 on every seed
        learned = s != 2
        worth_630 = accuracy_at(10**2.8, o)  # on every seed's own curve
        records.append(record(100, worth_630 if learned else 0.1, s, with_synthetic=True, learned=learned))
    return records


def rows_by_key(rows):
    return {(r["real_per_class"], r["with_synthetic"], r["arm"]): r for r in rows}


def test_curve_rows_average_the_seeds_that_learned_and_rate_the_runs_with_the_synthetic_set():
    classic = [{"training_set": "real", "test_domain": "real", "seed": 0, "accuracy": 0.7, "macro_f1": 0.7}]
    rows = curve_rows(curve_records() + classic)
    by = rows_by_key(rows)
    assert set(by) == {(10, False, None), (100, False, None), (1000, False, None), (0, True, None)} | {
        (10, True, None),
        (100, True, None),
    }
    assert [(r["real_per_class"], r["with_synthetic"]) for r in rows][:3] == [(0, True), (10, False), (10, True)]
    real10 = by[(10, False, None)]
    assert real10["accuracy_mean"] == pytest.approx(0.4) and real10["accuracy_std"] == pytest.approx(0.01)
    assert real10["n_seeds"] == 3 and real10["did_not_learn"] == 0 and real10["exchange_rate"] is None

    syn = by[(0, True, None)]["exchange_rate"]
    assert syn["k"] == pytest.approx(10**1.5) and syn["seeds"] == 3
    assert (syn["interval"]["low"]["k"], syn["interval"]["high"]["k"]) == pytest.approx((10**1.4, 10**1.6))
    assert by[(10, True, None)]["exchange_rate"]["k"] == pytest.approx(10**2.5)

    failed = by[(100, True, None)]
    assert failed["n_seeds"] == 2 and failed["did_not_learn"] == 1 and failed["seeds"] == [0, 1]
    assert failed["did_not_learn_accuracies"] == [0.1]
    assert failed["accuracy_mean"] == pytest.approx(0.575)  # seeds 0 and 1 (0.57, 0.58): the 0.1 is not in it
    # ... nor in the rate: with it, the mean target would fall below the curve's 100-image point.
    assert failed["exchange_rate"]["seeds"] == 2 and failed["exchange_rate"]["k"] == pytest.approx(10**2.8)


def test_a_real_only_point_that_did_not_learn_is_not_on_the_curve():
    records = [record(k, accuracy_at(k), s) for k in KS for s in (0, 1)]
    records += [record(5, 0.1, s, learned=False) for s in (0, 1)]  # 5 real images per class: at chance
    records += [record(0, 0.3, s, with_synthetic=True) for s in (0, 1)]
    by = rows_by_key(curve_rows(records))
    assert by[(5, False, None)]["n_seeds"] == 0 and by[(5, False, None)]["accuracy_mean"] is None
    # The curve starts at 10: 0.3 is below it, where counting the runs at chance would put it between 5 and 10.
    rate = by[(0, True, None)]["exchange_rate"]
    assert (rate["k"], rate["bound"], rate["bound_k"]) == (None, "below", 10)
    assert headline(list(by.values())).startswith(
        "Synthetic-only training is worth fewer than 10 real images per class (the fewest on the curve) (<10 over 2"
    )


def test_the_tables_give_each_runs_steps_and_mark_runs_too_small_to_check_for_learning():
    from synthgap.report.tables import arms_table, scarcity_table

    records = [record(k, accuracy_at(k), s) for k in KS for s in (0, 1)]
    records += [dict(record(10, 0.5, s, with_synthetic=True), budget_steps=569) for s in (0, 1)]
    records += [dict(record(10, 0.45, s, arm="adabn"), budget_steps=0) for s in (0, 1)]
    # 10 real per class: too few validation images to tell whether it learned (learned: None)
    records = [dict(r, learned=None) if r["training_set"] == "curve-real10" else r for r in records]
    rows = curve_rows(records)
    assert rows_by_key(rows)[(10, False, None)]["unchecked"] == 2
    table = scarcity_table(rows)
    assert "steps: real only / + synthetic" in table.splitlines()[0]
    line10 = next(x for x in table.splitlines() if x.startswith("| 10 |"))
    assert "not checked for learning" in line10 and "| 200 / 569 |" in line10
    line100 = next(x for x in table.splitlines() if x.startswith("| 100 |"))
    assert "not checked" not in line100 and "| 200 / – |" in line100
    assert "| 0 |" in arms_table(rows).splitlines()[2]  # adabn trains nothing: 0 steps


def test_the_headline_says_what_the_set_is_worth_with_its_spread():
    line = headline(curve_rows(curve_records()))
    assert line.startswith("Synthetic-only training is worth ≈ 32 real images per class (25–40 over 3 seeds)")
    assert "10 real + the set ≈ 320 real" in line and "100 real + the set ≈ 630 real" in line


def test_a_rate_from_one_seed_is_not_reported():
    rows = curve_rows(curve_records(seeds=(0,)))
    assert rows_by_key(rows)[(0, True, None)]["exchange_rate"]["interval"] is None
    line = headline(rows)
    assert "worth" not in line and "≈" not in line
    assert "Synthetic-only training reaches 43.0% on real test photos (one seed: no exchange rate" in line


def arm_records() -> list[dict]:
    """finetune and adabn at 10 real images per class; augment (no real image) did not learn on any seed."""
    records = []
    for s, o in SEED_OFFSETS.items():
        records.append(record(10, accuracy_at(10**2, o), s, with_synthetic=True, arm="finetune"))
        records.append(record(10, accuracy_at(10**1.2, o), s, with_synthetic=True, arm="adabn"))
        records.append(record(0, 0.1 + o, s, with_synthetic=True, arm="augment", learned=False))
    return records


def test_what_an_arm_needs_and_which_arms_are_transductive():
    assert [arm_needs(a) for a in ("finetune", "adabn", "augment", "filter")] == [
        "real labels",
        "unlabelled real images",
        "nothing",
        "real labels",
    ]
    assert arm_needs("augment+adabn") == "unlabelled real images"  # the augment model, then adabn
    assert arm_label("augment+adabn") == "augment+adabn (transductive)" and arm_label("filter") == "filter"


def test_the_plot_writes_a_png(tmp_path):
    rows = curve_rows(curve_records() + arm_records())
    path = tmp_path / "curve.png"
    plot_scarcity_curve(rows, path, chance=0.1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def study(tmp_path, records) -> tuple[str, str]:
    """A transfer output folder holding what write_report reads, its report.html and summary.md."""
    (tmp_path / "summary.json").write_text(json.dumps(records))
    env = {"data": {"real_test": {"spec": "made-up", "n": 100, "class_counts": {str(c): 10 for c in range(10)}}}}
    (tmp_path / "environment.json").write_text(json.dumps(env))
    write_report(tmp_path)
    return (tmp_path / "report.html").read_text(), (tmp_path / "summary.md").read_text()


def classic_records() -> list[dict]:
    return [
        {
            "training_set": name,
            "train_domain": name,
            "test_domain": domain,
            "synthetic_fraction": fraction,
            "seed": seed,
            "accuracy": 0.6 + 0.01 * seed - 0.2 * fraction,
            "macro_f1": 0.5,
            "n_train": 100,
        }
        for name, fraction in (("real", 0.0), ("synthetic", 1.0))
        for domain in ("real", "synthetic")
        for seed in (0, 1)
    ]


def test_a_study_with_a_curve_opens_the_report_with_it(tmp_path):
    page, md = study(tmp_path, classic_records() + curve_records() + arm_records())
    first = page.index("<h1>")
    assert page.index("Synthetic-only training is worth ≈ 32 real images per class (25–40 over 3 seeds)") > first
    assert page.index("Synthetic-only training is worth") < page.index("<h2>")  # the headline comes first
    assert page.index('alt="scarcity_curve.png"') < page.index("<h2>Real images per class</h2>")
    assert (tmp_path / "scarcity_curve.png").is_file()
    # The curve's table: the 100 + synthetic row names the run that did not learn; the whole split says "all".
    assert (
        "<td>100</td><td>50.0 ± 1.0</td><td>57.5 ± 0.7 (1 of 3 did not learn)</td><td>≈ 630 (630–630)</td>"
        "<td>200 / 200</td><td>3</td>" in page
    )
    assert "<td>0 (synthetic only)</td><td>–</td><td>45.0 ± 2.0</td><td>≈ 32 (25–40)</td>" in page
    assert "<td>1000 (all)</td>" in page
    # The arms: what each needs, adabn marked transductive, augment (no run learned) "did not learn", no rate.
    arms = page[page.index("<h2>Gap-closing arms</h2>") :]
    assert "<td>adabn (transductive)</td><td>10</td><td>unlabelled real images</td>" in arms
    assert "<td>finetune</td><td>10</td><td>real labels</td>" in arms and "≈ 100 (100–100)" in arms
    assert (
        "<td>augment</td><td>0 (synthetic only)</td><td>nothing</td><td>did not learn</td><td>–</td><td>did not learn</td>"
        in arms
    )
    # The fraction arms follow, their table free of the curve's runs.
    assert page.index("<h2>Fixed-size training sets</h2>") > page.index("<h2>Gap-closing arms</h2>")
    assert md.startswith("# Transfer study\n\nSynthetic-only training is worth ≈ 32 real images per class")
    assert "| 100 | 50.0 ± 1.0 | 57.5 ± 0.7 (1 of 3 did not learn) | ≈ 630 (630–630) | 200 / 200 | 3 |" in md
    assert "| augment | 0 (synthetic only) | nothing | did not learn | – | did not learn | 200 | 3 |" in md
    assert "## Fixed-size training sets" in md and "curve-real" not in md


def test_a_study_without_a_curve_renders_as_before(tmp_path):
    page, md = study(tmp_path, classic_records())
    assert "<h2>Summary</h2>" in page and "Real images per class" not in page and "Gap-closing" not in page
    assert not (tmp_path / "scarcity_curve.png").exists() and (tmp_path / "accuracy_vs_fraction.png").is_file()
    assert md.startswith("# Transfer study\n\nTest accuracy and macro-F1 in %, mean ± standard deviation over seeds.")
