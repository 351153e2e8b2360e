"""`synthgap pipeline`: real data -> (train the builtin generator) -> generate -> transfer -> report,
each stage resumable."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from synthgap.config import PipelineConfig, dump_yaml
from synthgap.io import write_json, write_text

log = logging.getLogger("synthgap")


def run_pipeline(cfg: PipelineConfig, *, progress: bool = True) -> Path:
    """Run (or resume) every stage; return the path of the transfer report.

    Beside the generated set, OUT/synthetic/quality.json gets FID-Lite0 against the real test
    split, the audit's twins (within the set, with the real test and training splits), and the CAS
    (synthetic->real accuracy of the transfer study), which is itself audited (dedupe).
    """
    from synthgap import SynthgapError
    from synthgap.data import load_spec, prepare_cifar10
    from synthgap.experiments.transfer import run_transfer
    from synthgap.generate import generate
    from synthgap.generate.quality import quality_report

    if cfg.generator not in ("diffusers", "builtin"):
        raise SynthgapError(f"config field 'generator': expected diffusers or builtin, got '{cfg.generator}'")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pipeline.yaml", dump_yaml(cfg))
    if cfg.real.lower() == "cifar10":
        log.info("stage: real data (CIFAR-10)")
        prepare_cifar10(cfg.root)
    model = cfg.generate.model
    if cfg.generator == "builtin":
        from synthgap.generate.builtin import train_generator

        gen_dir = out / "generator"
        log.info("stage: train the builtin generator (%s preset) on %s -> %s", cfg.builtin.preset, cfg.real, gen_dir)
        builtin = dataclasses.replace(cfg.builtin, classes=list(cfg.classes))
        model = str(train_generator(cfg.real, gen_dir, builtin, root=cfg.root, resume=True, progress=progress))
    log.info("stage: generate %d images per class with %s", cfg.generate.per_class, model)
    gen_cfg = dataclasses.replace(cfg.generate, model=model, classes=list(cfg.classes), size=cfg.image_size)
    synthetic = generate(gen_cfg, out / "synthetic", progress=progress, ray_workers=0 if cfg.ray else None)
    real_test, real_train = (load_spec(cfg.real, split, list(cfg.classes), cfg.image_size, cfg.root) for split in ("test", "train"))
    quality = quality_report(synthetic, real_test, real_train)
    if quality.get("twins_vs_real_train"):
        log.warning("audit: %d generated images have a twin in the real training split (memorised; %s)",
                    len({t["id"] for t in quality["twins_vs_real_train"]}), synthetic / "audit" / "audit.html")
    log.info("FID-Lite0 of the generated set against %s: %.2f", real_test.name, quality["fid_lite0"] or float("nan"))
    log.info("stage: transfer study and report")
    tr_cfg = dataclasses.replace(cfg.transfer, classes=list(cfg.classes), image_size=cfg.image_size)
    records = run_transfer(cfg.real, str(synthetic), out / "transfer", tr_cfg, root=cfg.root, progress=progress)
    arms = {arm: [r["accuracy"] for r in records if (r["train_domain"], r["test_domain"]) == arm]
            for arm in (("synthetic", "real"), ("real", "real"))}
    if arms[("synthetic", "real")]:  # the study trained on synthetic alone: that is the CAS
        quality["cas"] = sum(arms[("synthetic", "real")]) / len(arms[("synthetic", "real")])
        quality["real_to_real"] = (sum(arms[("real", "real")]) / len(arms[("real", "real")])) if arms[("real", "real")] else None
        quality["cas_source"] = f"{out / 'transfer'}: accuracy on real test images of {tr_cfg.train.model} trained on the set alone"
        write_json(synthetic / "quality.json", quality)
        log.info("CAS (synthetic->real accuracy): %.1f%% (real->real %s)", 100 * quality["cas"],
                 f"{100 * quality['real_to_real']:.1f}%" if quality["real_to_real"] is not None else "not run")
    return out / "transfer" / "report.html"
