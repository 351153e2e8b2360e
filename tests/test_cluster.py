"""Independent tasks one after the other or as Ray tasks (synthgap.cluster): a transfer study and the
detector generalisation matrix give the same results either way, and resume either way."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder, synthgap

from synthgap import SynthgapError
from synthgap.cluster import run_tasks

CLASSES = ["bird", "cat", "frog"]


def test_serial_tasks_keep_their_order_get_the_shared_values_and_a_failure_names_its_item():
    calls = []

    def fn(item, *, offset, scale):
        calls.append(item)
        return (item + offset) * scale

    assert run_tasks(fn, [3, 1, 2], shared={"offset": 10, "scale": 2}) == [26, 22, 24]
    assert calls == [3, 1, 2]  # one after the other, in order

    def fails_on_two(item):
        if item == 2:
            raise SynthgapError("no data for it")
        return item

    with pytest.raises(SynthgapError, match=r"^study: run 2: no data for it$"):
        run_tasks(fails_on_two, [1, 2, 3], desc="study", describe=lambda i: f"run {i}")

    def bug(item):
        return 1 / 0

    with pytest.raises(ZeroDivisionError) as e:  # a bug here keeps its traceback, with a note naming the item
        run_tasks(bug, ["a"], describe=lambda i: f"run {i}")
    assert e.value.__notes__ == ["in run a"]


def test_ray_without_ray_installed_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SynthgapError, match=r"--ray needs Ray: pip install 'ray\[data\]'"):
        run_tasks(lambda i: i, [1], ray="local")


def test_the_cli_refuses_ray_resources_without_ray(tmp_path):
    proc = synthgap(
        "transfer", "--real", tmp_path, "--synthetic", tmp_path, "--out", tmp_path / "o", "--ray-cpus", "2", check=False
    )
    assert proc.returncode == 2 and "add --ray" in proc.stderr and "Traceback" not in proc.stderr


def test_ray_auto_without_a_cluster_fails_at_once_in_one_line(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized() or Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray is running here: auto would join it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    proc = synthgap(
        "transfer", "--real", "nowhere", "--synthetic", "nowhere", "--out", tmp_path / "o", "--ray", "auto", check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # before the data (which does not exist)
    assert "--ray auto: no Ray cluster to join" in proc.stderr and "--ray local" in proc.stderr


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 worker CPUs for this module, shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_tasks_keep_their_order_share_the_data_and_a_failure_names_its_item(ray_cluster):
    import torch

    def fn(item, *, data):
        return float(data[item].sum()), torch.get_num_threads()

    data = {"a": torch.ones(4, dtype=torch.uint8), "b": torch.full((3,), 2, dtype=torch.uint8)}
    results = run_tasks(fn, ["b", "a", "b"], ray="local", shared={"data": data})
    assert results == [(6.0, 1), (4.0, 1), (6.0, 1)]  # in the order of the items; 1 CPU each: 1 thread

    def fails_on_two(item):
        if item == 2:
            raise SynthgapError("no data for it")
        return item

    with pytest.raises(SynthgapError, match=r"^study: run 2: no data for it$"):
        run_tasks(fails_on_two, [1, 2, 3], ray="local", desc="study", describe=lambda i: f"run {i}")

    def bug(item):
        return 1 / 0

    with pytest.raises(SynthgapError, match=r"^run a failed: ZeroDivisionError: division by zero$"):
        run_tasks(bug, ["a"], ray="local", describe=lambda i: f"run {i}")


def test_a_ray_task_starts_once_the_tasks_it_needs_are_saved_not_before(ray_cluster, tmp_path):
    import time

    def fn(item):
        if item == "first":
            time.sleep(1)
            (tmp_path / "first.txt").write_text("saved")
            return item
        return (tmp_path / "first.txt").read_text()  # what the task it needs wrote

    # 2 CPUs: without its need the second would start beside the first and find nothing
    assert run_tasks(fn, ["first", "second"], ray="local", needs=[[], [0]]) == ["first", "saved"]
    with pytest.raises(ValueError, match="needs"):
        run_tasks(fn, ["first", "second"], needs=[[1], []])  # a need must come before the item


# A tiny study: 2 training sets, the synthetic-only curve run and a fine-tuning arm on it, x 2 seeds; a few steps
# each (accuracies between chance and 1, different per run).
STUDY = {
    "classes": ",".join(CLASSES),
    "image_size": 16,
    "seeds": "[0,1]",
    "fractions": "[0,1]",
    "extra_synthetic": "[]",
    "train_size": 24,
    "min_steps": 12,
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.widths": "[8,16,16]",
    "train.threads": 1,
    "gap_closing": "[finetune]",  # wave 1: fine-tuned from the synthetic-only run of its seed, once that is saved
    "gap_sizes": "[2]",
}
OVERRIDES = [f"{k}={v}" for k, v in STUDY.items()]


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory):
    from synthgap.config import load_config
    from synthgap.experiments.config import TransferConfig

    base = tmp_path_factory.mktemp("cluster-study")
    real = make_image_folder(base / "real", CLASSES, 16, size=16, seed=1)
    synth = make_image_folder(base / "synthetic", CLASSES, 16, size=16, seed=2, ext="jpg")
    return real, synth, load_config(TransferConfig, None, OVERRIDES)  # the config the command line makes


def run_times(out) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("runs/*/seed*/metrics.json"))}


def losses(out) -> dict[str, list[float]]:
    """Every run's training loss per epoch: equal only if the runs trained alike, step for step."""
    return {
        str(p.relative_to(out)): [h["train_loss"] for h in json.loads(p.read_text())["history"]]
        for p in sorted(out.glob("runs/*/seed*/metrics.json"))
    }


def test_a_study_on_ray_gives_the_serial_summary_and_resumes_either_way(ray_cluster, study_inputs, tmp_path):
    from synthgap.experiments import run_transfer

    real, synth, cfg = study_inputs
    serial = tmp_path / "serial"
    run_transfer(str(real), str(synth), serial, cfg, progress=False)
    on_ray = tmp_path / "ray"
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    proc = synthgap("transfer", "--real", real, "--synthetic", synth, "--out", on_ray, *sets, "--ray", "--ray-cpus", 1)
    assert "transfer: [8/8] finetune-2 seed 1: finished" in proc.stderr  # each run, logged as it finishes
    summary = json.loads((serial / "summary.json").read_text())
    assert len(summary) == 4 * 2 * 2  # 4 training sets x 2 seeds x 2 test domains
    assert len({r["accuracy"] for r in summary}) > 3  # the runs differ: an equal summary says something
    assert json.loads((on_ray / "summary.json").read_text()) == summary  # seed for seed, in the same order
    assert losses(on_ray) == losses(serial) and len(losses(serial)) == 8
    assert (on_ray / "report.html").is_file()
    # An interrupted study (one run without its metrics) resumes on Ray: that run alone trains again.
    before = run_times(serial)
    lost = "runs/real/seed0/metrics.json"
    (serial / lost).unlink()
    run_transfer(str(real), str(synth), serial, cfg, progress=False, ray="local")
    after = run_times(serial)
    assert {k for k in before if after[k] != before[k]} == {lost}
    assert json.loads((serial / "summary.json").read_text()) == summary


def test_the_detector_matrix_on_ray_gives_the_serial_rows_and_reads_finished_cells_back(ray_cluster, tmp_path):
    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.data import load_sources
    from synthgap.detect.generalise import cross_matrix

    real = make_image_folder(tmp_path / "real", CLASSES[:2], 12, size=32, seed=1)
    gens = tmp_path / "generators"
    for k, name in enumerate(("one", "two")):
        make_image_folder(gens / name, CLASSES[:2], 8, size=32, seed=10 + k)
    loaded = load_sources([str(real)], [str(gens)], classes=CLASSES[:2], size=32, progress=False)
    base = DetectorConfig(backbone="airnet", classes=CLASSES[:2], image_size=32, val_fraction=0.2)
    stage = {"epochs": 1, "batch_size": 8, "threads": 1}
    cfg = dataclasses.replace(
        base, scratch=dataclasses.replace(base.scratch, **stage), head=dataclasses.replace(base.head, **stage)
    )

    def rows(result):  # all but the wall-clock seconds
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in result["rows"]]

    serial = cross_matrix(loaded, cfg, ["airnet"], tmp_path / "serial", progress=False)
    assert len(serial["rows"]) == 3 * 2  # detectors only one, only two, all; each tested on both sources
    on_ray = cross_matrix(loaded, cfg, ["airnet"], tmp_path / "ray", progress=False, ray="local")
    assert rows(on_ray) == rows(serial)
    cells = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "serial" / "airnet").glob("*/detector.json")}
    assert set(cells) == {"only-one", "only-two", "all"}
    (tmp_path / "serial" / "airnet" / "only-two" / "detector.json").unlink()
    again = cross_matrix(loaded, cfg, ["airnet"], tmp_path / "serial", progress=False, ray="local")
    now = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "serial" / "airnet").glob("*/detector.json")}
    assert {k for k in cells if now[k] != cells[k]} == {"only-two"}
    assert rows(again) == rows(serial)
