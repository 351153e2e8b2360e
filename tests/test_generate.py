"""Generation with a tiny diffusers pipeline saved to disk and loaded through the real from_pretrained path."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import synthgap
from PIL import Image

from synthgap import SynthgapError
from synthgap.generate import (
    DatasetGenerator,
    Templates,
    generate,
    image_seed,
    load_pipeline,
    read_manifest,
    read_metadata,
    reproduce,
    save_tiny_pipeline,
)
from synthgap.generate.config import GenerateConfig
from synthgap.io import sha256_file


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


def cfg_for(model, **kw):
    return GenerateConfig(
        **{"model": str(model), "classes": ["bird", "cat"], "per_class": 3, "steps": 2, "batch_size": 4, **kw}
    )


def check_folder(out: Path, classes, per_class):
    """Every manifest line has a complete image with its hash; every image has a line; exact counts."""
    rows, dropped = read_manifest(out)
    assert not dropped
    assert len(rows) == len({r["id"] for r in rows}) == len(classes) * per_class
    for c in classes:
        assert sum(r["label"] == c for r in rows) == per_class
    listed = {r["path"] for r in rows}
    on_disk = {p.relative_to(out).as_posix() for c in classes for p in (out / c).glob("*.png")}
    assert listed == on_disk
    for r in rows:
        assert sha256_file(out / r["path"]) == r["sha256"]
        with Image.open(out / r["path"]) as im:
            im.load()
    assert not list(out.rglob("*.tmp"))
    return rows


@pytest.fixture(scope="module")
def made(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "set"
    generate(cfg_for(tiny_model), out, progress=False)
    return out


def test_from_pretrained_loads_the_saved_tiny_pipeline(tiny_model):
    pipe = load_pipeline(str(tiny_model))
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_generate_writes_images_manifest_and_config(made):
    rows = check_folder(made, ["bird", "cat"], 3)
    r = rows[0]
    assert set(r) >= {"path", "label", "prompt", "seed", "generator", "sha256", "seconds", "source"}
    assert r["source"] == "synthetic" and "bird" in r["prompt"] or "sparrow" in r["prompt"] or "songbird" in r["prompt"]
    with Image.open(made / r["path"]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    saved = yaml.safe_load((made / "generation.yaml").read_text())
    assert saved["config"]["steps"] == 2 and saved["environment"]["diffusers"]
    assert len(saved["config_hash"]) == 16


def test_png_metadata_round_trip(made):
    for r in read_manifest(made)[0]:
        meta = read_metadata(made / r["path"])
        assert meta["prompt"] == r["prompt"] and meta["seed"] == r["seed"]
        assert meta["steps"] == 2 and meta["scheduler"] == "EulerDiscreteScheduler" and meta["size"] == 32


def test_png_metadata_is_one_json_chunk_and_pixels_are_deflated(tmp_path):
    from synthgap.generate.generator import _encode_png

    meta = {"prompt": "a photo of a cat", "seed": 7, "native_size": [512, 512]}
    small, large = Image.new("RGB", (32, 32), (90, 120, 30)), Image.new("RGB", (64, 64), (90, 120, 30))
    (tmp_path / "small.png").write_bytes(_encode_png(small, meta))
    (tmp_path / "large.png").write_bytes(_encode_png(large, meta))
    assert read_metadata(tmp_path / "small.png") == meta == read_metadata(tmp_path / "large.png")
    with Image.open(tmp_path / "small.png") as im:  # the record, then the AI-generated mark (XMP)
        assert list(im.text) == ["synthgap", "XML:com.adobe.xmp"] and np.array_equal(np.asarray(im), np.asarray(small))
    # Deflated at every size (a flat image shrinks to a fraction of its raw pixels).
    assert (tmp_path / "small.png").stat().st_size < 32 * 32 * 3 / 2
    assert (tmp_path / "large.png").stat().st_size < 64 * 64 * 3 / 10
    Image.new("RGB", (8, 8)).save(tmp_path / "other.png")
    with pytest.raises(SynthgapError, match=r"other\.png: no 'synthgap' record"):
        read_metadata(tmp_path / "other.png")


def test_a_jpeg_set_is_stored_like_the_real_one_and_still_carries_its_record(tiny_model, tmp_path):
    out = generate(
        cfg_for(tiny_model, image_format="jpeg", jpeg_quality=75, per_class=2), tmp_path / "jpeg", progress=False
    )
    rows = read_manifest(out)[0]
    assert len(rows) == 4 and all(r["path"].endswith(".jpg") for r in rows)
    from synthgap.detect.audit import file_metadata

    first = out / rows[0]["path"]
    assert file_metadata(first)["format"] == "JPEG" and file_metadata(first)["jpeg_quality"] == 75
    assert read_metadata(first)["seed"] == rows[0]["seed"]
    path, diff = reproduce(out, rows[1]["id"])
    assert diff == 0 and path.suffix == ".jpg"


def test_every_generated_image_is_marked_ai_generated_by_default(made):
    from synthgap.provenance import read_provenance

    for r in read_manifest(made)[0]:
        rec = read_provenance(made / r["path"])
        assert rec["code"] == "unsigned_ai" and rec["c2pa"] is None and "c2pa" not in r
        assert [m["where"] for m in rec["metadata"]] == [
            "XMP Iptc4xmpExt:DigitalSourceType",
            "XMP xmp:CreatorTool",
            "PNG text 'synthgap'",
        ]
        assert rec["metadata"][0]["what"] == "digital source type trainedAlgorithmicMedia"
        assert "synthgap" in rec["metadata"][1]["what"]


def test_sign_embeds_a_valid_manifest_per_image_and_says_what_it_costs(tiny_model, test_pki, tmp_path, caplog):
    import logging

    from synthgap.provenance import ProvenanceOptions, read_provenance
    from synthgap.provenance.mark import SignConfig

    caplog.set_level(logging.INFO, logger="synthgap")
    sign = SignConfig(str(test_pki["chain"]), str(test_pki["key"]))
    out = generate(cfg_for(tiny_model, per_class=2, native=True, sign=sign), tmp_path / "signed", progress=False)
    rows = check_folder(out, ["bird", "cat"], 2)
    trust = ProvenanceOptions(trust_anchors=str(test_pki["root"]))
    for r in rows:
        for path in (out / r["path"], out / "native" / r["path"]):
            rec = read_provenance(path, trust)
            assert rec["code"] == "signed_ai" and rec["c2pa"]["state"] == "trusted"
            params = rec["c2pa"]["actions"][0]["parameters"]
            assert (
                params["seed"] == str(r["seed"]) and params["class"] == r["label"] and params["prompt"] == r["prompt"]
            )
            assert params["model"] == str(tiny_model)
        assert r["c2pa"]["bytes_added"] > 1000 and r["c2pa"]["ms"] > 0
    assert "signed C2PA manifests: +" in caplog.text and "KB per image" in caplog.text
    # Signing is part of the folder's identity: the same folder unsigned is refused, not mixed.
    with pytest.raises(SynthgapError, match="differs in: sign"):
        generate(cfg_for(tiny_model, per_class=2, native=True), out, progress=False)


def test_a_bad_signing_certificate_fails_before_the_first_image(tiny_model, test_pki, tmp_path):
    from synthgap.provenance.mark import SignConfig

    with pytest.raises(SynthgapError, match="give both cert_chain and key"):
        generate(cfg_for(tiny_model, sign=SignConfig(str(test_pki["chain"]))), tmp_path / "a", progress=False)
    with pytest.raises(SynthgapError, match="not a PEM private key"):
        generate(
            cfg_for(tiny_model, sign=SignConfig(str(test_pki["chain"]), str(test_pki["root"]))),
            tmp_path / "b",
            progress=False,
        )
    with pytest.raises(SynthgapError, match="signing with .* failed"):  # the root's own key is not the signer's
        generate(
            cfg_for(tiny_model, sign=SignConfig(str(test_pki["root"]), str(test_pki["key"]))),
            tmp_path / "c",
            progress=False,
        )
    assert not (tmp_path / "c").exists()


def test_an_image_regenerated_alone_equals_the_one_made_in_a_batch(made):
    path, diff = reproduce(made, "cat_00002")
    assert diff <= 2  # same seed and prompt, batch of 4 vs alone
    assert path.is_file()
    with Image.open(path) as a, Image.open(made / "cat" / "cat_00002.png") as b:
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2


def test_rerun_skips_finished_images_and_batch_size_may_change(made, tiny_model):
    before = (made / "manifest.jsonl").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in made.rglob("*.png") if "reproduced" not in p.parts}
    generate(cfg_for(tiny_model, batch_size=1), made, progress=False)
    assert (made / "manifest.jsonl").read_text() == before
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_changed_config_is_refused_and_new_makes_a_fresh_folder(made, tiny_model):
    with pytest.raises(SynthgapError, match="different config.*steps"):
        generate(cfg_for(tiny_model, steps=3), made, progress=False)
    fresh = generate(cfg_for(tiny_model, steps=3, per_class=1), made, new=True, progress=False)
    assert fresh == made.parent / f"{made.name}-2" and len(read_manifest(fresh)[0]) == 2
    # --new again with the same config resumes that fresh folder instead of opening a third
    again = generate(cfg_for(tiny_model, steps=3, per_class=2), made, new=True, progress=False)
    assert again == fresh and len(read_manifest(fresh)[0]) == 4


def test_prompts_and_seeds_are_deterministic_and_diverse():
    t = Templates.load()
    assert t.prompt(0, "dog", 5) == t.prompt(0, "dog", 5)
    assert len({t.prompt(0, "dog", i) for i in range(40)}) > 20
    assert image_seed(0, "dog", 5) == image_seed(0, "dog", 5) != image_seed(1, "dog", 5)
    assert image_seed(0, "dog", 5, attempt=1) != image_seed(0, "dog", 5)
    assert t.family_settings("stabilityai/sd-turbo") == {"steps": 1, "guidance_scale": 0.0}


def test_unknown_class_and_bad_template_file_are_clear_errors(tmp_path, tiny_model):
    with pytest.raises(SynthgapError, match="no template for class.*dragon"):
        DatasetGenerator(cfg_for(tiny_model, classes=["dragon"]))
    bad = tmp_path / "t.yaml"
    bad.write_text("template: '{subject}'\n")
    with pytest.raises(SynthgapError, match="missing field"):
        DatasetGenerator(cfg_for(tiny_model, templates=str(bad)))
    good = yaml.safe_load(resources.files("synthgap.generate").joinpath("templates.yaml").read_text())
    good["template"] = "{style} of {subject} in {season}"
    bad.write_text(yaml.safe_dump(good))
    with pytest.raises(SynthgapError, match="cannot be filled.*season"):
        DatasetGenerator(cfg_for(tiny_model, templates=str(bad)))
    with pytest.raises(SynthgapError, match="'batch_size': expected at least 1"):
        DatasetGenerator(cfg_for(tiny_model, batch_size=0))


class BlankingPipeline:
    """Wraps a real pipeline and returns an all-black image for chosen seeds (as a safety checker would)."""

    def __init__(self, pipe, blank_seeds):
        self.pipe, self.blank_seeds = pipe, set(blank_seeds)
        self.device, self.scheduler = pipe.device, pipe.scheduler

    def __call__(self, **kw):
        out = self.pipe(**kw)
        for i, g in enumerate(kw["generator"]):
            if g.initial_seed() in self.blank_seeds:
                out.images[i] = Image.new("RGB", out.images[i].size)
        return out


def test_blanked_images_are_regenerated_with_the_next_seed(tiny_model, tmp_path, caplog):
    cfg = cfg_for(tiny_model, classes=["bird"], per_class=3)
    first = image_seed(cfg.seed, "bird", 1)
    pipe = BlankingPipeline(load_pipeline(str(tiny_model)), [first])
    generate(cfg, tmp_path / "out", pipeline=pipe, progress=False)
    rows = {r["id"]: r for r in check_folder(tmp_path / "out", ["bird"], 3)}
    assert rows["bird_00001"]["attempt"] == 1 and rows["bird_00001"]["blanked_seeds"] == [first]
    assert rows["bird_00001"]["seed"] == image_seed(cfg.seed, "bird", 1, attempt=1)
    assert rows["bird_00000"]["attempt"] == 0
    assert np.asarray(Image.open(tmp_path / "out" / rows["bird_00001"]["path"])).max() > 2
    assert "bird_00001 blanked" in caplog.text


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_an_exact_set(tiny_model, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "synthgap.cli",
        "generate",
        "--model",
        str(tiny_model),
        "--classes",
        "bird,cat",
        "--per-class",
        "10",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--set",
        "steps=2",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    manifest = out / "manifest.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows, _ = read_manifest(out)
    assert 4 <= len(rows) < 20
    for r in rows:  # what was listed at the kill is complete
        assert sha256_file(out / r["path"]) == r["sha256"]
    synthgap(*args[3:])
    check_folder(out, ["bird", "cat"], 10)


def test_missing_model_offline_is_a_clear_error(tmp_path):
    proc = synthgap("generate", "--model", "no-such-org/no-such-model", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2
    assert "could not load model 'no-such-org/no-such-model'" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(SynthgapError, match="not a diffusers pipeline"):
        load_pipeline(str(tmp_path))


@pytest.mark.slow
def test_ray_path_makes_the_same_set(made, tiny_model, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out = generate(cfg_for(tiny_model), tmp_path / "ray", progress=False, ray_workers=2)
    finally:
        ray.shutdown()
    rows = check_folder(out, ["bird", "cat"], 3)
    local = {r["id"]: r for r in read_manifest(made)[0]}
    assert {r["id"]: (r["prompt"], r["seed"]) for r in rows} == {k: (r["prompt"], r["seed"]) for k, r in local.items()}
    for r in rows:  # Ray batches differ from local ones: equal up to batch-size rounding
        a = np.asarray(Image.open(out / r["path"]), np.int16)
        b = np.asarray(Image.open(made / local[r["id"]]["path"]), np.int16)
        assert np.abs(a - b).max() <= 2


def test_the_pipeline_refuses_a_stage_setting_that_contradicts_its_shared_one(tmp_path):
    from synthgap.config import load_config, written_fields
    from synthgap.experiments.config import PipelineConfig
    from synthgap.experiments.pipeline import check_shared

    config = tmp_path / "p.yaml"
    config.write_text(
        f"out: {tmp_path / 'run'}\nclasses: [cat, dog]\nimage_size: 32\n"
        "generate: {classes: 'cat,dog', size: 32, per_class: 2}\n"
    )
    check_shared(load_config(PipelineConfig, config), written_fields(config))  # agreeing values are fine
    for override, message in (
        ("generate.classes=[cat,frog]", r"'generate.classes' \(\['cat', 'frog'\]\) contradicts 'classes'"),
        ("detector.image_size=64", r"'detector.image_size' \(64\) contradicts 'image_size' \(32\)"),
    ):
        proc = synthgap("pipeline", "--config", config, "--set", override, check=False)
        assert proc.returncode == 2 and re.search(message, proc.stderr)
    assert not (tmp_path / "run").exists()  # refused before any stage ran


@pytest.mark.slow
def test_pipeline_end_to_end_with_the_tiny_model(tmp_path, tiny_model):
    from conftest import make_image_folder

    real = make_image_folder(tmp_path / "real", ["bird", "cat"], 20, size=32)
    cfg = {
        "out": str(tmp_path / "study"),
        "real": str(real),
        "classes": ["bird", "cat"],
        "generate": {"model": "synthgap-tiny", "per_class": 15, "steps": 1, "batch_size": 8},
        "transfer": {
            "seeds": [0],
            "fractions": [0.0, 1.0],
            "extra_synthetic": [],
            "train_size": 24,
            "train": {"epochs": 2, "batch_size": 8, "widths": [8, 16, 16]},
        },
        "detect": False,  # the detector stage: tests/test_builtin.py
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    proc = synthgap("pipeline", "--config", str(tmp_path / "p.yaml"))
    assert (tmp_path / "study" / "transfer" / "report.html").is_file()
    check_folder(tmp_path / "study" / "synthetic", ["bird", "cat"], 15)
    records = json.loads((tmp_path / "study" / "transfer" / "summary.json").read_text())
    assert {(r["train_domain"], r["test_domain"]) for r in records} == {
        ("real", "real"),
        ("real", "synthetic"),
        ("synthetic", "real"),
        ("synthetic", "synthetic"),
    }
    assert "report:" in proc.stdout and not (tmp_path / "study" / "detector").exists()


def test_quality_report_finds_planted_twins_and_memorised_images(made, tmp_path):
    import shutil

    import torch

    from synthgap.data import ImageSet
    from synthgap.generate.quality import quality_report

    copy = tmp_path / "set"
    shutil.copytree(made, copy)
    rows = read_manifest(copy)[0]
    # Plant a duplicate: image 1 becomes a copy of image 0 (the manifest hash is updated to match).
    shutil.copy(copy / rows[0]["path"], copy / rows[1]["path"])
    rows[1]["sha256"] = sha256_file(copy / rows[1]["path"])
    (copy / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def pixels(row):
        return torch.from_numpy(np.array(Image.open(copy / row["path"]).convert("RGB"))).permute(2, 0, 1)[None].clone()

    # Image 2 is also a real test image; image 3 a real training image (the generator memorised it).
    real = ImageSet(pixels(rows[2]), torch.tensor([0]), ["bird", "cat"], "real[test]")
    real_train = ImageSet(pixels(rows[3]), torch.tensor([0]), ["bird", "cat"], "real[train]")
    q = quality_report(copy, real, real_train)
    assert [(t["id"], t["other"], t["match"]) for t in q["twins_within"]] == [(rows[0]["id"], rows[1]["id"], "exact")]
    assert [(t["id"], t["real_index"], t["match"]) for t in q["twins_vs_real_test"]] == [(rows[2]["id"], 0, "exact")]
    assert [(t["id"], t["match"]) for t in q["twins_vs_real_train"]] == [(rows[3]["id"], "exact")]
    assert q["audit"]["counts"]["exact"] == {"within_set": 1, "real_synthetic": 1, "memorisation": 1}
    assert json.loads((copy / "quality.json").read_text())["images"] == len(rows)
    assert (copy / "audit" / "audit.html").is_file()
