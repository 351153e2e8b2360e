"""Content-matched fakes (synthgap.detect.autoencoder): a small AutoencoderKL trained on windows of photos,
resume, reconstruction into a mirrored folder, a published autoencoder through the hub path (a tiny random
one saved with save_pretrained: nothing is downloaded), the commands, and a detector trained with the
reconstructions as a synthetic source. Tiny configs and drawn photos throughout."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import draw_photo, make_photo_folder, synthgap
from PIL import Image, ImageFilter

from synthgap import SynthgapError
from synthgap.detect.autoencoder import (
    CHECKPOINT,
    RECONSTRUCTIONS,
    AutoencoderConfig,
    AutoencoderTrainer,
    ReconstructConfig,
    compare,
    load_autoencoder,
    read_record,
    reconstruct_folder,
    reconstruct_tensor,
    split_files,
    train_autoencoder,
)
from synthgap.io import sha256_file

TINY = dict(
    block_out_channels=[8, 16],
    norm_num_groups=4,
    window=32,
    batch_size=4,
    steps=4,
    checkpoint_every=2,
    warmup=2,
    eval_images=4,
    perceptual=0.0,  # the trained fixture alone runs EfficientNet-Lite0's features
    threads=1,  # tiny convolutions: one thread is faster than two on a shared machine
)


def tiny(**kw) -> AutoencoderConfig:
    return AutoencoderConfig(**{**TINY, **kw})


def _photo_tensor(seed: int = 5, size=(45, 37)) -> torch.Tensor:
    im = draw_photo(np.random.default_rng(seed), size)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """10 drawn photos in two sub-folders, PNG and JPEG, of two sizes (no train/test: the fixed hold-out)."""
    root = tmp_path_factory.mktemp("ae-photos") / "real"
    make_photo_folder(root / "a", 6, planted=False, size=(72, 56), seed=1)
    make_photo_folder(root / "b", 4, planted=False, size=(64, 48), seed=2, ext="jpg")
    return root


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae-trained") / "ae"
    trainer = AutoencoderTrainer(tiny(perceptual=0.1), out)
    trainer.run(str(photos), progress=False)
    return out, trainer


def _images(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg"))


# ---------------------------------------------------------------- training


def test_training_runs_its_steps_and_saves_a_model_that_loads_back(trained):
    out, trainer = trained
    record = read_record(out)
    assert (record["kind"], record["format_version"]) == ("synthgap-autoencoder", 1)
    assert record["training"]["steps"] == 4 and record["config"]["block_out_channels"] == [8, 16]
    assert record["data"]["train"]["files"] == 8 and record["data"]["held_out"]["files"] == 2  # the fixed 20%
    assert len(record["data"]["train"]["sha256"]) == 64 and "diffusers" in record["environment"]
    assert record["training"]["loss_mean_last_100"][3] > 0  # the perceptual term (EfficientNet-Lite0)
    m = record["metrics"]
    assert m["held_out"] and m["photos"] == 2 and m["images"] == 2 * 3**2  # a 3 x 3 grid of windows each
    assert {"psnr", "hf_ratio_laplacian", "hf_ratio_npr"} <= set(m)
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 4
    loaded, source = load_autoencoder(out)
    assert source["kind"] == "synthgap-autoencoder" and source["source"] == "folder"
    assert source["trained_config_hash"] == record["config_hash"]
    x = _photo_tensor()  # odd sides: padded to the down-sampling and cropped back
    before = reconstruct_tensor(trainer.vae.eval(), x)
    assert before.shape == x.shape and before.dtype == torch.uint8
    assert torch.equal(reconstruct_tensor(loaded, x), before)


def test_resume_gives_the_weights_of_an_uninterrupted_run(photos, tmp_path):
    train_autoencoder(str(photos), tmp_path / "whole", tiny(), progress=False)
    train_autoencoder(str(photos), tmp_path / "split", tiny(steps=2), progress=False)
    with pytest.raises(SynthgapError, match="--resume"):  # an existing run is never overwritten silently
        train_autoencoder(str(photos), tmp_path / "split", tiny(), progress=False)
    train_autoencoder(str(photos), tmp_path / "split", tiny(), resume=True, progress=False)  # 2 more steps
    a, b = (torch.load(tmp_path / d / CHECKPOINT, weights_only=False) for d in ("whole", "split"))
    assert a["state"]["step"] == b["state"]["step"] == 4
    # Same seed, same draws (windows, flips, latent noise from the checkpointed generator), same CPU threads:
    # the same floating-point operations in the same order, so the weights are bit-identical.
    assert a["state"]["losses"] == b["state"]["losses"]
    assert all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"])
    assert read_record(tmp_path / "split")["model"] == read_record(tmp_path / "whole")["model"]
    with pytest.raises(SynthgapError, match="config differs in: lr"):
        train_autoencoder(str(photos), tmp_path / "split", tiny(lr=0.01), resume=True, progress=False)
    stamp = os.stat(tmp_path / "split" / "config.json").st_mtime_ns
    train_autoencoder(str(photos), tmp_path / "split", tiny(), resume=True, progress=False)  # finished: nothing to do
    assert os.stat(tmp_path / "split" / "config.json").st_mtime_ns == stamp


def test_ctrl_c_saves_a_checkpoint_that_resumes(photos, tmp_path, monkeypatch):
    trainer = AutoencoderTrainer(tiny(), tmp_path / "ae")
    step = trainer.step

    def interrupted(x):
        if trainer.state.step == 3:
            raise KeyboardInterrupt
        return step(x)

    monkeypatch.setattr(trainer, "step", interrupted)
    with pytest.raises(SynthgapError, match="interrupted at step 3.*--resume"):
        trainer.run(str(photos), progress=False)
    assert torch.load(tmp_path / "ae" / CHECKPOINT, weights_only=False)["state"]["step"] == 3
    train_autoencoder(str(photos), tmp_path / "ae", tiny(), resume=True, progress=False)
    assert read_record(tmp_path / "ae")["training"]["steps"] == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"window": 33}, "window"),
        ({"norm_num_groups": 3}, "norm_num_groups"),
        ({"loss": "huber"}, "loss"),
        ({"perceptual": -1.0}, "perceptual"),
    ],
)
def test_bad_configs_are_clear_errors(change, message):
    with pytest.raises(SynthgapError, match=f"config field '{message}'"):
        AutoencoderTrainer(tiny(**change), "unused")


def test_the_blur_check_says_blur_below_one_and_added_patterns_above():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(60, 196, size=(3, 3, 64, 64), dtype=np.uint8))  # texture at every scale
    blurred = torch.stack(
        [
            torch.from_numpy(
                np.asarray(Image.fromarray(i.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(1))).copy()
            ).permute(2, 0, 1)
            for i in x
        ]
    )
    checker = (x.short() + 40 * (1 - 2 * ((torch.arange(64)[:, None] + torch.arange(64)) % 2))).clamp(0, 255).byte()
    same, blur, pattern = compare(x, x), compare(x, blurred), compare(x, checker)
    assert same["hf_ratio_laplacian"] == same["hf_ratio_npr"] == 1.0 and same["psnr"] == 100.0
    assert blur["hf_ratio_laplacian"] < 0.5 and blur["hf_ratio_npr"] < 0.5 and blur["psnr"] < 30
    assert pattern["hf_ratio_laplacian"] > 1.5 and pattern["hf_ratio_npr"] > 1.5


# ---------------------------------------------------------------- reconstruction


def test_reconstruction_mirrors_paths_resumes_and_records_hashes(trained, photos, tmp_path):
    model, _ = trained
    out = tmp_path / "recon"
    r = reconstruct_folder(model, photos, out, progress=False)
    sources = _images(photos)
    assert _images(out) == [s.rsplit(".", 1)[0] + ".png" for s in sources]  # same names and order, suffix .png
    record = json.loads((out / RECONSTRUCTIONS).read_text())
    assert record["count"] == 10 and record["complete"] and record["kind"] == "synthgap-reconstructions"
    assert record["autoencoder"]["path"] == str(model.resolve())
    assert len(record["autoencoder"]["config_sha256"]) == len(record["autoencoder"]["weights_sha256"]) == 64
    assert [f["source"] for f in record["files"]] == sources
    assert all(f["source_sha256"] == sha256_file(photos / f["source"]) for f in record["files"])
    assert len(record["config_hash"]) == 16 and r["count"] == 10
    for f in record["files"][:2]:
        with Image.open(photos / f["source"]) as a, Image.open(out / f["output"]) as b:
            assert a.size == b.size == (f["width"], f["height"])
            assert "XML:com.adobe.xmp" not in a.info
            assert "trainedAlgorithmicMedia" in b.info["XML:com.adobe.xmp"]  # marked AI-generated
            assert json.loads(b.text["synthgap"])["source_sha256"] == f["source_sha256"]
    # The fixed hold-out split of each folder puts a photo and its reconstruction on the same side.
    for split in ("train", "test"):
        real = [os.path.relpath(f, photos).rsplit(".", 1)[0] for f in split_files(str(photos), split, classes=["x"])]
        fake = [os.path.relpath(f, out).rsplit(".", 1)[0] for f in split_files(str(out), split, classes=["x"])]
        assert real == fake and real
    # A re-run writes nothing new; a changed photo alone is reconstructed again.
    stamps = {p: os.stat(out / p).st_mtime_ns for p in _images(out)}
    again = reconstruct_folder(model, photos, out, progress=False)["summary"]
    assert (again["reconstructed_now"], again["done_before"]) == (0, 10)
    assert {p: os.stat(out / p).st_mtime_ns for p in _images(out)} == stamps
    changed = tmp_path / "real"
    shutil.copytree(photos, changed)
    draw_photo(np.random.default_rng(99), (72, 56)).save(changed / "a" / "0003.png")
    once_more = reconstruct_folder(model, changed, out, progress=False)["summary"]
    assert (once_more["reconstructed_now"], once_more["done_before"]) == (1, 9)
    # Another setting (or model) in the same folder is refused.
    with pytest.raises(SynthgapError, match="config differs in: latent"):
        reconstruct_folder(model, photos, out, ReconstructConfig(latent="sample"), progress=False)


def test_large_images_go_through_in_tiles_and_a_sample_is_seeded(trained, tmp_path):
    model, _ = trained
    folder = tmp_path / "big"
    folder.mkdir()
    draw_photo(np.random.default_rng(3), (150, 101)).save(folder / "big.png")
    outs = {}
    for name, cfg in {
        "whole": ReconstructConfig(tile=0, threads=1),
        "tiles": ReconstructConfig(tile=48, threads=1),
        "sample": ReconstructConfig(latent="sample", seed=1, threads=1),
        "sample2": ReconstructConfig(latent="sample", seed=1, threads=1),
    }.items():
        reconstruct_folder(model, folder, tmp_path / name, cfg, progress=False)
        outs[name] = np.asarray(Image.open(tmp_path / name / "big.png"))
    assert outs["whole"].shape == outs["tiles"].shape == (101, 150, 3)
    assert not np.array_equal(outs["whole"], outs["tiles"])  # tiles are encoded apart, then blended
    assert np.array_equal(outs["sample"], outs["sample2"]) and not np.array_equal(outs["sample"], outs["whole"])


def test_mirroring_refuses_names_that_would_collide_and_a_foreign_image_in_out(trained, tmp_path):
    model, _ = trained
    folder = tmp_path / "pics"
    folder.mkdir()
    draw_photo(np.random.default_rng(1), (40, 32)).save(folder / "x.png")
    draw_photo(np.random.default_rng(2), (40, 32)).save(folder / "x.jpg")
    with pytest.raises(SynthgapError, match="would both be reconstructed as x.png"):
        reconstruct_folder(model, folder, tmp_path / "out", progress=False)
    (folder / "x.jpg").unlink()
    (tmp_path / "out").mkdir()
    draw_photo(np.random.default_rng(3), (40, 32)).save(tmp_path / "out" / "other.png")
    with pytest.raises(SynthgapError, match="no reconstruction of a file of --real"):
        reconstruct_folder(model, folder, tmp_path / "out", progress=False)


# ---------------------------------------------------------------- a published autoencoder


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=32,
    ).eval()


def test_a_published_autoencoder_loads_from_a_folder_a_pipeline_and_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    vae = _tiny_vae()
    x = _photo_tensor()
    expected = reconstruct_tensor(vae, x)
    vae.save_pretrained(tmp_path / "vae-folder")
    loaded, source = load_autoencoder(tmp_path / "vae-folder")
    assert torch.equal(reconstruct_tensor(loaded, x), expected)
    assert source["source"] == "folder" and source["subfolder"] is None and "kind" not in source
    # A diffusers pipeline folder: its vae/.
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    loaded, source = load_autoencoder(tmp_path / "pipe")
    assert source["subfolder"] == "vae" and torch.equal(reconstruct_tensor(loaded, x), expected)
    # A hub id, resolved offline from a hub cache laid out as huggingface_hub writes it: the same code path
    # as a download (AutoencoderKL.from_pretrained(id)), and the commit it resolved to is recorded.
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, sub in (("tiny-vae", ""), ("tiny-pipe", "vae")):
        snap = cache / f"models--synthgap-test--{repo}" / "snapshots" / commit
        vae.save_pretrained(snap / sub)
        (cache / f"models--synthgap-test--{repo}" / "refs").mkdir(parents=True)
        (cache / f"models--synthgap-test--{repo}" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    loaded, source = load_autoencoder("synthgap-test/tiny-vae")
    assert (source["source"], source["commit"], source["subfolder"]) == ("hub", commit, None)
    assert torch.equal(reconstruct_tensor(loaded, x), expected)
    loaded, source = load_autoencoder("synthgap-test/tiny-pipe")  # a pipeline id: its vae subfolder
    assert (source["subfolder"], source["commit"]) == ("vae", commit)
    assert torch.equal(reconstruct_tensor(loaded, x), expected)
    with pytest.raises(SynthgapError, match="no such folder, and no AutoencoderKL on the Hugging Face hub"):
        load_autoencoder("synthgap-test/not-there")
    # ... and the reconstruction record names the id and its commit.
    folder = tmp_path / "one"
    folder.mkdir()
    draw_photo(np.random.default_rng(1), (40, 32)).save(folder / "p.png")
    r = reconstruct_folder("synthgap-test/tiny-pipe", folder, tmp_path / "recon", progress=False)
    assert (r["autoencoder"]["model"], r["autoencoder"]["commit"]) == ("synthgap-test/tiny-pipe", commit)


# ---------------------------------------------------------------- the commands


def test_cli_train_reconstruct_and_clear_errors(photos, tmp_path):
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items() if k != "steps"]
    proc = synthgap("autoencoder", "train", "--real", photos, "--out", tmp_path / "ae", "--steps", 2, *sets)
    assert "autoencoder ready" in proc.stdout and "PSNR" in proc.stdout and "(NPR)" in proc.stdout
    assert read_record(tmp_path / "ae")["training"]["steps"] == 2
    again = synthgap("autoencoder", "train", "--real", photos, "--out", tmp_path / "ae", *sets, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    proc = synthgap("autoencoder", "reconstruct", "--model", tmp_path / "ae", "--real", photos, "--out", tmp_path / "r")
    assert "10 reconstructions" in proc.stdout and "--synthetic recon=" in proc.stdout
    for command in (
        ("autoencoder", "train", "--real", tmp_path / "missing", "--out", tmp_path / "x"),
        (
            "autoencoder",
            "reconstruct",
            "--model",
            tmp_path / "ae",
            "--real",
            tmp_path / "missing",
            "--out",
            tmp_path / "y",
        ),
    ):
        bad = synthgap(*command, check=False)
        assert bad.returncode == 2 and bad.stderr.startswith("error:") and "missing" in bad.stderr
        assert "no such" in bad.stderr and "Traceback" not in bad.stderr
    for command in ("train", "reconstruct"):
        assert "Example" in synthgap("autoencoder", command, "--help").stdout


# ---------------------------------------------------------------- the detector with reconstructions


def test_reconstructions_stay_in_training_beside_their_originals(tmp_path):
    """The data audit finds each reconstruction a near twin of its photo (stand-in: a mild blur, as a good
    autoencoder makes): in the training splits that is intended and nothing is dropped; in the test splits both
    are test images, so nothing is dropped there either (a test image is dropped only for a training twin)."""
    from synthgap.detect.data import load_sources

    real = make_photo_folder(tmp_path / "real", 10, planted=False, size=(96, 72), seed=4)
    recon = tmp_path / "recon"
    recon.mkdir()
    for f in sorted(real.glob("*.png")):
        Image.open(f).filter(ImageFilter.GaussianBlur(0.7)).save(recon / f.name)
    loaded = load_sources(str(real), [f"recon={recon}"], classes=["x"], size=32, dedupe="drop", progress=False)
    summary = loaded.audit.summary()
    assert summary["counts"]["near"].get("memorisation", 0) + summary["counts"]["exact"].get("memorisation", 0) == 8
    assert summary["counts"]["near"].get("real_synthetic", 0) == 2
    assert summary["removed"] == {} and not any(summary["test_images_with_training_twin"].values())
    for split, n in (("train", 8), ("test", 2)):
        names = [[os.path.basename(f) for f in loaded.sets[src, split].files] for src in ("real", "recon")]
        assert names[0] == names[1] and len(names[0]) == n


def test_a_detector_trains_with_reconstructions_as_a_synthetic_source(trained, photos, tmp_path):
    model, _ = trained
    reconstruct_folder(model, photos, tmp_path / "recon", progress=False)
    out = tmp_path / "detector"
    synthgap(
        "detector",
        "train",
        "--real",
        photos,
        "--synthetic",
        f"recon={tmp_path / 'recon'}",
        "--backbone",
        "airnet",
        "--out",
        out,
        "--set",
        "input=resize",
        "--set",
        "scratch.epochs=1",
        "--set",
        "scratch.batch_size=8",
        "--set",
        "val_fraction=0.25",
    )
    meta = json.loads((out / "detector.json").read_text())
    assert set(meta["sources"]["synthetic"]) == {"recon"}
    assert meta["sources"]["synthetic"]["recon"]["test"] == meta["sources"]["real"]["real"]["test"] == 2
