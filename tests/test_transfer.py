"""The transfer study: planning, the output contract, resume, refusal of a changed config, the CLI."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, synthgap

from synthgap.experiments import plan_training_sets
from synthgap.experiments.config import TransferConfig

CLASSES = ["bird", "cat", "frog"]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = [
    "--set",
    "classes=bird,cat,frog",
    "--set",
    "image_size=16",
    "--set",
    "train_size=60",
    "--set",
    "train.widths=[8,16,16]",
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=16",
]


def test_plan_fixed_size_fractions_and_extra_synthetic():
    cfg = TransferConfig(fractions=[0, 0.25, 1], extra_synthetic=[1, 2], train_size=100)
    size, sets = plan_training_sets(cfg, n_real=200, n_synthetic=300)
    assert size == 100
    by = {s.name: s for s in sets}
    assert (by["real"].n_real, by["real"].n_synthetic) == (100, 0)
    assert (by["mix25"].n_real, by["mix25"].n_synthetic) == (75, 25)
    assert (by["synthetic"].n_real, by["synthetic"].n_synthetic) == (0, 100)
    assert (by["real+1xsynthetic"].n_real, by["real+1xsynthetic"].n_synthetic) == (200, 200)
    assert by["real+2xsynthetic"].n_synthetic == 300  # capped at what exists


def test_plan_lowers_a_train_size_larger_than_the_data_and_says_so(caplog):
    from synthgap import SynthgapError

    with caplog.at_level("WARNING", logger="synthgap"):
        size, sets = plan_training_sets(TransferConfig(train_size=500), n_real=200, n_synthetic=300)
    assert size == 200 and "train_size 500 capped at 200" in caplog.text
    assert max(s.n_real for s in sets if s.train_domain != "real+1xsynthetic") == 200
    size, _ = plan_training_sets(TransferConfig(train_size=500, fractions=[0.5]), n_real=100, n_synthetic=300)
    assert size == 200  # half of it real: 100
    with pytest.raises(SynthgapError, match="too few training images to train.*at least 6 images"):
        plan_training_sets(TransferConfig(train_size=500), n_real=4, n_synthetic=300)


def test_plan_adds_a_real_baseline_on_more_images_with_its_own_budget():
    cfg = TransferConfig(fractions=[0, 1], extra_synthetic=[], train_size=100, real_baseline=150)
    size, sets = plan_training_sets(cfg, n_real=200, n_synthetic=100)
    base = sets[-1]
    assert (size, base.name, base.train_domain, base.n_real, base.n_synthetic) == (
        100,
        "real-150",
        "real-baseline",
        150,
        0,
    )
    assert base.epochs_of_own_size and not any(s.epochs_of_own_size for s in sets[:-1])
    _, sets = plan_training_sets(dataclasses.replace(cfg, real_baseline=500), n_real=200, n_synthetic=100)
    assert sets[-1].name == "real-200"  # capped at what there is


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("transfer")
    real = make_image_folder(base / "real", CLASSES, 30, size=16, seed=1)
    synth = make_image_folder(base / "synthetic", CLASSES, 30, size=16, seed=2, ext="jpg")
    return real, synth


@pytest.fixture(scope="module")
def quick_run(folders, tmp_path_factory):
    real, synth = folders
    out = tmp_path_factory.mktemp("out") / "study"
    proc = synthgap(
        "transfer",
        "--quick",
        "--real",
        str(real),
        "--synthetic",
        str(synth),
        "--out",
        str(out),
        *TINY,
        in_subprocess=True,
    )
    return out, proc


def test_quick_transfer_writes_the_output_contract(quick_run):
    out, proc = quick_run
    for name in (
        "config.yaml",
        "environment.json",
        "summary.json",
        "summary.csv",
        "summary.md",
        "accuracy_vs_fraction.png",
        "report.html",
    ):
        assert (out / name).is_file(), name
    records = json.loads((out / "summary.json").read_text())
    # --quick: 2 seeds x (fractions 0, 0.5, 1 + real+1xsynthetic) x 2 test domains
    assert len(records) == 2 * 4 * 2
    for r in records:
        assert set(r) >= {"train_domain", "test_domain", "synthetic_fraction", "seed", "accuracy", "macro_f1"}
        assert 0 <= r["accuracy"] <= 1
    assert {(r["train_domain"], r["test_domain"]) for r in records} >= {
        ("real", "real"),
        ("real", "synthetic"),
        ("synthetic", "real"),
        ("synthetic", "synthetic"),
        ("mixed", "real"),
        ("real+1xsynthetic", "real"),
    }
    assert "accuracy" in (out / "summary.csv").read_text().splitlines()[0]
    env = json.loads((out / "environment.json").read_text())
    assert env["torch"].startswith("2.14") and len(env["data"]["real_train"]["sha256"]) == 64
    run = out / "runs" / "real" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"real", "synthetic"}
    assert (run / "confusion_real.png").stat().st_size > 1000 and (run / "confusion_synthetic.png").is_file()
    assert not (run / "checkpoint.pt").exists()
    from synthgap.train.classifier import load_classifier

    c = load_classifier(run)  # every run is a classifier `synthgap classify` and the web app load
    assert c.name == "real/seed0" and c.info["metrics"]["test_real_accuracy"] == metrics["test"]["real"]["accuracy"]
    assert c.info["trained_on"]["training_set"] == "real" and c.info["trained_on"]["n_synthetic"] == 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html  # self-contained
    assert "| real |" in proc.stdout  # the table is printed
    # --quick's test_size on test splits smaller than it: capped at what there is, said in one line, no error
    held = re.search(r"test_size 1200 capped at what the test splits hold: (\d+) real, (\d+) synthetic", proc.stderr)
    assert held and [int(n) for n in held.groups()] == [env["data"][f"{d}_test"]["n"] for d in ("real", "synthetic")]
    assert (out / "samples.png").stat().st_size > 1000 and "real beside synthetic" in html
    assert "| real | 60 | 0.00 |" in (out / "summary.md").read_text()  # how many images each row trained on


def test_classify_names_a_class_per_image_of_files_and_folders_and_says_which_it_cannot_read(
    quick_run, folders, tmp_path
):
    from click.testing import CliRunner

    from synthgap.cli import cli
    from synthgap.train.classifier import load_classifier

    run = quick_run[0] / "runs" / "real" / "seed0"
    folder = folders[0] / "test" / CLASSES[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = CliRunner().invoke(
        cli, ["classify", str(folder), str(broken), "--model", str(run), "--json", "--top", "2"]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(records) == len(list(folder.glob("*.png"))) + 1
    assert records[-1]["path"] == str(broken) and records[-1]["label"] is None and "PIL" in records[-1]["error"]
    first = records[0]
    assert first["label"] in CLASSES and len(first["probabilities"]) == 2
    assert first["probabilities"][0]["class"] == first["label"]
    assert first["probabilities"][0]["probability"] >= first["probabilities"][1]["probability"]
    # the same answer as the classifier the web app loads, on the same file
    from PIL import Image

    c = load_classifier(run)
    x = torch.from_numpy(np.asarray(Image.open(first["path"]).convert("RGB"))).permute(2, 0, 1)[None]
    assert c.ranked(c.predict(x)[0], 2) == first["probabilities"]
    table = CliRunner().invoke(cli, ["classify", str(folder), "--model", str(run)])
    assert table.exit_code == 0 and first["label"] in table.output.splitlines()[0]
    nothing = CliRunner().invoke(cli, ["classify", str(broken), "--model", str(run)])
    assert nothing.exit_code != 0 and "no file could be read" in str(
        nothing.exception
    )  # main() prints it as "error: ..."


def test_same_seed_gives_identical_records(quick_run, folders, tmp_path):
    out, _ = quick_run
    real, synth = folders
    again = tmp_path / "again"
    synthgap(
        "transfer",
        "--quick",
        "--real",
        str(real),
        "--synthetic",
        str(synth),
        "--out",
        str(again),
        *TINY,
        "--set",
        "seeds=[0]",
    )
    first = [r for r in json.loads((out / "summary.json").read_text()) if r["seed"] == 0]
    assert json.loads((again / "summary.json").read_text()) == first


def test_rerun_resumes_without_retraining(quick_run, folders):
    out, _ = quick_run
    real, synth = folders
    metrics = out / "runs" / "synthetic" / "seed1" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    proc = synthgap("transfer", "--quick", "--real", str(real), "--synthetic", str(synth), "--out", str(out), *TINY)
    assert metrics.stat().st_mtime_ns == before
    assert "done before" in proc.stderr


def test_changed_config_is_refused(quick_run, folders):
    out, _ = quick_run
    real, synth = folders
    proc = synthgap(
        "transfer",
        "--quick",
        "--real",
        str(real),
        "--synthetic",
        str(synth),
        "--out",
        str(out),
        *TINY,
        "--set",
        "train.lr=0.01",
        check=False,
    )
    assert proc.returncode == 2
    assert "different config" in proc.stderr and "Traceback" not in proc.stderr


def test_resuming_on_other_data_is_refused(quick_run, folders, tmp_path):
    out, _ = quick_run
    real, _ = folders
    other = make_image_folder(tmp_path / "other", CLASSES, 30, size=16, seed=9)
    proc = synthgap(
        "transfer", "--quick", "--real", str(real), "--synthetic", str(other), "--out", str(out), *TINY, check=False
    )
    assert proc.returncode == 2 and "started on other data" in proc.stderr


def test_report_command_rebuilds_the_report(quick_run):
    out, _ = quick_run
    (out / "report.html").unlink()
    synthgap("report", str(out), in_subprocess=True)
    assert (out / "report.html").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.epochz=3"], "unknown config field(s) train.epochz"),
        (["--set", "train.epochs=many"], "train.epochs': expected int"),
        (["--set", "classes=bird,dragon"], "dragon"),
        (["--set", "train.widths=[8,16"], "not valid YAML"),
        (["--set", "train.batch_size=0"], "train.batch_size': expected at least 1"),
        (["--set", "fractions=[0,0.001]", "--set", "train_size=60"], "repeated training sets"),
        (["--set", "seeds=[]"], "'seeds': give at least one seed"),
        (["--set", "fractions=[0,1.5]"], "every fraction between 0 and 1"),
    ],
)
def test_user_mistakes_are_clear_errors_not_tracebacks(folders, tmp_path, args, message):
    real, synth = folders
    proc = synthgap(
        "transfer",
        "--real",
        str(real),
        "--synthetic",
        str(synth),
        "--out",
        str(tmp_path / "x"),
        *TINY,
        *args,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_help_explains_every_command():
    for cmd in ([], ["transfer"], ["train"], ["data", "cifar10"], ["report"]):
        out = synthgap(*cmd, "--help").stdout
        assert "Usage:" in out and "--help" in out


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "cifar10-jpeg").is_dir(), reason="../shared/data not present")
@pytest.mark.slow
def test_real_slice_cifar10_against_stable_diffusion(tmp_path):
    """About 100 images per class of CIFAR-10 against CIFAKE's SD 1.4 images, end to end."""

    def slice_of(src: Path, dst: Path, n_train: int, n_test: int) -> Path:
        for split, n in (("train", n_train), ("test", n_test)):
            for c in ("bird", "cat", "deer", "dog", "frog", "horse"):
                (dst / split / c).mkdir(parents=True)
                for f in sorted((src / split / c).iterdir())[:n]:
                    (dst / split / c / f.name).symlink_to(f)
        return dst

    real = slice_of(SHARED / "cifar10-jpeg", tmp_path / "real", 100, 50)
    synth = slice_of(SHARED / "cifake-sd14-fake", tmp_path / "fake", 100, 50)
    out = tmp_path / "study"
    synthgap(
        "transfer",
        "--quick",
        "--real",
        str(real),
        "--synthetic",
        str(synth),
        "--out",
        str(out),
        "--set",
        "seeds=[0]",
        "--set",
        "train_size=null",
        "--set",
        "fractions=[0,1]",
        "--set",
        "extra_synthetic=[]",
        "--set",
        "train.epochs=10",
        "--set",
        "train.batch_size=64",
    )
    records = {
        (r["train_domain"], r["test_domain"]): r["accuracy"] for r in json.loads((out / "summary.json").read_text())
    }
    assert len(records) == 4
    assert records[("real", "real")] > 0.3  # chance is 1/6
    assert records[("synthetic", "synthetic")] > 0.3
    assert (out / "report.html").is_file()


def test_a_one_seed_row_shows_no_spread_and_two_seeds_do():
    from synthgap.report.tables import aggregate, markdown_table

    def rec(seed, acc):
        return {
            "training_set": "real",
            "train_domain": "real",
            "test_domain": "real",
            "synthetic_fraction": 0.0,
            "seed": seed,
            "accuracy": acc,
            "macro_f1": acc,
        }

    one = markdown_table(aggregate([rec(0, 0.5)]))
    assert "| 50.0 |" in one and "±" not in one
    two = markdown_table(aggregate([rec(0, 0.5), rec(1, 0.6)]))
    assert "55.0 ± 7.1" in two
