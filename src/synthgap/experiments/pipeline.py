"""`synthgap pipeline`: real data -> (train the builtin generator) -> generate -> transfer -> report ->
a detector of the generated images (-> a detector of photos, when configured), each stage resumable; the folder is one a server takes whole
(`synthgap serve OUT`, see `synthgap.artifacts.models_of_run`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from synthgap.artifacts import models_of_run  # noqa: F401 (its home is synthgap.artifacts; importable from here too)
from synthgap.config import dump_yaml
from synthgap.experiments.config import PipelineConfig
from synthgap.io import write_json, write_text

log = logging.getLogger("synthgap")


# The settings the pipeline passes down to its stages: (top-level field, stage, the stage's name for it).
SHARED = [("classes", stage, "classes") for stage in ("builtin", "generate", "transfer", "detector")] + [
    ("image_size", "builtin", "image_size"),
    ("image_size", "generate", "size"),
    ("image_size", "transfer", "image_size"),
    ("image_size", "detector", "image_size"),
]


def check_shared(cfg: PipelineConfig, written: dict) -> None:
    """Refuse a stage field the user wrote (`written`: config.written_fields) that contradicts the
    pipeline's shared setting, which every stage gets: it would otherwise be overwritten silently."""
    from synthgap import SynthgapError
    from synthgap.data.sets import parse_classes

    for top, stage, name in SHARED:
        value, ours = (written.get(stage) or {}).get(name), getattr(cfg, top)
        same = (lambda a, b: parse_classes(a) == parse_classes(b)) if top == "classes" else (lambda a, b: a == b)
        if value is not None and not same(value, ours):
            raise SynthgapError(
                f"config field '{stage}.{name}' ({value}) contradicts '{top}' ({ours}): the pipeline "
                f"gives every stage its top-level '{top}'; set it there once and drop '{stage}.{name}'"
            )


def run_pipeline(cfg: PipelineConfig, *, progress: bool = True, written: dict | None = None) -> Path:
    """Run (or resume) every stage; return the path of the transfer report. `written`: the fields the user
    wrote (config.written_fields), checked against the shared settings (check_shared).

    Beside the generated set, OUT/synthetic/quality.json gets FID-Lite0 against the real test
    split, the audit's twins (within the set, with the real test and training splits), and the CAS
    (synthetic->real accuracy of the transfer study), which is itself audited (dedupe).
    """
    from synthgap import SynthgapError
    from synthgap.data import load_spec, prepare_cifar10
    from synthgap.data.spec import parse_spec
    from synthgap.experiments.transfer import run_transfer
    from synthgap.generate import generate
    from synthgap.generate.quality import quality_report

    check_shared(cfg, written or {})
    photo_specs(cfg)  # a half-written photo_detector section fails now, not after an hour of other stages
    if cfg.generator not in ("diffusers", "builtin"):
        raise SynthgapError(f"config field 'generator': expected diffusers or builtin, got '{cfg.generator}'")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pipeline.yaml", dump_yaml(cfg))
    if parse_spec(cfg.real).kind == "cifar10":
        log.info("stage: real data (CIFAR-10)")
        prepare_cifar10(cfg.root)
    model = cfg.generate.model
    if cfg.generator == "builtin":
        from synthgap.generate.builtin import train_generator

        gen_dir = out / "generator"
        log.info("stage: train the builtin generator (%s preset) on %s -> %s", cfg.builtin.preset, cfg.real, gen_dir)
        builtin = dataclasses.replace(cfg.builtin, classes=list(cfg.classes))
        model = str(train_generator(cfg.real, gen_dir, builtin, root=cfg.root, resume=True, progress=progress))
        set_aside_stale_stages(out, gen_dir)
    log.info("stage: generate %d images per class with %s", cfg.generate.per_class, model)
    gen_cfg = dataclasses.replace(cfg.generate, model=model, classes=list(cfg.classes), size=cfg.image_size)
    on_ray = {}
    if cfg.ray:  # generation and the transfer runs on the same cluster
        from synthgap.cluster import connect, ray_address

        on_ray = {"ray": ray_address(cfg.ray_address), "ray_cpus": cfg.ray_cpus, "ray_gpus": cfg.ray_gpus}
        connect(on_ray["ray"])
    synthetic = generate(gen_cfg, out / "synthetic", progress=progress, ray_workers=0 if cfg.ray else None)
    real_test, real_train = (
        load_spec(cfg.real, split, list(cfg.classes), cfg.image_size, cfg.root) for split in ("test", "train")
    )
    quality = quality_report(synthetic, real_test, real_train)
    if quality.get("twins_vs_real_train"):
        log.warning(
            "audit: %d generated images have a twin in the real training split (memorised; %s)",
            len({t["id"] for t in quality["twins_vs_real_train"]}),
            synthetic / "audit" / "audit.html",
        )
    log.info("FID-Lite0 of the generated set against %s: %.2f", real_test.name, quality["fid_lite0"] or float("nan"))
    log.info("stage: transfer study and report")
    tr_cfg = dataclasses.replace(cfg.transfer, classes=list(cfg.classes), image_size=cfg.image_size)
    records = run_transfer(
        cfg.real, str(synthetic), out / "transfer", tr_cfg, root=cfg.root, progress=progress, **on_ray
    )
    arms = {
        arm: [r["accuracy"] for r in records if (r["train_domain"], r["test_domain"]) == arm]
        for arm in (("synthetic", "real"), ("real", "real"), ("real-baseline", "real"))
    }
    if arms[("synthetic", "real")]:  # the study trained on synthetic alone: that is the CAS
        quality["cas"] = sum(arms[("synthetic", "real")]) / len(arms[("synthetic", "real")])
        quality["real_to_real"] = (
            (sum(arms[("real", "real")]) / len(arms[("real", "real")])) if arms[("real", "real")] else None
        )
        if arms[("real-baseline", "real")]:
            quality["real_to_real_baseline"] = sum(arms[("real-baseline", "real")]) / len(
                arms[("real-baseline", "real")]
            )
        quality["cas_source"] = (
            f"{out / 'transfer'}: accuracy on real test images of {tr_cfg.train.model} trained on the set alone"
        )
        write_json(synthetic / "quality.json", quality)
        log.info(
            "CAS (synthetic->real accuracy): %.1f%% (real->real at the same size %s%s)",
            100 * quality["cas"],
            f"{100 * quality['real_to_real']:.1f}%" if quality["real_to_real"] is not None else "not run",
            f"; with {cfg.transfer.real_baseline} real images {100 * quality['real_to_real_baseline']:.1f}%"
            if "real_to_real_baseline" in quality
            else "",
        )
    if cfg.generator == "builtin":  # the report says how long the generator trained, and if it was cut short
        from synthgap.report.html import GENERATOR_RECORD, write_report

        t = json.loads((gen_dir / "training.json").read_text())
        record = {k: t.get(k) for k in ("steps", "steps_asked", "stopped_by", "cut_short")}
        record.update(preset=cfg.builtin.preset, minutes=round(t["seconds"] / 60, 1), classes=len(cfg.classes))
        write_json(out / "transfer" / GENERATOR_RECORD, record)
        write_report(out / "transfer")
        if record["cut_short"]:
            log.warning(
                "the generator was cut short by its time limit (step %s of %s): the report says so; run the "
                "same command again to finish it",
                record["steps"],
                record["steps_asked"],
            )
    if cfg.detect:
        run_pipeline_detector(cfg, synthetic, out / "detector", progress=progress)
    run_pipeline_photo_detector(cfg, out / "photo-detector", progress=progress)
    return out / "transfer" / "report.html"


DERIVED_STAGES = ("synthetic", "transfer", "detector")  # made from the generator's images, in this order


def set_aside_stale_stages(out: Path, gen_dir: Path) -> Path | None:
    """When the generator changed since OUT/synthetic was made from it (a run cut short by its time limit,
    then finished by the same command), the set and every stage made from it describe another model: move
    them, whole, into OUT/superseded-<time>/ (nothing is deleted) so this run makes them again."""
    import time

    from synthgap.generate.generator import CONFIG
    from synthgap.io import sha256_file
    from synthgap.runs import RunDir

    made_from = ((RunDir(out / "synthetic", CONFIG, "images").read() or {}).get("identity") or {}).get("model_sha256")
    weights = gen_dir / "unet" / "diffusion_pytorch_model.safetensors"
    if made_from is None or made_from == sha256_file(weights):
        return None
    aside = out / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for name in DERIVED_STAGES:
        if (out / name).exists():
            (out / name).rename(aside / name)
    log.warning(
        "the generator changed since %s was made from it (it was cut short before): that set and the stages "
        "made from it are moved to %s and made again",
        out / "synthetic",
        aside,
    )
    return aside


def expand_spec(spec: str, root: str | None = None) -> str:
    """A data spec with `$SYNTHGAP_DATA` (or `${SYNTHGAP_DATA}`) standing for the data root (config field
    `root`, else the environment variable, else the user cache; synthgap.data.sets.data_root) and any other
    `$VARIABLE` taken from the environment."""
    import os
    import re

    from synthgap.data.sets import data_root

    spec = re.sub(r"\$(SYNTHGAP_DATA\b|\{SYNTHGAP_DATA\})", lambda _: str(data_root(root)), spec)
    return os.path.expandvars(spec)


def photo_specs(cfg: PipelineConfig) -> tuple[list[str], list[str]] | None:
    """The photo-detector stage's real and synthetic specs, expanded (expand_spec); None when the config
    has none (no such stage). A stage with one side only, an unset variable or a bad detector config is an
    error naming the field."""
    from synthgap import SynthgapError
    from synthgap.data.spec import is_hub_spec
    from synthgap.detect.train import check_detector_config

    pd = cfg.photo_detector
    if not pd.real and not pd.synthetic:
        return None
    for side in ("real", "synthetic"):
        if not getattr(pd, side):
            raise SynthgapError(
                f"config field 'photo_detector.{side}': empty; the photo-detector stage needs both real and "
                "synthetic photo specs (or neither, to skip it)"
            )
    sides = []
    for side in ("real", "synthetic"):
        expanded = []
        for i, spec in enumerate(getattr(pd, side)):
            full = expand_spec(spec, cfg.root)
            if "$" in full and not is_hub_spec(full):
                raise SynthgapError(
                    f"config field 'photo_detector.{side}[{i}]': '{spec}' names an environment variable that is not set"
                )
            expanded.append(full)
        sides.append(expanded)
    try:
        check_detector_config(pd.config)
    except SynthgapError as e:
        raise SynthgapError(str(e).replace("config field '", "config field 'photo_detector.config.")) from None
    return sides[0], sides[1]


def run_pipeline_photo_detector(cfg: PipelineConfig, out: Path, *, progress: bool = True) -> dict | None:
    """The optional photo-detector stage: `photo_detector.real` against `photo_detector.synthetic` with
    `photo_detector.config`, as `synthgap detector train` would, into `out` (OUT/photo-detector); skipped
    (None) when the config names no photos. A finished bundle of the same config and specs is read back,
    an interrupted run resumes its stages."""
    import json

    from synthgap.detect.data import detector_data
    from synthgap.detect.train import run_detector, run_folder

    specs = photo_specs(cfg)
    if specs is None:
        log.info("stage: photo detector: skipped (no photo_detector.real and .synthetic in the config)")
        return None
    det, pd = cfg.photo_detector.config, cfg.photo_detector
    asked = {"real": list(pd.real), "synthetic": list(pd.synthetic)}  # as written: the same data root may move
    record = out / "pipeline_specs.json"
    if (
        (out / "detector.json").exists()
        and run_folder(out).matches(det)
        and record.is_file()
        and json.loads(record.read_text()) == asked
    ):
        log.info("stage: photo detector: done before, read back from %s", out)
        return json.loads((out / "detector.json").read_text())
    real, synthetic = specs
    log.info(
        "stage: photo detector (%s, input %s) of %s (real) against %s -> %s",
        det.backbone,
        det.input,
        ", ".join(real),
        ", ".join(synthetic),
        out,
    )
    data = detector_data(det, real=real, synthetic=synthetic, root=cfg.root, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    write_json(record, asked)
    meta = run_detector(data, det, out, resume=True, progress=progress)
    m = meta["metrics"]
    log.info(
        "photo detector: test accuracy %.1f%%, AUC %.3f on %d held-out images (%s)",
        100 * m["accuracy"],
        m["auc"],
        m["n"],
        meta["preprocessing"].get("input_why", "input: resize"),
    )
    return meta


def run_pipeline_detector(cfg: PipelineConfig, synthetic: Path, out: Path, *, progress: bool = True) -> dict:
    """The detector stage: `cfg.real` against the generated set, as `synthgap detector train` would; a
    finished bundle is read back, an interrupted run resumes its stages."""
    import json

    from synthgap.detect.data import assemble, load_sources
    from synthgap.detect.train import run_detector, run_folder

    det = dataclasses.replace(cfg.detector, classes=list(cfg.classes), image_size=cfg.image_size)
    if (out / "detector.json").exists() and run_folder(out).matches(det):
        log.info("stage: detector: done before, read back from %s", out)
        return json.loads((out / "detector.json").read_text())
    log.info("stage: detector (%s) of %s (real) against the generated set -> %s", det.backbone, cfg.real, out)
    loaded = load_sources(
        cfg.real,
        str(synthetic),
        classes=det.classes,
        size=det.image_size,
        root=cfg.root,
        dedupe=det.dedupe,
        progress=progress,
    )
    # Unless the config caps them, both sides get as many images as the generated set has, so the real side
    # (e.g. CIFAR-10's 30,000) does not outweigh it.
    generated = {split: len(loaded.sets[loaded.sides[1][0].name, split]) for split in ("train", "test")}
    if det.train_size is None or det.test_size is None:
        log.info(
            "detector: up to %d training and %d test images per side (the generated set's splits)",
            det.train_size or generated["train"],
            det.test_size or generated["test"],
        )
    data = assemble(
        loaded,
        val_fraction=det.val_fraction,
        train_size=det.train_size or generated["train"],
        test_size=det.test_size or generated["test"],
        seed=det.seed,
        normalize_format=det.normalize_quality if det.normalize_format else None,
    )
    meta = run_detector(data, det, out, resume=True, progress=progress)
    m = meta["metrics"]
    log.info(
        "detector: test accuracy %.1f%%, AUC %.3f on %d held-out images (%s vs the generated set)",
        100 * m["accuracy"],
        m["auc"],
        m["n"],
        cfg.real,
    )
    return meta
