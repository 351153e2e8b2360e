"""The detector at photo scale: windows of the images' own pixels (`input: crop`) against thumbnails
(`input: resize`), the DataLoader path for sets too large for memory, and one answer per file in
`synthgap detect`, /api/detect and the Check page.

Data: 512 x 384 images the tests draw (conftest.draw_photo); the "synthetic" ones carry a +-6 checkerboard
of period 2 px, which a thumbnail averages away and a window keeps.
"""

from __future__ import annotations

import dataclasses
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


def test_the_robustness_table_degrades_every_window_of_photos_at_their_own_pixels(photos):
    from synthgap.data import ImageSet
    from synthgap.detect.crops import eval_batches
    from synthgap.detect.evaluate import set_robustness
    from synthgap.detect.model import DetectorBundle, build_detector
    from synthgap.detect.train import bundle_meta
    from synthgap.train.robust import PERTURBATIONS

    files = sorted(str(p) for p in photos[0].glob("*.png"))[:3] + sorted(str(p) for p in photos[1].glob("*.png"))[:3]
    torch.manual_seed(0)
    model = build_detector("airnet", pretrained=False, input_size=64).eval()  # random weights: the inputs are the point
    cfg = dataclasses.replace(_config("crop"), backbone="airnet")
    bundle = DetectorBundle(model, bundle_meta(cfg, 0.5, model, (CROP, "input: crop")))
    s = ImageSet(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1]), ["x"], files=files)
    y, p = s.labels.numpy(), bundle.predict_set(s, workers=0).numpy()
    seen, predict = [], bundle.predict
    bundle.predict = lambda x: seen.append(x) or predict(x)  # what each degraded row is predicted on
    table, on = set_robustness(bundle, s, y, p, workers=0)
    assert [r["test set"] for r in table] == ["clean", *PERTURBATIONS]
    assert all(f"jpeg q{q}" in PERTURBATIONS for q in (95, 90, 75, 60)) and "downscale x0.5" in PERTURBATIONS
    assert on.startswith("6 images") and "every window degraded" in on
    clean = torch.cat([x for _, x in eval_batches(files, CROP, workers=0)]).flatten(0, 1)  # 6 photos x 4 windows
    assert [x.shape for x in seen] == [clean.shape] * len(PERTURBATIONS)  # windows at 64 px, not thumbnails
    err = {name: (x.float() - clean.float()).abs().mean().item() for name, x in zip(PERTURBATIONS, seen)}
    assert 0 < err["jpeg q95"] < err["jpeg q90"] < err["jpeg q75"] < err["jpeg q60"] < err["jpeg q50"], err
    assert err["downscale x0.5"] > 0 and err["blur sigma 1"] > 0


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


# ---------------------------------------------------------------- shortcuts: the input chain, the probes, the content check


def test_training_windows_are_rescaled_and_reencoded_alike_from_seeded_draws(photos):
    from synthgap.train.robust import jpeg

    plain = CROP
    chain = dataclasses.replace(CROP, rescale=(0.5, 1.0), jpeg_quality=(60, 90))
    assert not plain.augments and chain.augments
    # A chain that changes nothing draws what it always drew: two numbers per window, so old runs reproduce
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert plain.draws(5, g1) == [tuple(r) for r in torch.rand(5, 2, generator=g2).double().tolist()]
    draws = chain.draws(400, torch.Generator().manual_seed(3))
    assert draws == chain.draws(400, torch.Generator().manual_seed(3))
    scales, qualities = np.array([d[2] for d in draws]), np.array([d[3] for d in draws])
    assert 0.5 <= scales.min() and scales.max() <= 1 and scales.std() > 0.1
    assert qualities.min() == 60 and qualities.max() == 90 and len(set(qualities.tolist())) == 31
    files = sorted(str(p) for p in photos[1].glob("*.png"))[:1]
    src = torch.from_numpy(np.asarray(Image.open(files[0]).convert("RGB")).copy()).permute(2, 0, 1)
    views = CropViews(files, chain)
    # scale 0.5: a 128 px region shrunk to the 64 px window (bicubic, antialiased), then JPEG at its quality
    window = views[(0, 0.0, 0.0, 0.5, 0)]
    region = Image.fromarray(src[:, :128, :128].permute(1, 2, 0).numpy()).resize((64, 64), Image.Resampling.BICUBIC)
    assert torch.equal(window, torch.from_numpy(np.asarray(region).copy()).permute(2, 0, 1))
    assert torch.equal(views[(0, 0.0, 0.0, 1.0, 75)], jpeg(src[None, :, :64, :64], 75)[0])
    assert torch.equal(views[(0, 0.0, 0.0, 1.0, 0)], src[:, :64, :64])  # scale 1, no quality: the pixels as they are
    # Evaluation re-encodes every window at the chain's own quality
    evaluated = dataclasses.replace(chain, normalize_format=95)
    assert torch.equal(CropViews(files, evaluated)[0][0], jpeg(src[None, :, :64, :64], 95)[0])


def test_what_the_model_sees_has_no_format_to_learn_when_the_files_do(tmp_path):
    """JPEG photos against PNG ones of the same kind: the files' metadata separates the sides, the windows the
    model sees (rescaled, re-encoded at random qualities on both sides) do not."""
    from synthgap.detect.probes import seen_metadata
    from synthgap.detect.train import format_bias, input_chain

    real = make_photo_folder(tmp_path / "real", 30, planted=False, seed=5, ext="jpg")
    fake = make_photo_folder(tmp_path / "fake", 30, planted=False, seed=6)
    cfg = from_dict(DetectorConfig, {"crop_size": 64, "crop_grid": 2})
    loaded = load_sources(str(real), str(fake), classes=cfg.classes, size=32, dedupe="off", progress=False)
    data = assemble(loaded, val_fraction=0.1, seed=0)
    bias = format_bias(data, cfg)
    assert bias["biased"] and bias["per_feature"]["format"] > 0.9  # the files: JPEG against PNG
    seen = bias["seen_by_model"]
    assert seen == seen_metadata(data.train, input_chain(cfg, data.train)[0])  # seeded: the same sample again
    assert not seen["biased"] and seen["balanced_accuracy_without_file_size"] < 0.65, seen
    assert set(seen["real"]["formats"]) == set(seen["synthetic"]["formats"]) == {"JPEG"}
    assert "re-encoded at JPEG q65-100" in seen["on"]


def test_the_content_check_flags_features_far_from_every_training_image():
    from synthgap.detect.domain import KNN_QUANTILE, content_record, content_scores, verdicts

    g = torch.Generator().manual_seed(0)
    kinds = torch.eye(16)[:3]  # three kinds of training image, each a cluster in feature space

    def draw(n):
        return kinds[torch.arange(n) % 3] + 0.05 * torch.randn(n, 16, generator=g)

    bank, val = draw(200), draw(100)
    record = content_record(bank, val)
    assert record["quantile"] == KNN_QUANTILE and record["bank"] == 200
    assert (content_scores(val, bank) <= record["threshold"]).float().mean() == pytest.approx(KNN_QUANTILE, abs=0.011)
    near, far = kinds[1:2], torch.eye(16)[7:8]  # a training kind; a kind no training image is
    scores = content_scores(torch.cat([near, far]), bank)
    assert scores[0] < record["threshold"] < scores[1]
    meta = {"format": "JPEG", "width": 64, "height": 64, "jpeg_quality": 90}
    domain = {"width": [64, 64], "height": [64, 64], "formats": ["JPEG"], "jpeg_quality": [80, 95], "content": record}
    p = torch.tensor([0.9, 0.9])
    rec = verdicts(p, p.repeat(3), 0.5, [meta, meta], domain, content=scores)
    assert [r["rule"] for r in rec] == ["threshold", "outside_domain"]
    assert "content unlike its training images" in rec[1]["why"] and rec[1]["content_score"] > record["threshold"]
    assert rec[0]["domain"] == {"inside": True, "why": []}


@pytest.mark.slow
def test_a_photo_detector_stands_beside_its_probes_and_abstains_on_unfamiliar_content(detectors, photos, tmp_path):
    from synthgap.data.sets import ImageSet
    from synthgap.detect.model import DetectorBundle

    meta, folder = detectors["crop"]
    probes = meta["probes"]
    # The drawn trace is a 2 px checkerboard: windows keep it, 32 px thumbnails (the content probe) cannot
    assert meta["metrics"]["auc"] >= 0.95 and probes["content"]["auc"] <= 0.8, probes["content"]
    assert probes["content"]["image_size"] == 32 and "beyond the content probe" in probes["credited"]
    assert probes["metadata"]["seen_balanced_accuracy"] <= 0.65  # PNG both sides, and re-encoded alike
    assert {r["source"] for r in meta["per_source"]} == {"real", "fake"}
    assert detectors["resize"][0]["probes"]["content"]["skipped"].startswith("the detector itself reads 32 px")
    # Its ~10 validation images are too few to set the content check's threshold: it says so and checks nothing
    assert "too few" in meta["domain"]["content"]["skipped"] and load_bundle(folder).bank is None
    # With a bank of its training photos and 40 more drawn photos as validation, it abstains on unfamiliar
    # content: a drawn photo like the training ones is inside, white noise of the same size is not
    from synthgap.detect.domain import content_record

    bundle = load_bundle(folder)
    train_files = sorted(str(p) for p in photos[0].glob("*.png")) + sorted(str(p) for p in photos[1].glob("*.png"))
    val = make_photo_folder(tmp_path / "val", 40, planted=False, seed=7)
    bank = bundle.set_features(ImageSet(torch.zeros(0), torch.zeros(0), ["x"], files=train_files))
    val_files = sorted(str(p) for p in val.glob("*.png"))
    val_features = bundle.set_features(ImageSet(torch.zeros(0), torch.zeros(0), ["x"], files=val_files))
    content = content_record(bank, val_features)
    meta["domain"]["content"] = content
    DetectorBundle(bundle.model, meta, bank).save(tmp_path / "with-bank")
    bundle = load_bundle(tmp_path / "with-bank")
    assert bundle.bank is not None and bundle.bank.shape[0] == content["bank"] == len(train_files)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (384, 512, 3), dtype=np.uint8)).save(noise)
    a, b = bundle.assess_files([val_files[0], str(noise)])
    assert a["domain"]["inside"] and a["content_score"] <= content["threshold"], a
    assert b["content_score"] > 100 * a["content_score"]
    assert b["verdict"] == "outside the training domain" and "content unlike" in b["why"], b
    report = (folder / "report.html").read_text()
    assert "Beside its shortcut probes" in report and "Risk against coverage" in report
    metrics = json.loads((folder / "metrics.json").read_text())
    sel = metrics["selective"]
    assert len(sel["coverage"]) == len(sel["accuracy"]) == 20 and "decided" not in sel  # no content check here


def test_assemble_takes_the_sources_named_on_each_side(tmp_path):
    """Leaving a source out of training (a real source as well as a generator) keeps it out of every split."""
    r1, r2 = (make_photo_folder(tmp_path / n, 10, planted=False, seed=i, ext="jpg") for i, n in enumerate(["r1", "r2"]))
    f1, f2 = (make_photo_folder(tmp_path / n, 10, planted=True, seed=5 + i) for i, n in enumerate(["f1", "f2"]))
    loaded = load_sources(
        [f"r1={r1}", f"r2={r2}"], [f"f1={f1}", f"f2={f2}"], classes=["x"], size=32, dedupe="off", progress=False
    )
    everything = assemble(loaded, val_fraction=0.2, seed=0)
    assert {s for part in (everything.train, everything.val, everything.test) for s in part.sources} == {
        "r1",
        "r2",
        "f1",
        "f2",
    }
    chosen = assemble(loaded, real=["r2"], synthetic=["f1"], val_fraction=0.2, seed=0)
    for part in (chosen.train, chosen.val, chosen.test):
        assert set(part.sources) == {"r2", "f1"}
