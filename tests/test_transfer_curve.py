"""The real-data scarcity curve and the gap-closing arms of the transfer study: planning, the budget rule,
the "did not learn" flag, the confidence filter, AdaBN, and a tiny curve study end to end."""

import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from synthgap import SynthgapError
from synthgap.experiments.config import TransferConfig
from synthgap.experiments.transfer import (
    chance_level,
    check_transfer_config,
    learned,
    most_confident,
    plan_curve_sets,
    run_budget,
    run_transfer,
    self_train,
)
from synthgap.models import build_model
from synthgap.train.config import TrainConfig
from synthgap.train.evaluate import adapt_batchnorm

CLASSES = ["bird", "cat", "frog"]


def test_budget_rule_is_epochs_over_the_data_with_a_floor_of_steps():
    cfg = TransferConfig(min_steps=100, train=TrainConfig(epochs=8, batch_size=64))
    assert run_budget(cfg, 10_000) == 80_000  # far above the floor: epochs x images
    assert run_budget(cfg, 288) == 100 * 64  # 288 x 8 = 36 steps of 64: lifted to 100 steps
    assert run_budget(cfg, 30) == 100 * 30  # fewer images than a batch: batches of all of them
    assert run_budget(TransferConfig(min_steps=0, train=TrainConfig(epochs=8)), 288) == 8 * 288


def test_did_not_learn_means_validation_accuracy_within_two_standard_errors_of_chance():
    assert chance_level(6, 100) == pytest.approx(1 / 6 + 2 * np.sqrt(1 / 6 * 5 / 6 / 100))
    assert learned(0.1667, 6, 288, 0.1) is False  # the --quick example: one class predicted for everything
    assert learned(0.20, 6, 480, 0.1) is False  # 48 validation images: 20% is within noise of 16.7%
    assert learned(0.40, 6, 480, 0.1) is True
    assert learned(None, 6, 480, 0.0) is None  # no validation set: unknown, not "did not learn"
    assert learned(0.5, 6, 60, 0.1) is None  # 6 validation images cannot tell: unknown


def test_curve_plan_has_each_size_alone_and_with_the_set_and_arms_that_start_from_wave_zero():
    cfg = TransferConfig(
        classes=CLASSES,
        real_per_class=[10, 50, "all"],
        gap_closing=["finetune", "adabn", "augment", "filter", "selftrain"],
        gap_sizes=[10],
        filter_keep=0.5,
        selftrain_keep=0.4,
    )
    sets = {s.name: s for s in plan_curve_sets(cfg, n_real=300, n_synthetic=600)}
    assert sets["curve-synthetic"].n_real == 0 and sets["curve-synthetic"].n_synthetic == 600
    assert (sets["curve-real10"].n_real, sets["curve-real10"].n_synthetic) == (30, 0)
    assert (sets["curve-real50+synthetic"].n_real, sets["curve-real50+synthetic"].n_synthetic) == (150, 600)
    assert sets["curve-realall"].n_real == 300 and sets["curve-realall"].real_per_class == 100
    assert all(s.epochs_of_own_size for s in sets.values())  # every curve run: a budget of its own data
    assert sets["finetune-10"].start_from == "curve-synthetic" and sets["finetune-10"].n_real == 30
    assert sets["adabn-10"].start_from == "curve-synthetic"
    assert sets["augment+adabn-10"].start_from == "augment"
    assert sets["filter-10"].filter_by == "curve-real10" and sets["filter-10"].n_synthetic == 300
    # self-training: no real label (k = 0), taught by the augment arm's model, keeping 40% of the real images
    assert (sets["selftrain"].real_per_class, sets["selftrain"].start_from, sets["selftrain"].n_real) == (
        0,
        "augment",
        120,
    )
    assert {s.name for s in sets.values() if s.wave == 1} == {
        "finetune-10",
        "adabn-10",
        "augment+adabn-10",
        "filter-10",
        "selftrain",
    }
    alone = plan_curve_sets(TransferConfig(classes=CLASSES, gap_closing=["selftrain"]), n_real=300, n_synthetic=600)
    assert [(s.name, s.start_from) for s in alone] == [("curve-synthetic", None), ("selftrain", "curve-synthetic")]
    # a curve of its own synthetic size; more than there is: all of it
    few = plan_curve_sets(TransferConfig(classes=CLASSES, real_per_class=[10], curve_synthetic_per_class=50), 300, 600)
    assert {s.name: s.n_synthetic for s in few}["curve-real10+synthetic"] == 150


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("real_per_class", [10, "most"], "'real_per_class'"),
        ("gap_closing", ["mixup"], "'gap_closing'"),
        ("gap_closing", ["finetune"], "'gap_sizes'"),  # an arm on real images without a size
        ("filter_keep", 0.0, "'filter_keep'"),
        ("curve_real_share", 1.0, "'curve_real_share'"),
        ("selftrain_rounds", 0, "'selftrain_rounds'"),
        ("selftrain_keep", 1.5, "'selftrain_keep'"),
    ],
)
def test_bad_curve_fields_are_clear_errors(field, value, message):
    with pytest.raises(SynthgapError, match=message):
        check_transfer_config(TransferConfig(**{field: value}))


def test_filter_keeps_each_class_share_from_its_most_confident_images():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    confidence = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.8, 0.2, 0.95, 0.3])
    assert most_confident(labels, confidence, 4).tolist() == [1, 3, 4, 6]


def test_adabn_replaces_batchnorm_statistics_with_the_target_images_and_leaves_weights():
    torch.manual_seed(0)
    model = build_model("airnet", 3, widths=[8, 16, 16])
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    bright = torch.full((64, 3, 16, 16), 230, dtype=torch.uint8)
    dark = torch.full((64, 3, 16, 16), 20, dtype=torch.uint8)
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    adapt_batchnorm(model, bright)
    mean_bright = first_bn.running_mean.clone()
    adapt_batchnorm(model, dark, batch_size=16)  # batch size does not matter: a cumulative average
    assert not torch.allclose(mean_bright, first_bn.running_mean)
    adapt_batchnorm(model, bright, batch_size=16)
    assert torch.allclose(mean_bright, first_bn.running_mean, atol=1e-5)  # the statistics of these images only
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    assert not model.training and first_bn.momentum == 0.1


@pytest.fixture(scope="module")
def curve_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("curve")
    real = make_image_folder(base / "real", CLASSES, 24, size=16, seed=1)
    synth = make_image_folder(base / "synthetic", CLASSES, 24, size=16, seed=2)
    cfg = TransferConfig(
        classes=CLASSES,
        image_size=16,
        seeds=[0],
        fractions=[],
        extra_synthetic=[],
        min_steps=30,
        real_per_class=[4, "all"],
        gap_closing=["finetune", "adabn", "augment", "filter", "selftrain"],
        gap_sizes=[4],
        curve_real_share=0.5,
        selftrain_rounds=2,
        train=TrainConfig(epochs=2, batch_size=16, widths=[8, 16, 16], threads=1),
    )
    out = base / "study"
    records = run_transfer(str(real), str(synth), out, cfg, progress=False)
    return out, cfg, records


def test_curve_study_runs_every_arm_and_records_where_each_sits(curve_study):
    out, cfg, records = curve_study
    by_set = {r["training_set"]: r for r in records if r["test_domain"] == "real"}
    assert set(by_set) == {
        "curve-synthetic",
        "curve-real4",
        "curve-real4+synthetic",
        "curve-realall",
        "curve-realall+synthetic",
        "augment",
        "finetune-4",
        "adabn-4",
        "augment+adabn-4",
        "filter-4",
        "selftrain",
    }
    assert by_set["curve-real4"]["real_per_class"] == 4 and by_set["curve-real4"]["with_synthetic"] is False
    assert by_set["curve-synthetic"]["real_per_class"] == 0 and by_set["filter-4"]["arm"] == "filter"
    assert all(r["learned"] in (True, False, None) for r in by_set.values())
    assert by_set["adabn-4"]["learned"] == by_set["curve-synthetic"]["learned"]  # what its start model learned
    # half of each batch of a run of real and synthetic images is real (curve_real_share); of no other run
    shared = {
        n for n in by_set if "real_share" in json.loads((out / "runs" / n / "seed0" / "metrics.json").read_text())
    }
    assert shared == {"curve-real4+synthetic", "curve-realall+synthetic", "filter-4", "selftrain"}
    assert "50% of every batch is real images" in (out / "summary.md").read_text()  # and the report says so

    # the budget rule: 12 real images x 2 epochs is 2 steps, lifted to the floor of 30
    metrics = json.loads((out / "runs" / "curve-real4" / "seed0" / "metrics.json").read_text())
    assert metrics["budget_steps"] == 30 and metrics["n_real"] == 12
    # AdaBN trains nothing and changes the synthetic model's predictions on real images only via BN statistics
    adabn = json.loads((out / "runs" / "adabn-4" / "seed0" / "metrics.json").read_text())
    assert adabn["budget_steps"] == 0 and adabn["history"] == []
    # the filter run holds the real 12 and the half of the synthetic set its scorer was surest of
    filt = json.loads((out / "runs" / "filter-4" / "seed0" / "metrics.json").read_text())
    assert (filt["n_real"], filt["n_synthetic"]) == (12, round(0.5 * metrics_synthetic(out)))
    # the fine-tuned run started from the synthetic model: its real images are the curve's 4 per class
    fine = json.loads((out / "runs" / "finetune-4" / "seed0" / "metrics.json").read_text())
    assert fine["train_sha256"] == metrics["train_sha256"]


def test_self_training_never_reads_the_real_labels_and_resumes_its_rounds(tmp_path):
    from synthgap.data.sets import ImageSet
    from synthgap.experiments.transfer import TrainingSet

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(16)
    # each class a colour, so a teacher can label real images better than chance
    colours = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.uint8)
    images = (colours[labels][:, :, None, None] + torch.randint(0, 40, (48, 3, 16, 16), generator=g)).to(torch.uint8)
    synthetic = ImageSet(images.flip(0), labels.flip(0), CLASSES, "synthetic", "synthetic")
    cfg = TransferConfig(
        classes=CLASSES,
        image_size=16,
        min_steps=6,
        selftrain_rounds=2,
        curve_real_share=0.5,
        train=TrainConfig(epochs=1, batch_size=16, widths=[8, 16, 16], threads=1),
    )
    ts = TrainingSet("selftrain", "mixed", 24, 48, True, real_per_class=0, with_synthetic=True, arm="selftrain")

    def run(real_labels, folder):
        torch.manual_seed(0)
        teacher = build_model("airnet", 3, widths=[8, 16, 16])
        real = ImageSet(images, real_labels, CLASSES, "real", "real")
        data = {"real": {"train": real}, "synthetic": {"train": synthetic}}
        return self_train(data, cfg, ts, 0, teacher, folder, "selftrain", progress=False)

    fitted, train_set, budget = run(labels, tmp_path / "a")
    assert len(train_set) == 24 + 48 and budget == 2 * run_budget(cfg, 72)  # both rounds
    assert (tmp_path / "a" / "checkpoint.pt").exists() and not (tmp_path / "a" / "round1").exists()
    shuffled, _, _ = run(labels[torch.randperm(48, generator=g)], tmp_path / "b")  # other labels: the same model
    a, b = fitted.model.state_dict(), shuffled.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # an interrupted run resumes its rounds from their checkpoints: the same model again
    again, _, _ = run(labels, tmp_path / "a")
    assert all(torch.equal(a[k], v) for k, v in again.model.state_dict().items())


def metrics_synthetic(out):
    return json.loads((out / "runs" / "curve-synthetic" / "seed0" / "metrics.json").read_text())["n_synthetic"]


def test_curve_study_resumes_reading_every_run_back(curve_study):
    out, cfg, records = curve_study
    real, synth = (
        json.loads((out / "environment.json").read_text())["data"][f"{d}_train"]["spec"] for d in ("real", "synthetic")
    )
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/seed0/metrics.json")}
    again = run_transfer(real, synth, out, cfg, progress=False)
    assert again == records
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/seed0/metrics.json")} == stamp


def test_a_run_that_stays_at_chance_is_flagged_did_not_learn_in_the_table(tmp_path):
    from PIL import Image

    from synthgap.report.tables import aggregate, markdown_table

    rng = np.random.default_rng(0)
    for side in ("real", "synthetic"):
        for split, n in (("train", 80), ("test", 10)):
            for c in CLASSES:  # pure noise: nothing tells the classes apart
                (tmp_path / side / split / c).mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                        tmp_path / side / split / c / f"{i}.png"
                    )
    cfg = TransferConfig(
        classes=CLASSES,
        image_size=16,
        seeds=[0],
        fractions=[0.0],
        extra_synthetic=[],
        min_steps=0,
        dedupe="off",
        train=TrainConfig(epochs=1, batch_size=64, widths=[8, 8, 8], threads=1),
    )
    records = run_transfer(str(tmp_path / "real"), str(tmp_path / "synthetic"), tmp_path / "study", cfg, progress=False)
    assert records[0]["learned"] is False
    assert "real (did not learn)" in markdown_table(aggregate(records))
    assert "did not learn" in (tmp_path / "study" / "report.html").read_text()
