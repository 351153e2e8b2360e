"""One loader for every saved model (synthgap.artifacts): each kind records `kind` and `format_version`,
round-trips through load_artifact, still loads when written before they were recorded, and refuses a newer
format or a folder of no model in one line; a pipeline run folder stands for the model `synthgap serve
RUN_DIR` takes from it, in the Python API and in every command that takes a model. Tiny untrained models."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_photo_folder, make_pipeline_run, make_tiny_bundle, synthgap
from PIL import Image

from synthgap import SynthgapError
from synthgap.artifacts import (
    KINDS,
    artifact_kind,
    load_artifact,
    models_of_run,
    resolve_model,
    resolve_models,
)

CLASSES = ["bird", "cat", "frog"]
PHOTO_DOMAIN = {"width": [400, 640], "height": [300, 480], "formats": ["JPEG", "PNG"], "jpeg_quality": [70, 95]}


def make_classifier(folder: Path) -> Path:
    """What `synthgap train` writes, with an untrained airnet."""
    from synthgap.models import build_model
    from synthgap.train.classifier import classifier_meta, save_classifier
    from synthgap.train.config import TrainConfig

    cfg = TrainConfig(widths=[8, 16, 16])
    torch.manual_seed(0)
    meta = classifier_meta(cfg, CLASSES, 32, {"accuracy": 0.5}, {"spec": "shapes", "n": 30}, name=folder.name)
    return save_classifier(folder, build_model("airnet", len(CLASSES), widths=cfg.widths), meta)


def make_generator(folder: Path) -> Path:
    """What `synthgap generator train` exports, untrained (the tiny preset)."""
    from synthgap.generate.builtin import GeneratorTrainer
    from synthgap.generate.config import GeneratorConfig

    return GeneratorTrainer(GeneratorConfig(preset="tiny", classes=CLASSES, threads=1), folder).export()


def make_autoencoder(folder: Path, photos: Path) -> Path:
    """What `synthgap autoencoder train` writes, after two steps."""
    from synthgap.detect.autoencoder import AutoencoderConfig, train_autoencoder

    cfg = AutoencoderConfig(
        block_out_channels=[8, 16],
        norm_num_groups=4,
        window=32,
        batch_size=2,
        steps=2,
        checkpoint_every=2,
        warmup=1,
        eval_images=2,
        perceptual=0.0,
        threads=1,
    )
    return train_autoencoder(str(photos), folder, cfg, progress=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("artifacts")
    make_photo_folder(root / "photos", 4, planted=False, size=(48, 40))
    return {
        "classifier": make_classifier(root / "classifier"),
        "detector": make_tiny_bundle(root / "detector"),
        "generator": make_generator(root / "generator"),
        "autoencoder": make_autoencoder(root / "autoencoder", root / "photos"),
    }


@pytest.fixture(scope="module")
def run(models, tmp_path_factory) -> Path:
    """The layout `synthgap pipeline` writes: two transfer runs (the better one on real test images is the one
    served), its detector and photo detector, its generator."""
    run = make_pipeline_run(
        tmp_path_factory.mktemp("runs") / "pipeline-test",
        models["classifier"],
        models["detector"],
        models["generator"],
        {"real": 0.7, "synthetic": 0.4},
    )
    make_tiny_bundle(run / "photo-detector", domain=PHOTO_DOMAIN, crop=True, seed=1)
    return run


def legacy_copy(folder: Path, dest: Path) -> Path:
    """A copy of `folder` as a synthgap of before `kind` and `format_version` were recorded would have left it."""
    shutil.copytree(folder, dest)
    for k in KINDS.values():
        meta = dest / k.meta
        if meta.is_file():
            record = json.loads(meta.read_text())
            record.pop("kind", None), record.pop("format_version", None)
            meta.write_text(json.dumps(record))
    return dest


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- every kind


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_records_its_kind_and_format_and_round_trips(models, kind):
    meta = json.loads((models[kind] / KINDS[kind].meta).read_text())
    assert (
        (meta["kind"], meta["format_version"])
        == (f"synthgap-{kind}", KINDS[kind].format_version)
        == (
            KINDS[kind].recorded,
            1,
        )
    )
    assert artifact_kind(models[kind]) == kind
    loaded = load_artifact(models[kind], device="cpu")
    again = load_artifact(models[kind], kind, device="cpu")
    assert type(loaded) is type(again)
    if kind == "classifier":
        assert loaded.classes == CLASSES and loaded.image_size == 32 and "format_version" not in loaded.info
    elif kind == "detector":
        assert loaded.meta["kind"] == "synthgap-detector" and loaded.threshold == 0.5
    elif kind == "generator":
        assert type(loaded).__name__ == "ClassConditionalPipeline" and list(loaded.config.class_names) == CLASSES
    else:
        vae, record = loaded
        assert type(vae).__name__ == "AutoencoderKL" and record["kind"] == "synthgap-autoencoder"


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_folder_written_before_kind_and_format_were_recorded_still_loads(models, kind, tmp_path):
    old = legacy_copy(models[kind], tmp_path / kind)
    assert "kind" not in json.loads((old / KINDS[kind].meta).read_text())
    assert artifact_kind(old) == kind
    assert type(load_artifact(old, device="cpu")) is type(load_artifact(models[kind], device="cpu"))


def test_an_old_classifier_gives_the_same_answers(models, tmp_path):
    old = legacy_copy(models["classifier"], tmp_path / "old")
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(load_artifact(old).predict(x), load_artifact(models["classifier"]).predict(x))


@pytest.mark.parametrize("kind", ["classifier", "detector", "generator"])
def test_a_newer_format_is_a_one_line_error(models, kind, tmp_path):
    folder = shutil.copytree(models[kind], tmp_path / kind)
    meta = json.loads((folder / KINDS[kind].meta).read_text())
    meta["format_version"] = 3
    (folder / KINDS[kind].meta).write_text(json.dumps(meta))
    for call in (lambda: load_artifact(folder), lambda: artifact_kind(folder)):
        with pytest.raises(SynthgapError) as e:
            call()
        assert one_line(e) == (
            f"{folder / KINDS[kind].meta}: made by a newer synthgap (format 3; this one reads up to 1): upgrade synthgap"
        )
    # the kind's own loader says the same
    module, name = KINDS[kind].loader.split(":")
    with pytest.raises(SynthgapError, match="made by a newer synthgap"):
        getattr(importlib.import_module(module), name)(folder)


def test_an_unknown_kind_or_folder_is_a_one_line_error(models, run, tmp_path):
    folder = shutil.copytree(models["classifier"], tmp_path / "odd")
    meta = json.loads((folder / "classifier.json").read_text())
    meta["kind"] = "synthgap-hologram"
    (folder / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(SynthgapError) as e:
        load_artifact(folder)
    assert "'synthgap-hologram', which this synthgap does not know" in one_line(e) and "upgrade synthgap" in str(e)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SynthgapError) as e:
        load_artifact(empty)
    message = one_line(e)
    assert message.startswith(f"{empty}: not a synthgap model folder: expected classifier.json (classifier), ")
    assert "a pipeline run folder holds them under transfer/runs/<set>/seed<k>/, detector/" in message
    with pytest.raises(SynthgapError) as e:
        artifact_kind(empty)
    assert artifact_kind(empty, missing_ok=True) is None and artifact_kind("org/hub-id", missing_ok=True) is None
    with pytest.raises(SynthgapError) as e:
        load_artifact(run)  # a run folder holds several: which?
    assert "a pipeline run folder, not one model: say which kind" in one_line(e)
    with pytest.raises(SynthgapError) as e:
        load_artifact(models["detector"], "classifier")
    assert one_line(e).startswith(
        f"{models['detector']}: a detector bundle, not a classifier (expected classifier.json"
    )
    with pytest.raises(SynthgapError) as e:
        resolve_model(empty, "detector")
    assert "not a detector bundle (expected detector.json" in one_line(e) and "pipeline" in str(e)


# ---------------------------------------------------------------- pipeline run folders


def test_a_run_folder_resolves_to_what_serve_takes(run, models, tmp_path):
    found = models_of_run(run)
    assert found["classifier"] == str(run / "transfer" / "runs" / "real" / "seed0")  # the better on real images
    assert resolve_model(run, "classifier") == found["classifier"]
    assert resolve_models(run, "detector") == found["detector"] == [str(run / "detector"), str(run / "photo-detector")]
    assert resolve_model(run, "detector") == str(run / "detector")  # of two, its own: the first asked
    assert resolve_model(run, "generator") == found["generator"] == str(run / "generator")
    assert resolve_model(models["classifier"], "classifier") == str(models["classifier"])  # a model: as it is
    assert resolve_model("org/some-diffusers-model", "generator") == "org/some-diffusers-model"
    assert load_artifact(run, "classifier").name == "real/seed0"
    from synthgap.experiments.pipeline import models_of_run as from_pipeline

    assert from_pipeline is models_of_run
    with pytest.raises(SynthgapError) as e:
        resolve_model(run, "autoencoder")
    assert one_line(e) == f"{run}: a pipeline run folder without a synthgap autoencoder"
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "pipeline.yaml", bare)
    with pytest.raises(SynthgapError) as e:
        resolve_model(bare, "classifier")
    assert "without a classifier (none under transfer/runs/<set>/seed<k>/" in one_line(e)


def test_serve_flags_take_a_run_folder(run, models):
    from synthgap.serve import ServeConfig

    cfg = ServeConfig.load({}, classifier=str(run), detector=(str(run),), generator=str(run))
    whole = ServeConfig.load({}, run=str(run))
    assert (cfg.classifier, cfg.detector, cfg.generator) == (whole.classifier, whole.detector, whole.generator)
    one = ServeConfig.load({}, detector=(str(models["detector"]), str(run)))
    assert one.detector == [str(models["detector"]), str(run / "detector"), str(run / "photo-detector")]


def _image(path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(path)
    return path


def test_classify_and_detect_take_a_run_folder(run, tmp_path):
    image = _image(tmp_path / "im.png")
    by_run = synthgap("classify", image, "--model", run, "--json")
    by_folder = synthgap("classify", image, "--model", run / "transfer" / "runs" / "real" / "seed0", "--json")
    assert by_run.stdout == by_folder.stdout and json.loads(by_run.stdout)["label"] in CLASSES
    detected = synthgap("detect", image, "--model", run)
    assert (
        detected.stdout
        == synthgap("detect", image, "--model", run / "detector", "--model", run / "photo-detector").stdout
    )
    wrong = synthgap("classify", image, "--model", run / "detector", check=False)
    assert wrong.returncode == 2 and "a detector bundle, not a classifier" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    help_text = " ".join(synthgap("classify", "--help").stdout.split())
    assert "or a `synthgap pipeline` run folder" in help_text


def test_generate_takes_a_run_folder(run, tmp_path):
    out = tmp_path / "set"
    synthgap("generate", "--model", run, "--classes", "bird", "--per-class", "1", "--out", out)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["generator"] == str((run / "generator").resolve())
