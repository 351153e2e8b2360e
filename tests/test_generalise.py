"""Detectors beyond their training data: several sources in equal shares, `detector evaluate` on any data,
the generalisation matrix of `detector cross`, and the NPR backbone."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from synthgap import SynthgapError
from synthgap.data.sides import parse_sides, parse_sources
from synthgap.detect.config import DetectorConfig
from synthgap.detect.data import equal_shares, load_detector_data, load_sources
from synthgap.detect.generalise import cross_matrix, detector_sets, evaluate_bundle
from synthgap.detect.train import run_detector

CLASSES = ["bird", "cat"]


def stamp(folder: Path, kind: str) -> Path:
    """Plant a generator's trace in every image of `folder`, saved as JPEG q90 like the real side."""
    for p in sorted(folder.rglob("*.png")):
        a = np.asarray(Image.open(p).convert("RGB")).astype(np.int16)
        if kind == "grid":
            a[::4, :, :] += 50
        elif kind == "stripes":
            a[:, ::3, 1] -= 50
        elif kind == "checker":
            a[::2, ::2, :] += 40
        p.unlink()
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p.with_suffix(".jpg"), "JPEG", quality=90)
    return folder


def jpeg_folder(folder: Path) -> Path:
    return stamp(folder, "none")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    real = jpeg_folder(make_image_folder(root / "real", CLASSES, 30, size=32, seed=1))
    gens = root / "generators"  # a folder with a sub-folder per generator
    for k, kind in enumerate(("grid", "stripes", "checker")):
        stamp(make_image_folder(gens / kind, CLASSES, 10 + 10 * k, size=32, seed=10 + k), kind)
    return real, gens


def tiny(epochs: int = 4, **kw) -> DetectorConfig:
    stage = dict(epochs=epochs, batch_size=16, threads=2)
    base = DetectorConfig(
        backbone="airnet",
        classes=CLASSES,
        image_size=32,
        val_fraction=0.2,
        scratch=dataclasses.replace(DetectorConfig().scratch, **stage, lr=0.05),
    )
    return dataclasses.replace(base, **kw)


def test_a_folder_per_generator_and_named_specs_are_sources(sources, tmp_path):
    real, gens = sources
    assert [s.name for s in parse_sources([str(gens)])] == ["checker", "grid", "stripes"]
    assert [s.name for s in parse_sources([f"a={gens / 'grid'}", str(real)])] == ["a", "real"]
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": str(p), "label": "bird", "generator": g}) + "\n"
            for g in ("sd", "gan")
            for p in sorted((gens / "grid").rglob("*.jpg"))[:3]
        )
    )
    assert [(s.name, s.generator) for s in parse_sources([str(manifest)])] == [("mixed:gan", "gan"), ("mixed:sd", "sd")]


def test_sources_are_drawn_in_equal_shares(sources):
    real, gens = sources
    data = load_detector_data(real=[str(real)], synthetic=[str(gens)], classes=CLASSES, size=32, progress=False)
    drawn = {name: row["train_drawn"] for name, row in data.sources["synthetic"].items()}
    distinct = {name: row["train"] for name, row in data.sources["synthetic"].items()}
    assert max(drawn.values()) - min(drawn.values()) <= 1  # equal shares...
    assert distinct["grid"] < distinct["checker"]  # ...of sources of different sizes (the small one repeated)
    assert sum(drawn.values()) == sum(1 for y in data.train.labels.tolist() if y == 1)
    # equal_shares itself: one label, two sources of 2 and 8 images, 6 wanted
    from synthgap.data import ImageSet

    s = ImageSet(
        torch.zeros(10, 3, 4, 4, dtype=torch.uint8),
        torch.zeros(10, dtype=torch.long),
        ["x"],
        sources=["a"] * 2 + ["b"] * 8,
    )
    idx = equal_shares(s, 6, np.random.default_rng(0), repeat=True)
    assert sorted(s.sources[i] for i in idx) == ["a"] * 3 + ["b"] * 3 and len(set(idx[:3].tolist()) & {0, 1}) == 2
    idx = equal_shares(s, 6, np.random.default_rng(0), repeat=False)
    assert sorted(s.sources[i] for i in idx) == ["a"] * 2 + ["b"] * 3  # no repeats: the small one whole


def test_evaluate_on_the_training_data_reproduces_the_test_metrics(sources, tmp_path):
    real, gens = sources
    cfg = tiny()
    data = load_detector_data(
        real=[str(real)],
        synthetic=[str(gens / "grid")],
        classes=CLASSES,
        size=32,
        val_fraction=cfg.val_fraction,
        progress=False,
    )
    meta = run_detector(data, cfg, tmp_path / "det", progress=False)
    r = evaluate_bundle(
        tmp_path / "det", tmp_path / "eval", real=[str(real)], synthetic=[str(gens / "grid")], progress=False
    )
    # Every training image is an exact twin of the bundle's training data: dropped; what is left is its test split.
    assert r["test"]["n"] == meta["metrics"]["n"]
    assert r["test"]["accuracy"] == pytest.approx(meta["metrics"]["accuracy"])
    assert r["test"]["auc"] == pytest.approx(meta["metrics"]["auc"])
    assert r["threshold"] == meta["threshold"] and r["audit_against_training_data"] == "checked"
    assert (tmp_path / "eval" / "report.html").is_file() and "Per source" in (
        tmp_path / "eval" / "report.html"
    ).read_text()
    # On another generator: the same threshold, its own figures, and the domain check counted.
    other = evaluate_bundle(
        tmp_path / "det",
        tmp_path / "eval2",
        real=[str(real)],
        synthetic=[str(gens / "stripes")],
        split="test",
        progress=False,
    )
    assert other["threshold"] == meta["threshold"] and other["domain"]["checked"] == other["test"]["n"]
    assert {row["source"] for row in other["per_source"]} == {"real", "stripes"}


def test_folders_of_one_name_on_both_sides_become_distinct_sources(tmp_path, caplog):
    # `--real DATA/cifar10-jpeg/test --synthetic DATA/cifake-sd14-fake/test`: both named "test" by their folder
    real = jpeg_folder(make_image_folder(tmp_path / "photos" / "test", CLASSES, 12, size=32, splits=(), seed=1))
    fake = stamp(make_image_folder(tmp_path / "generated" / "test", CLASSES, 12, size=32, splits=(), seed=2), "grid")
    with caplog.at_level(logging.INFO, logger="synthgap"):
        data = load_detector_data(real=str(real), synthetic=str(fake), classes=CLASSES, size=32, progress=False)
    assert "renamed" in caplog.text and "photos/test" in caplog.text
    assert list(data.sources["real"]) == ["photos/test"] and list(data.sources["synthetic"]) == ["generated/test"]
    for part in (data.train, data.val, data.test):  # every image tagged with its own side's source
        side = dict(zip(part.sources, part.labels.tolist()))
        assert side == {"photos/test": 0, "generated/test": 1}
    meta = run_detector(data, tiny(epochs=1), tmp_path / "det", progress=False)
    assert set(meta["sources"]["synthetic"]) == {"generated/test"}
    # evaluate re-reads the bundle's training sources (the audit against them) under the same names
    r = evaluate_bundle(tmp_path / "det", tmp_path / "eval", real=str(real), synthetic=str(fake), progress=False)
    assert r["audit_against_training_data"] == "checked" and r["test"]["n"] == meta["metrics"]["n"]
    assert {row["source"]: row["side"] for row in r["per_source"]} == {
        "photos/test": "real",
        "generated/test": "synthetic",
    }
    # Parent folders of one name too: the side tells them apart; a name repeated within a side stays an error.
    for side in ("a", "b"):
        (tmp_path / side / "data" / "test").mkdir(parents=True)
    a, b = str(tmp_path / "a" / "data" / "test"), str(tmp_path / "b" / "data" / "test")
    assert [[s.name for s in side] for side in parse_sides(a, [b, f"sd={fake}"])] == [
        ["real:test"],
        ["synthetic:test", "sd"],
    ]
    with pytest.raises(SynthgapError, match="source names repeat"):
        parse_sides([a, b], str(fake))


@pytest.mark.slow
def test_the_matrix_has_every_cell_and_leave_one_out_never_saw_its_source(sources, tmp_path):
    real, gens = sources
    loaded = load_sources([str(real)], [str(gens)], classes=CLASSES, size=32, progress=False)
    result = cross_matrix(
        loaded, tiny(epochs=1), ["airnet"], tmp_path / "cross", progress=False
    )  # 7 detectors: cells, not accuracy
    names = list(detector_sets(["checker", "grid", "stripes"]))
    assert names == [
        "only checker",
        "only grid",
        "only stripes",
        "without checker",
        "without grid",
        "without stripes",
        "all",
    ]
    cells = {(r["detector"], r["test_source"]) for r in result["rows"]}
    assert cells == {(d, s) for d in names for s in ("checker", "grid", "stripes")}
    for held in ("checker", "grid", "stripes"):
        meta = json.loads((tmp_path / "cross" / "airnet" / f"without-{held}" / "detector.json").read_text())
        assert held not in meta["sources"]["synthetic"] and len(meta["sources"]["synthetic"]) == 2
        # The data hashes it recorded: none of them is the held-out source's.
        held_hashes = {
            row[f"{split}_sha256"]
            for split in ("train", "test")
            for row in [
                json.loads((tmp_path / "cross" / "airnet" / f"only-{held}" / "detector.json").read_text())["sources"][
                    "synthetic"
                ][held]
            ]
        }
        mine = {v for row in meta["sources"]["synthetic"].values() for k, v in row.items() if k.endswith("sha256")}
        assert not held_hashes & mine
    seen = [r for r in result["rows"] if r["seen"]]
    assert len(seen) == 3 + 3 * 2 + 3 and all(
        r["detector"] == "all" or r["test_source"] in r["detector"] or r["detector"].startswith("without") for r in seen
    )
    summary = result["summary"][0]
    assert summary["backbone"] == "airnet" and 0 <= summary["unseen_leave_one_out_auc"] <= 1
    assert (tmp_path / "cross" / "airnet_auc.png").is_file() and "| only grid |" in (
        tmp_path / "cross" / "cross.md"
    ).read_text()
    again = cross_matrix(
        loaded, tiny(epochs=1), ["airnet"], tmp_path / "cross", progress=False
    )  # finished ones read back
    assert [r["auc"] for r in again["rows"]] == [r["auc"] for r in result["rows"]]


def test_npr_residual_is_zero_on_a_nearest_neighbour_upsampled_image_and_the_backbone_trains():
    from synthgap.detect.model import build_detector
    from synthgap.models.backbones import npr_residual

    small = torch.rand(2, 3, 16, 16)
    up = small.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.count_nonzero(npr_residual(up)) == 0
    assert npr_residual(torch.rand(2, 3, 32, 32)).abs().sum() > 0
    assert npr_residual(torch.rand(1, 3, 33, 31)).shape[-2:] == (32, 30)  # odd sides: whole 2 x 2 cells only
    model = build_detector("npr", pretrained=False)
    assert model(torch.rand(4, 3, 32, 32)).shape == (4, 1)
