"""The detector at photo scale: windows of the images' own pixels (`input: crop`) against thumbnails
(`input: resize`), the DataLoader path for sets too large for memory, and one answer per file in
`synthgap detect`, /api/detect and the Check page.

Data: 512 x 384 images the tests draw (conftest.draw_photo); the "synthetic" ones carry a +-6 checkerboard
of period 2 px, which a thumbnail averages away and a window keeps.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import draw_photo, make_photo_folder
from PIL import Image

from synthgap.cli import cli
from synthgap.config import from_dict
from synthgap.detect.config import DetectorConfig
from synthgap.detect.crops import CropViews, InputChain, RandomCrops, resolve_input
from synthgap.detect.data import assemble, load_sources
from synthgap.detect.model import load_bundle
from synthgap.detect.train import run_detector

CROP = InputChain("crop", image_size=32, crop_size=64, crop_grid=2)


def _config(mode: str) -> DetectorConfig:
    return from_dict(
        DetectorConfig,
        {
            "backbone": "npr",
            "input": mode,
            "crop_size": 64,
            "crop_grid": 2,
            "image_size": 32,
            "workers": 1,
            "scratch": {"epochs": 12, "batch_size": 16},
        },
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return make_photo_folder(root / "real", 60, planted=False, seed=1), make_photo_folder(
        root / "fake", 60, planted=True, seed=2
    )


@pytest.fixture(scope="module")
def detectors(photos, tmp_path_factory):
    """One detector per input mode, trained on the same photos with the same config otherwise."""
    out = {}
    for mode in ("crop", "resize"):
        cfg = _config(mode)
        loaded = load_sources(
            str(photos[0]), str(photos[1]), classes=cfg.classes, size=cfg.image_size, dedupe="off", progress=False
        )
        data = assemble(loaded, val_fraction=cfg.val_fraction, seed=cfg.seed)
        folder = tmp_path_factory.mktemp(f"detector-{mode}")
        out[mode] = (run_detector(data, cfg, folder, progress=False), folder)
    return out


@pytest.mark.slow
def test_windows_learn_a_trace_that_thumbnails_destroy(detectors):
    crop, resize = detectors["crop"][0], detectors["resize"][0]
    assert crop["metrics"]["auc"] >= 0.95, crop["metrics"]
    assert resize["metrics"]["auc"] <= 0.8, resize["metrics"]  # at 32 px the checkerboard is gone
    pre = crop["preprocessing"]
    assert (pre["input"], pre["crop_size"], pre["crop_grid"], pre["views"]) == ("crop", 64, 2, 4)
    assert crop["architecture"]["input_size"] == 64  # windows reach the backbone unresampled
    assert "upscaled" in pre["small_images"] and "own scale" in pre["input_why"]
    assert resize["preprocessing"]["input"] == "resize" and "crop_size" not in resize["preprocessing"]
    assert crop["domain"]["width"] == [512, 512] and crop["domain"]["height"] == [384, 384]  # native sizes


def test_windows_are_pixel_exact_copies_of_the_file(photos):
    files = sorted(str(p) for p in photos[1].glob("*.png"))[:4]
    views = CropViews(files, CROP)
    native = np.asarray(Image.open(files[0]).convert("RGB"))
    grid = views[0].permute(0, 2, 3, 1).numpy()  # the 2 x 2 grid runs corner to corner
    assert np.array_equal(grid[0], native[:64, :64]) and np.array_equal(grid[3], native[-64:, -64:])
    assert np.array_equal(grid[1], native[:64, -64:]) and np.array_equal(grid[2], native[-64:, :64])
    for i, f in enumerate(files):
        window = views[(i, 0.37, 0.81)].permute(1, 2, 0).numpy()
        src = np.asarray(Image.open(f).convert("RGB"))
        top, left = int(0.37 * (384 - 64 + 1)), int(0.81 * (512 - 64 + 1))
        assert np.array_equal(window, src[top : top + 64, left : left + 64])


def test_a_small_image_is_upscaled_to_a_window_and_thumbnail_data_is_taken_whole(tmp_path):
    small = draw_photo(np.random.default_rng(0), size=(48, 40))
    views = CROP.eval_views(small)
    assert views.shape == (4, 3, 64, 64)
    thumbs = make_photo_folder(tmp_path / "thumbs", 4, planted=False, size=(32, 32))
    mode, why = resolve_input("crop", 224, sorted(str(p) for p in thumbs.glob("*.png")))
    assert mode == "resize" and "thumbnail-sized" in why and "32 px" in why
    assert resolve_input("crop", 224, [])[0] == "resize"


def test_the_dataloader_gives_the_batches_of_the_in_memory_path(photos):
    files = sorted(str(p) for p in photos[0].glob("*.png"))[:12] + sorted(str(p) for p in photos[1].glob("*.png"))[:12]
    in_memory = RandomCrops(files, CROP, in_memory_mb=1024, progress=False)
    loader = RandomCrops(files, CROP, workers=2, in_memory_mb=0, progress=False)
    assert in_memory.in_memory and not loader.in_memory
    for epoch in range(2):
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(epoch))
        a = list(in_memory.epoch(order, 8, 3, torch.Generator().manual_seed(100 + epoch)))
        b = list(loader.epoch(order, 8, 3, torch.Generator().manual_seed(100 + epoch)))
        assert len(a) == len(b) == 3 and all(x.shape == (8, 3, 64, 64) for x in a)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    other = list(loader.epoch(order, 8, 3, torch.Generator().manual_seed(7)))  # another draw: other windows
    assert not all(torch.equal(x, y) for x, y in zip(a, other))


def test_one_file_gets_one_answer_from_detect_the_api_and_the_check_page(detectors, photos, tmp_path):
    from synthgap.serve import ServeConfig, create_app

    folder = detectors["crop"][1]
    photo = str(next(iter(sorted(photos[1].glob("*.png")))))
    first = load_bundle(folder).assess_files([photo])[0]
    again = load_bundle(folder).assess_files([photo])[0]
    assert first == again  # the windows are fixed: a reloaded bundle says exactly the same
    assert first["views"]["n"] == 4 and first["views"]["p_min"] <= first["p_synthetic"] <= first["views"]["p_max"]
    result = CliRunner().invoke(cli, ["detect", photo, "--model", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    cli_rec = json.loads(result.output.splitlines()[-1])
    client = create_app(ServeConfig(detector=str(folder))).test_client()
    data = open(photo, "rb").read()
    api = client.post(
        "/api/detect", data={"image": (io.BytesIO(data), "x.png")}, content_type="multipart/form-data"
    ).json
    for rec in (cli_rec, api):
        assert rec["p_synthetic"] == pytest.approx(first["p_synthetic"], abs=1e-6)
        assert rec["verdict"] == first["verdict"] and rec["views"]["n"] == 4
    page = client.post(
        "/check", data={"image": (io.BytesIO(data), "x.png")}, content_type="multipart/form-data"
    ).get_data(as_text=True)
    assert f"{100 * first['p_synthetic']:.1f}%" in page
    assert "mean over 4 windows" in page
