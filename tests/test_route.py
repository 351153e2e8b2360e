"""Several detectors, one answer per image (synthgap.detect.route): each image goes to the first detector,
in the order given, whose training domain holds it; `synthgap detect` with several --model; the pipeline's
optional photo-detector stage and `synthgap serve RUN_DIR` loading both of its detectors.

Detectors: untrained airnet bundles (conftest.make_tiny_bundle) whose domain records say one was trained on
32 x 32 thumbnails and the other on photo-sized images; the stage test trains a tiny one on drawn photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_photo, make_photo_folder, make_tiny_bundle, synthgap
from PIL import Image

from synthgap import SynthgapError
from synthgap.detect.route import DetectorSet

THUMB_DOMAIN = {"width": [32, 32], "height": [32, 32], "formats": ["JPEG", "PNG"], "jpeg_quality": [40, 95]}
PHOTO_DOMAIN = {"width": [400, 640], "height": [300, 480], "formats": ["JPEG", "PNG"], "jpeg_quality": [70, 95]}
PROBES = {
    "metadata": {"balanced_accuracy": 0.61, "verdict": "file metadata alone tells the sides apart a little"},
    "content": {"auc": 0.96, "accuracy": 0.89, "image_size": 32},
    "credited": "its windows find traces that a 32 px thumbnail of the same images does not keep.",
}


def make_two_detectors(root: Path) -> tuple[Path, Path]:
    """The main job's kind of detector (32 px, named by its folder) and a photo detector (windows at native
    scale, named in its detector.json, with probe figures)."""
    thumb = make_tiny_bundle(root / "detector", domain=THUMB_DOMAIN)
    photo = make_tiny_bundle(
        root / "photos-v1",
        domain=PHOTO_DOMAIN,
        crop=True,
        name="photo-detector",
        probes=PROBES,
        metrics={"accuracy": 0.95, "auc": 0.99},
        seed=1,
    )
    return thumb, photo


def write_images(folder: Path) -> dict[str, Path]:
    """A 32 x 32 thumbnail, a 512 x 384 photo and a 5000 x 40 strip (no detector's kind of image), as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {"thumb": folder / "thumb.png", "photo": folder / "photo.png", "strip": folder / "strip.png"}
    draw_photo(rng, (32, 32)).save(out["thumb"])
    draw_photo(rng, (512, 384)).save(out["photo"])
    Image.new("RGB", (5000, 40), (120, 130, 140)).save(out["strip"])
    return out


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    return make_two_detectors(tmp_path_factory.mktemp("route"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("route-images"))


def test_each_image_goes_to_the_detector_whose_domain_holds_it(detectors, images):
    dset = DetectorSet.load(detectors)
    assert dset.names == ["detector", "photo-detector"]  # folder name; detector.json's name
    seen = {name: [] for name in dset.names}
    for member in dset.members:  # which images each detector's model runs on
        original = member.bundle.assess_files

        def spy(paths, _original=original, _name=member.name):
            seen[_name] += [Path(p).name for p in paths]
            return _original(paths)

        member.bundle.assess_files = spy
    thumb, photo, strip = dset.assess_files([str(images[k]) for k in ("thumb", "photo", "strip")])
    # The cheap metadata check keeps each model off the images it may not answer.
    assert seen == {"detector": ["thumb.png"], "photo-detector": ["photo.png"]}

    assert thumb["answered_by"]["name"] == "detector" and thumb["domain"]["inside"]
    assert thumb["answered_by"]["input"] == "32 px thumbnails" and "views" not in thumb
    assert thumb["routing"] == {
        "order": ["detector", "photo-detector"],
        "tried": [{"name": "detector", "inside": True, "why": []}],
    }

    by = photo["answered_by"]
    assert (by["name"], by["backbone"], by["input"]) == ("photo-detector", "airnet", "windows at native scale")
    assert by["test_auc"] == 0.99 and by["probes"]["content"] == {"auc": 0.96, "accuracy": 0.89, "image_size": 32.0}
    assert photo["views"]["n"] == 4 and photo["verdict"] in ("real", "synthetic", "unsure")
    assert photo["routing"]["tried"] == [
        {"name": "detector", "inside": False, "why": ["size 512x384 px, trained on 32x32 px"]},
        {"name": "photo-detector", "inside": True, "why": []},
    ]

    assert strip["verdict"] == "outside the training domain" and strip["rule"] == "outside_domain"
    assert strip["answered_by"] is None and strip["p_synthetic"] is None and not strip["reliable"]
    assert strip["why"] == (
        "outside the training domain of every detector: detector (size 5000x40 px, trained on 32x32 px), "
        "photo-detector (size 5000x40 px, trained on 400-640x300-480 px)"
    )
    assert [t["name"] for t in strip["routing"]["tried"]] == ["detector", "photo-detector"]


def test_a_lone_detector_answers_every_image_as_before(detectors, images):
    from synthgap.detect.model import load_bundle

    paths = [str(images[k]) for k in ("thumb", "photo")]
    before = load_bundle(detectors[0]).assess_files(paths)
    after = DetectorSet.load(detectors[:1]).assess_files(paths)
    for old, new in zip(before, after):
        assert {k: new[k] for k in old} == old  # the same record, with answered_by and routing added
        assert new["answered_by"]["name"] == "detector"
    assert after[1]["verdict"] == "outside the training domain" and after[1]["p_synthetic"] is not None


def test_in_memory_images_without_file_metadata_are_routed_by_their_size(detectors):
    rng = np.random.default_rng(3)
    dset = DetectorSet.load(detectors)
    small, large = draw_photo(rng, (32, 32)), draw_photo(rng, (480, 360))
    a, b = dset.assess([small, large], [None, None], band=0.1)
    assert (a["answered_by"]["name"], b["answered_by"]["name"]) == ("detector", "photo-detector")
    assert dset.only("photo-detector").names == ["photo-detector"]
    with pytest.raises(SynthgapError, match="unknown detector 'nope'"):
        dset.only("nope")


def test_two_detectors_with_the_same_folder_name_are_told_apart(tmp_path):
    a = make_tiny_bundle(tmp_path / "run-a" / "detector", domain=THUMB_DOMAIN)
    b = make_tiny_bundle(tmp_path / "run-b" / "detector", domain=PHOTO_DOMAIN)
    assert DetectorSet.load([a, b]).names == ["run-a/detector", "run-b/detector"]


def test_cli_detect_with_two_models_names_the_detector_that_answered(detectors, images):
    paths = [str(images[k]) for k in ("thumb", "photo", "strip")]
    args = ["detect", *paths, "--model", str(detectors[0]), "--model", str(detectors[1])]
    rows = [json.loads(line) for line in synthgap(*args, "--json").stdout.splitlines()]
    assert [r["answered_by"] and r["answered_by"]["name"] for r in rows] == ["detector", "photo-detector", None]
    assert rows[2]["answer"] == {
        "verdict": "outside the training domain",
        "decided_by": "pixel detector",
        "why": "no provenance found, which says nothing either way",
    }
    table = synthgap(*args).stdout.splitlines()
    assert "by detector (airnet, 32 px thumbnails)" in table[0]
    assert "by photo-detector (airnet, windows at native scale)" in table[1]
    assert table[2].split("\t")[1].startswith("-") and "by none of detector, photo-detector" in table[2]
    one = synthgap("detect", paths[0], "--model", str(detectors[0])).stdout
    assert "by detector" not in one  # one detector: the line as before


# ---------------------------------------------------------------- the pipeline's photo-detector stage


PIPELINE_YAML = """
out: {out}
photo_detector:
  real: [$SYNTHGAP_DATA/photos/real]
  synthetic: ['${{SYNTHGAP_DATA}}/photos/ai']
  config:
    backbone: airnet
    head: {{epochs: 2}}
"""


def test_the_pipeline_config_takes_a_photo_detector_stage_and_skips_an_absent_one(tmp_path, monkeypatch):
    from synthgap.config import load_config
    from synthgap.experiments.config import PipelineConfig
    from synthgap.experiments.pipeline import photo_specs, run_pipeline_photo_detector

    monkeypatch.setenv("SYNTHGAP_DATA", str(tmp_path / "data"))
    (tmp_path / "p.yaml").write_text(PIPELINE_YAML.format(out=tmp_path / "run"))
    cfg = load_config(PipelineConfig, tmp_path / "p.yaml")
    pd = cfg.photo_detector
    assert pd.real == ["$SYNTHGAP_DATA/photos/real"] and pd.config.backbone == "airnet"
    assert pd.config.head.epochs == 2 and pd.config.head.batch_size == 256  # the detector's stage defaults kept
    assert pd.config.window_jpeg and pd.config.eval_jpeg  # both sides re-encoded alike: the photo chain
    assert photo_specs(cfg) == ([str(tmp_path / "data/photos/real")], [str(tmp_path / "data/photos/ai")])
    cfg.root = str(tmp_path / "elsewhere")  # the config's data root wins over the variable
    assert photo_specs(cfg)[0] == [str(tmp_path / "elsewhere/photos/real")]

    absent = PipelineConfig(out=str(tmp_path / "plain"))
    assert photo_specs(absent) is None
    assert run_pipeline_photo_detector(absent, tmp_path / "plain" / "photo-detector") is None
    assert not (tmp_path / "plain").exists()

    half = load_config(PipelineConfig, None, ["photo_detector.real=[a]"])
    with pytest.raises(SynthgapError, match="'photo_detector.synthetic': empty"):
        photo_specs(half)
    unset = load_config(
        PipelineConfig, None, ["photo_detector.real=[$NO_SUCH_VAR_SG/x]", "photo_detector.synthetic=[b]"]
    )
    with pytest.raises(SynthgapError, match=r"'photo_detector.real\[0\]'.*not set"):
        photo_specs(unset)
    bad = load_config(
        PipelineConfig,
        None,
        ["photo_detector.real=[a]", "photo_detector.synthetic=[b]", "photo_detector.config.val_fraction=2"],
    )
    with pytest.raises(SynthgapError, match="photo_detector.config.val_fraction"):
        photo_specs(bad)


@pytest.mark.slow
def test_the_photo_detector_stage_trains_resumes_and_serves_beside_the_detector(tmp_path, monkeypatch):
    from synthgap.config import dump_yaml, load_config
    from synthgap.experiments import pipeline
    from synthgap.experiments.config import PipelineConfig
    from synthgap.serve import ServeConfig, create_app

    data = tmp_path / "data"
    make_photo_folder(data / "photos" / "real", 12, planted=False, size=(96, 72), seed=1)
    make_photo_folder(data / "photos" / "ai", 12, planted=True, size=(96, 72), seed=2)
    monkeypatch.setenv("SYNTHGAP_DATA", str(data))
    run = tmp_path / "run"
    overrides = [
        f"out={run}",
        "generator=builtin",  # no generator folder: served without one
        "photo_detector.real=[$SYNTHGAP_DATA/photos/real]",
        "photo_detector.synthetic=[$SYNTHGAP_DATA/photos/ai]",
        "photo_detector.config.backbone=airnet",
        "photo_detector.config.crop_size=32",
        "photo_detector.config.crop_grid=2",
        "photo_detector.config.dedupe='off'",
        "photo_detector.config.val_fraction=0.25",
        "photo_detector.config.scratch.epochs=1",
        "photo_detector.config.scratch.batch_size=8",
    ]
    cfg = load_config(PipelineConfig, None, overrides)
    meta = pipeline.run_pipeline_photo_detector(cfg, run / "photo-detector", progress=False)
    assert meta["preprocessing"]["input"] == "crop" and meta["domain"]["width"] == [96, 96]
    assert (run / "photo-detector" / "detector.json").is_file()

    def no_training(*a, **kw):
        raise AssertionError("a finished photo detector is read back, not trained again")

    monkeypatch.setattr("synthgap.detect.train.run_detector", no_training)
    again = pipeline.run_pipeline_photo_detector(cfg, run / "photo-detector", progress=False)
    assert again["created"] == meta["created"]

    # The folder a pipeline leaves: `synthgap serve RUN_DIR` loads its detector and its photo detector.
    (run / "pipeline.yaml").write_text(dump_yaml(cfg))
    make_tiny_bundle(run / "detector", domain=THUMB_DOMAIN)
    serve_cfg = ServeConfig.load({}, run=str(run))
    assert serve_cfg.detector == [str(run / "detector"), str(run / "photo-detector")]
    client = create_app(serve_cfg).test_client()
    rng = np.random.default_rng(5)
    answers = {}
    for size in ((32, 32), (96, 72)):
        import io

        buf = io.BytesIO()
        draw_photo(rng, size).save(buf, "PNG")
        r = client.post("/api/detect", data={"image": (io.BytesIO(buf.getvalue()), "x.png")})
        assert r.status_code == 200, r.json
        answers[size] = r.json["answered_by"]["name"]
    assert answers == {(32, 32): "detector", (96, 72): "photo-detector"}
