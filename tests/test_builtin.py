"""The builtin class-conditional diffusion generator: training, resume, sampling, `synthgap generate`,
FID-Lite0, the pipeline with `generator: builtin`, and clear errors. All with the tiny preset."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_image_folder, synthgap
from diffusers import UNet2DModel
from PIL import Image

from synthgap import SynthgapError
from synthgap.data import load_spec
from synthgap.generate import generate, read_manifest, read_metadata, reproduce
from synthgap.generate.builtin import (
    CHECKPOINT,
    PRESETS,
    ClassConditionalPipeline,
    GeneratorTrainer,
    build_unet,
    load_generator,
    lr_factor,
    resolve_generator_config,
    train_generator,
)
from synthgap.generate.config import GenerateConfig, GeneratorConfig

CLASSES = ["bird", "cat", "frog"]


def tiny(**kw) -> GeneratorConfig:
    return GeneratorConfig(
        **{
            "preset": "tiny",
            "classes": CLASSES,
            "steps": 8,
            "batch_size": 8,
            "checkpoint_every": 4,
            "cooldown": 0.0,
            **kw,
        }
    )


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("real") / "data", CLASSES, 12, size=16)


@pytest.fixture(scope="module")
def trained(real, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "generator"
    train_generator(str(real), out, tiny(sample_every=4, snapshots=[4]), progress=False)
    return out


def test_training_writes_a_diffusers_pipeline_grids_and_figures(trained):
    for name in (
        "model_index.json",
        "unet/config.json",
        "scheduler/scheduler_config.json",
        CHECKPOINT,
        "training.yaml",
        "training.json",
        "loss.csv",
        "loss.png",
        "samples/step_000004.png",
        "samples/step_000008.png",
        "samples/final.png",
    ):
        assert (trained / name).is_file(), name
    assert not list(trained.rglob("*.tmp"))
    index = json.loads((trained / "model_index.json").read_text())
    assert index["_class_name"] == "ClassConditionalPipeline" and index["class_names"] == CLASSES
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"][1] == "DPMSolverMultistepScheduler"
    info = json.loads((trained / "training.json").read_text())
    assert info["steps"] == 8 and info["parameters"] > 1000
    assert len((trained / "loss.csv").read_text().splitlines()) == 1 + 8
    # A grid: one row per class (3), grid_per_class columns (8) of 16 px tiles, padding 1, scaled x2.
    with Image.open(trained / "samples" / "final.png") as grid:
        assert grid.size == (2 * (8 * 17 + 1), 2 * (3 * 17 + 1))
    record = yaml.safe_load((trained / "training.yaml").read_text())
    assert record["config"]["channels"] == [8, 16] and record["data"]["class_counts"] == {c: 12 for c in CLASSES}
    assert "diffusers" in record["environment"]


def test_a_snapshot_is_the_model_as_it_was_at_that_step(trained):
    from synthgap.generate.builtin import builtin_info, load_generator

    snap = trained / "snapshots" / "step_000004"
    assert builtin_info(snap) and not list(snap.rglob("*.tmp"))
    early, final = load_generator(snap, "cpu"), load_generator(trained, "cpu")
    a, b = early.unet.state_dict(), final.unet.state_dict()
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
    assert (
        early(
            ["bird"], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
        ).images.shape[-1]
        == 16
    )


def test_the_saved_model_holds_the_ema_weights_and_loads_with_from_pretrained(trained):
    pipe = ClassConditionalPipeline.from_pretrained(str(trained))
    ckpt = torch.load(trained / CHECKPOINT, weights_only=False)
    ema = ckpt["ema"]["shadow_params"]
    saved = list(pipe.unet.parameters())
    live = [ckpt["unet"][k] for k, _ in pipe.unet.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(saved, ema))
    assert not all(torch.equal(a, b) for a, b in zip(saved, live))  # EMA lags the live weights


def test_sampling_is_deterministic_per_image_and_seed(trained):
    pipe = load_generator(trained)
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    a = pipe(["bird", "cat", "frog", "bird"], generator=gens([1, 2, 3, 4]), output_type="pt").images
    b = load_generator(trained)(["bird", "cat", "frog", "bird"], generator=gens([1, 2, 3, 4]), output_type="pt").images
    alone = pipe(["frog"], generator=gens([3]), output_type="pt").images
    assert a.shape == (4, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)  # same seeds, same images
    assert torch.allclose(a[2], alone[0], atol=1e-5)  # an image does not depend on its batch
    other = pipe(["bird"], generator=gens([99]), output_type="pt").images
    assert (other[0] - a[0]).abs().max() > 0.05  # another seed, another image
    cls = pipe(["cat"], generator=gens([1]), output_type="pt").images
    assert (cls[0] - a[0]).abs().max() > 1e-3  # the class conditions the image


def test_guidance_mixes_the_conditional_and_unconditional_predictions(trained):
    pipe = load_generator(trained)

    def run(scale):
        return pipe(
            ["cat"],
            num_inference_steps=4,
            guidance_scale=scale,
            generator=[torch.Generator().manual_seed(0)],
            output_type="pt",
        ).images[0]

    cond, uncond, guided = run(1.0), run(0.0), run(3.0)
    assert not torch.allclose(cond, uncond) and not torch.allclose(guided, cond)


def test_resume_continues_the_same_loss_curve(real, tmp_path):
    straight = tmp_path / "straight"
    train_generator(str(real), straight, tiny(), progress=False)
    split = tmp_path / "split"
    train_generator(str(real), split, tiny(steps=4), progress=False)  # then extended to 8 steps: no cooldown at 4
    with pytest.raises(SynthgapError, match="--resume"):  # an existing run is never overwritten silently
        train_generator(str(real), split, tiny(), progress=False)
    train_generator(str(real), split, tiny(), resume=True, progress=False)
    a = torch.load(straight / CHECKPOINT, weights_only=False)
    b = torch.load(split / CHECKPOINT, weights_only=False)
    assert len(a["state"]["losses"]) == len(b["state"]["losses"]) == 8
    np.testing.assert_allclose(a["state"]["losses"], b["state"]["losses"], rtol=1e-6)
    assert all(torch.allclose(a["unet"][k], b["unet"][k], atol=1e-6) for k in a["unet"])


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_curve(real, tmp_path, monkeypatch):
    cooling = dict(steps=6, warmup=0, cooldown=0.5)  # the interruption falls in the LR's cooldown
    straight = tmp_path / "straight"
    train_generator(str(real), straight, tiny(**cooling), progress=False)
    out = tmp_path / "interrupted"
    original = GeneratorTrainer.step

    def interrupted(self, *a):
        if self.state.step == 3:
            raise KeyboardInterrupt
        return original(self, *a)

    monkeypatch.setattr(GeneratorTrainer, "step", interrupted)
    with pytest.raises(SynthgapError, match="interrupted at step 3.*--resume"):
        train_generator(str(real), out, tiny(**cooling), progress=False)
    assert not (out / "model_index.json").exists()  # no half-made model
    monkeypatch.setattr(GeneratorTrainer, "step", original)
    train_generator(str(real), out, tiny(**cooling), resume=True, progress=False)
    a = torch.load(straight / CHECKPOINT, weights_only=False)["state"]["losses"]
    b = torch.load(out / CHECKPOINT, weights_only=False)["state"]["losses"]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_resume_refuses_another_config_or_other_data(trained, real, tmp_path):
    with pytest.raises(SynthgapError, match="differs in: lr"):
        train_generator(str(real), trained, tiny(lr=0.01), resume=True, progress=False)
    other = make_image_folder(tmp_path / "other", CLASSES, 12, size=16, seed=5)
    with pytest.raises(SynthgapError, match="other data"):
        train_generator(str(other), trained, tiny(), resume=True, progress=False)


def test_a_finished_run_resumed_with_the_same_config_trains_nothing(trained, real):
    before = (trained / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    train_generator(str(real), trained, tiny(sample_every=4), resume=True, progress=False)
    assert (trained / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_time_budget_stops_training_and_saves_the_model(real, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("synthgap.io.watched", lambda: True)  # the bar as a terminal shows it
    out = tmp_path / "budget"
    train_generator(str(real), out, tiny(steps=10_000, time_budget=0.02))  # 1.2 s
    info = json.loads((out / "training.json").read_text())
    assert 0 < info["steps"] < 10_000 and info["seconds"] >= 1.2
    assert (out / "model_index.json").is_file()
    bar = [s for s in capsys.readouterr().err.split("\r") if "generator:" in s][
        -1
    ]  # counts the budget, not 10,000 steps
    assert "100%" in bar and "1/1s" in bar and f"step={info['steps']}" in bar, bar


def test_a_time_limit_is_a_safety_cap_that_shapes_nothing_and_marks_a_run_cut_short(real, tmp_path, caplog):
    """A run that ends by its steps under a time limit is the very run without one; a run the limit stops
    says so in its log and training.json, and resumes to finish."""
    plain, capped = tmp_path / "plain", tmp_path / "capped"
    cooling = dict(steps=6, warmup=0, cooldown=0.5)  # the LR schedule is by steps, not by the clock
    train_generator(str(real), plain, tiny(**cooling), progress=False)
    train_generator(str(real), capped, tiny(**cooling, time_limit=60), progress=False)
    a, b = (torch.load(d / CHECKPOINT, weights_only=False) for d in (plain, capped))
    assert a["state"]["losses"] == b["state"]["losses"]
    assert all(torch.equal(a["unet"][k], b["unet"][k]) for k in a["unet"])
    info = json.loads((capped / "training.json").read_text())
    assert (info["stopped_by"], info["cut_short"], info["steps"], info["steps_asked"]) == ("steps", False, 6, 6)

    short = tmp_path / "short"
    with caplog.at_level("WARNING", logger="synthgap"):
        train_generator(str(real), short, tiny(steps=10_000, time_limit=0.01), progress=False)  # 0.6 s
    info = json.loads((short / "training.json").read_text())
    assert info["stopped_by"] == "time_limit" and info["cut_short"] and 0 < info["steps"] < 10_000
    assert "cut short by its time limit" in caplog.text and "--resume" in caplog.text
    assert (short / "model_index.json").is_file()


@pytest.mark.parametrize(
    "prediction, scheduler",
    [("v_prediction", "DPMSolverMultistepScheduler"), ("edm", "EDMDPMSolverMultistepScheduler")],
)
def test_other_parameterisations_train_and_sample_through_the_saved_scheduler(real, tmp_path, prediction, scheduler):
    out = tmp_path / prediction
    train_generator(str(real), out, tiny(prediction=prediction, steps=12), progress=False)
    losses = torch.load(out / CHECKPOINT, weights_only=False)["state"]["losses"]
    assert len(losses) == 12 and all(np.isfinite(losses))
    pipe = load_generator(out)
    assert type(pipe.scheduler).__name__ == scheduler
    if prediction == "v_prediction":
        assert pipe.scheduler.config.prediction_type == "v_prediction"
    a, b = (
        pipe(["cat", "frog"], generator=[torch.Generator().manual_seed(k) for k in (0, 1)], output_type="pt").images
        for _ in range(2)
    )
    assert a.shape == (2, 3, 16, 16) and torch.isfinite(a).all() and torch.equal(a, b)  # seeded: the same images
    assert a.std() > 0.01  # not collapsed to a flat image


def test_learning_rate_warms_up_holds_then_cools_down_to_zero_by_steps_or_budget():
    by_steps = resolve_generator_config(tiny(steps=100, warmup=10, cooldown=0.2))
    f = [lr_factor(by_steps, s, seconds=0.0) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == f[50] == 1.0 and f[80] == pytest.approx(1.0)
    assert f[90] == pytest.approx(0.5) and f[99] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(f[80:], f[81:]))  # falls linearly to 0 over the last 20 steps
    by_time = resolve_generator_config(tiny(steps=100_000, warmup=0, cooldown=0.2, time_budget=1.0))
    assert [lr_factor(by_time, 5, s) for s in (30.0, 48.0, 54.0, 60.0)] == pytest.approx([1.0, 1.0, 0.5, 0.0])
    constant = resolve_generator_config(tiny(steps=100, warmup=0))
    assert {lr_factor(constant, s, 0.0) for s in range(100)} == {1.0}


def test_low_res_trains_the_first_share_of_the_run_at_half_resolution(real, tmp_path):
    seen = []
    original = UNet2DModel.forward

    def spy(self, sample, *a, **kw):
        seen.append(sample.shape[-1])
        return original(self, sample, *a, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(UNet2DModel, "forward", spy)
        train_generator(str(real), tmp_path / "low", tiny(steps=8, low_res=0.5, sample_every=0), progress=False)
    # 16 px images, pixel-unshuffled by 2: 4 x 4 for the first half of the steps, then 8 x 8 (the final grid too)
    assert seen[:8] == [4] * 4 + [8] * 4
    assert load_generator(tmp_path / "low").image_size == 16


def test_a_checkpoint_made_before_a_config_field_existed_resumes_with_its_default(real, tmp_path):
    out = tmp_path / "old"
    train_generator(str(real), out, tiny(steps=4), progress=False)
    ckpt = torch.load(out / CHECKPOINT, weights_only=False)
    del ckpt["identity"]["low_res"]  # as written before the field existed
    torch.save(ckpt, out / CHECKPOINT)
    train_generator(str(real), out, tiny(steps=6), resume=True, progress=False)
    assert json.loads((out / "training.json").read_text())["steps"] == 6
    with pytest.raises(SynthgapError, match="differs in: low_res"):
        train_generator(str(real), out, tiny(steps=8, low_res=0.5), resume=True, progress=False)


def test_training_cools_the_learning_rate_down_and_records_where(real, tmp_path):
    out = tmp_path / "cooled"
    cfg = tiny(steps=10, warmup=0, cooldown=0.5)
    train_generator(str(real), out, cfg, progress=False)
    assert json.loads((out / "training.json").read_text())["cooldown_from_step"] == 6
    last_lr = torch.load(out / CHECKPOINT, weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    assert last_lr == pytest.approx(resolve_generator_config(cfg).lr * 0.2)  # the 10th step ran at (1 - 9/10) / 0.5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"preset": "huge"}, "'preset': unknown 'huge' (known: tiny, small, base)"),
        ({"classes": []}, "'classes': give at least one class"),
        ({"image_size": 18}, "'image_size': 18 is not divisible by 4"),
        ({"channels": [16, 18]}, "multiple of 4"),
        ({"sampler": "euler"}, "'sampler': expected one of dpm, ddim"),
        ({"label_dropout": 1.0}, "'label_dropout'"),
        ({"cooldown": 1.5}, "'cooldown': expected a share of the run between 0 and 1"),
        ({"prediction": "x0"}, "'prediction'"),
        ({"time_limit": -1}, "'time_limit'"),
        ({"low_res": 1.0}, "'low_res': expected a share of the run in [0, 1)"),
        ({"image_size": 20, "low_res": 0.5}, "'image_size': 20 is not divisible by 8"),
    ],
)
def test_bad_configs_are_clear_errors(change, message):
    with pytest.raises(SynthgapError) as e:
        resolve_generator_config(tiny(**change))
    assert message in str(e.value)


def test_presets_build_the_unet_they_describe():
    small = resolve_generator_config(GeneratorConfig(preset="small"))
    unet = build_unet(small)
    assert (unet.config.sample_size, unet.config.in_channels) == (16, 12)  # 32 px, pixel-unshuffled by 2
    assert unet.config.num_class_embeds == 7  # six classes and the null class
    assert 2e6 < sum(p.numel() for p in unet.parameters()) < 4e6
    x = torch.randn(2, 12, 16, 16)
    assert unet(x, torch.tensor([10, 500]), class_labels=torch.tensor([0, 6])).sample.shape == x.shape
    base = resolve_generator_config(GeneratorConfig(preset="base"))
    assert base.patch_size == 1 and base.image_size == 32


def test_generate_with_the_builtin_model_same_layout_manifest_and_resume(trained, tmp_path):
    out = tmp_path / "set"
    cfg = GenerateConfig(model=str(trained), classes=["cat", "frog"], per_class=3, batch_size=4)
    generate(cfg, out, progress=False)
    rows, dropped = read_manifest(out)
    assert not dropped and len(rows) == 6 and {r["label"] for r in rows} == {"cat", "frog"}
    assert all((out / r["path"]).is_file() for r in rows)
    with Image.open(out / rows[0]["path"]) as im:
        assert im.size == (32, 32)  # saved at the target size, whatever the model's
    meta = read_metadata(out / rows[0]["path"])
    assert meta["prompt"] == rows[0]["label"] and meta["steps"] == 20 and meta["guidance_scale"] == 4.0
    assert meta["scheduler"] == "DPMSolverMultistepScheduler"
    ident = yaml.safe_load((out / "generation.yaml").read_text())["identity"]
    assert len(ident["model_sha256"]) == 64
    path, diff = reproduce(out, rows[4]["id"])
    assert diff <= 1
    generate(cfg, out, progress=False)  # a re-run finds everything made
    assert len(read_manifest(out)[0]) == 6
    with pytest.raises(SynthgapError, match="different config"):
        generate(
            GenerateConfig(model=str(trained), classes=["cat"], per_class=3, guidance_scale=2.0), out, progress=False
        )
    with pytest.raises(SynthgapError, match="cannot make dog"):
        generate(
            GenerateConfig(model=str(trained), classes=["cat", "dog"], per_class=1), tmp_path / "x", progress=False
        )


def test_frechet_distance_matches_the_gaussian_closed_form():
    from synthgap.generate.fid import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, size=(20_000, 4))
    b = rng.normal([1, 0, 0, 2], [1, 2, 1, 1], size=(20_000, 4))
    # For diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 5 + 1.
    assert frechet_distance(a, b) == pytest.approx(6.0, abs=0.1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_lite0_ranks_a_closer_set_lower(real):
    from synthgap.generate.fid import fid_lite0, lite0_features

    test = load_spec(str(real), "test", CLASSES, 16)
    train = load_spec(str(real), "train", CLASSES, 16)
    noise = torch.randint(0, 256, train.images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert lite0_features(test.images[:5]).shape == (5, 1280)
    assert fid_lite0(train.images, test.images) < fid_lite0(noise, test.images)


@pytest.mark.slow
def test_cli_train_generate_and_quality(real, tmp_path):
    gen = tmp_path / "gen"
    proc = synthgap(
        "generator",
        "train",
        "--real",
        str(real),
        "--out",
        str(gen),
        "--preset",
        "tiny",
        "--classes",
        ",".join(CLASSES),
        "--steps",
        "4",
        in_subprocess=True,
    )
    assert "generator ready" in proc.stdout and (gen / "model_index.json").is_file()
    proc = synthgap(
        "generate",
        "--model",
        str(gen),
        "--classes",
        "bird,cat,frog",
        "--per-class",
        "4",
        "--out",
        str(tmp_path / "set"),
        "--quality-against",
        str(real),
    )
    q = json.loads((tmp_path / "set" / "quality.json").read_text())
    assert q["fid_lite0"] > 0 and "EfficientNet-Lite0" in q["fid_features"] and "FID-Lite0" in proc.stdout
    with Image.open(tmp_path / "set" / "grid.png") as grid:  # one row per class, 10 columns of 32 px tiles
        assert grid.size == (2 * (10 * 33 + 1), 2 * (3 * 33 + 1))
    again = synthgap(
        "generator",
        "train",
        "--real",
        str(real),
        "--out",
        str(gen),
        "--preset",
        "tiny",
        "--steps",
        "4",
        "--classes",
        ",".join(CLASSES),
        check=False,
    )
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    bad = synthgap(
        "generator",
        "train",
        "--real",
        str(real),
        "--out",
        str(tmp_path / "g2"),
        "--preset",
        "tiny",
        "--set",
        "image_size=18",
        check=False,
    )
    assert bad.returncode == 2 and "not divisible" in bad.stderr and "Traceback" not in bad.stderr
    assert "--minutes" in synthgap("generator", "train", "--help").stdout


@pytest.mark.slow
def test_pipeline_with_the_builtin_generator_runs_offline_end_to_end(tmp_path):
    real = make_image_folder(tmp_path / "real", ["bird", "cat"], 20, size=32)
    cfg = {
        "out": str(tmp_path / "study"),
        "real": str(real),
        "classes": ["bird", "cat"],
        "generator": "builtin",
        "builtin": {"preset": "tiny", "steps": 6},
        "generate": {"per_class": 15, "batch_size": 8, "steps": 4},
        "transfer": {
            "seeds": [0],
            "fractions": [0.0, 1.0],
            "extra_synthetic": [],
            "train_size": 24,
            "real_baseline": 32,
            "train": {"epochs": 2, "batch_size": 8, "widths": [8, 16, 16]},
        },
        "detector": {
            "backbone": "airnet",
            "val_fraction": 0.25,
            "scratch": {"epochs": 2, "batch_size": 8, "widths": [8, 16, 16]},
        },
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    proc = synthgap("pipeline", "--config", str(tmp_path / "p.yaml"), in_subprocess=True)
    study = tmp_path / "study"
    assert f"synthgap serve {study}" in proc.stdout
    # The detector stage: the real images against the generated ones, a bundle that says so
    det = json.loads((study / "detector" / "detector.json").read_text())
    assert det["specs"]["real"] == [str(real)] and det["specs"]["synthetic"] == [str(study / "synthetic")]
    assert 0 <= det["metrics"]["accuracy"] <= 1 and (study / "detector" / "report.html").is_file()
    # The real baseline: all 32 real training images alone, beside the rows of equal size (24)
    summary = json.loads((study / "transfer" / "summary.json").read_text())
    assert {r["training_set"]: r["n_train"] for r in summary} == {"real": 24, "synthetic": 24, "real-32": 32}
    # One folder a server takes whole: the trained generator, the best transfer run, the detector
    from synthgap.experiments.pipeline import models_of_run

    found = models_of_run(study)
    on_real = sorted((r["training_set"], r["accuracy"]) for r in summary if r["test_domain"] == "real")
    best = max(on_real, key=lambda kv: kv[1])[0]  # the first of the best, in folder order
    assert found == {
        "generator": str(study / "generator"),
        "classifier": str(study / "transfer" / "runs" / best / "seed0"),
        "detector": str(study / "detector"),
    }
    assert (study / "generator" / "model_index.json").is_file()
    assert (study / "transfer" / "report.html").is_file()
    rows = read_manifest(study / "synthetic")[0]
    assert len(rows) == 30 and rows[0]["generator"] == str((study / "generator").resolve())
    q = json.loads((study / "synthetic" / "quality.json").read_text())
    summary = json.loads((study / "transfer" / "summary.json").read_text())
    cas = [r["accuracy"] for r in summary if (r["train_domain"], r["test_domain"]) == ("synthetic", "real")]
    assert q["cas"] == pytest.approx(sum(cas) / len(cas)) and q["fid_lite0"] > 0
    # The report says how long the generator trained and reads the CAS against chance (1 of 2 classes)
    g = json.loads((study / "transfer" / "generator.json").read_text())
    assert (g["steps"], g["steps_asked"], g["stopped_by"], g["cut_short"], g["classes"]) == (6, 6, "steps", False, 2)
    report = (study / "transfer" / "report.html").read_text()
    assert "trained 6 steps" in report and f"{100 * (q['cas'] - 0.5):+.1f} points</b> from chance (50.0%" in report
    assert "Cut short" not in report
    first = (study / "generator" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    synthgap("pipeline", "--config", str(tmp_path / "p.yaml"))  # a re-run resumes: nothing retrained
    assert (study / "generator" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == first


def test_a_generator_finished_after_a_cut_short_run_sets_the_stale_stages_aside(real, tmp_path):
    """A main job cut short by its time limit made its set from a half-trained generator; the same command
    finishes the generator, and then the set and the stages made from it are moved aside and made again."""
    from synthgap.experiments.pipeline import set_aside_stale_stages
    from synthgap.generate import generate
    from synthgap.generate.config import GenerateConfig

    out = tmp_path / "study"
    gen = train_generator(str(real), out / "generator", tiny(steps=4), progress=False)
    generate(GenerateConfig(model=str(gen), classes=CLASSES, per_class=2, steps=2), out / "synthetic", progress=False)
    (out / "transfer").mkdir()
    (out / "transfer" / "summary.json").write_text("[]")
    assert set_aside_stale_stages(out, gen) is None  # the set is this generator's: kept
    train_generator(str(real), out / "generator", tiny(steps=6), resume=True, progress=False)  # trained on
    aside = set_aside_stale_stages(out, gen)
    assert aside is not None and aside.parent == out
    assert not (out / "synthetic").exists() and not (out / "transfer").exists()
    assert (aside / "synthetic" / "manifest.jsonl").is_file() and (aside / "transfer" / "summary.json").is_file()
    assert set_aside_stale_stages(out, gen) is None  # nothing left to set aside


def test_the_report_marks_a_generator_its_time_limit_cut_short(tmp_path):
    from synthgap.report.html import GENERATOR_RECORD, generator_note

    assert generator_note(tmp_path, 0.4, 0.6) == ""  # no generator trained by the pipeline: nothing to say
    record = {"steps": 300, "steps_asked": 1500, "stopped_by": "time_limit", "cut_short": True}
    (tmp_path / GENERATOR_RECORD).write_text(json.dumps({**record, "preset": "small", "minutes": 20.0, "classes": 6}))
    note = generator_note(tmp_path, 0.4, 0.6)
    assert "+23.3 points</b> from chance (16.7%, 6 classes)" in note and "<b>-20.0</b> from the same number" in note
    assert "Cut short" in note and "step 300 of 1500" in note


def test_the_main_jobs_generator_trains_by_steps_with_the_clock_only_as_a_safety_cap():
    """The README's first command must give the same generator on every machine: its run is `steps` long
    (a time budget would place the LR cooldown and the end by the clock), with a time limit as a cap only."""
    from synthgap.config import load_config
    from synthgap.experiments.config import PipelineConfig

    cfg = load_config(PipelineConfig, Path(__file__).resolve().parent.parent / "configs" / "pipeline-small.yaml")
    builtin = resolve_generator_config(cfg.builtin)
    assert builtin.time_budget == 0 and builtin.steps < PRESETS["small"]["steps"]
    assert builtin.time_limit * 60 > builtin.steps * builtin.batch_size / 400 * 2  # twice the run at ~400 img/s
