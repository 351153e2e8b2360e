"""`synthgap pipeline`: real data -> generate -> transfer -> report, each stage resumable."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from synthgap.config import PipelineConfig, dump_yaml
from synthgap.io import write_text

log = logging.getLogger("synthgap")


def run_pipeline(cfg: PipelineConfig, *, progress: bool = True) -> Path:
    """Run (or resume) every stage; return the path of the transfer report."""
    from synthgap.data import prepare_cifar10
    from synthgap.experiments.transfer import run_transfer
    from synthgap.generate import generate

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pipeline.yaml", dump_yaml(cfg))
    if cfg.real.lower() == "cifar10":
        log.info("stage 1/3: real data (CIFAR-10)")
        prepare_cifar10(cfg.root)
    log.info("stage 2/3: generate %d images per class with %s", cfg.generate.per_class, cfg.generate.model)
    gen_cfg = dataclasses.replace(cfg.generate, classes=list(cfg.classes), size=cfg.image_size)
    synthetic = generate(gen_cfg, out / "synthetic", progress=progress, ray_workers=0 if cfg.ray else None)
    log.info("stage 3/3: transfer study and report")
    tr_cfg = dataclasses.replace(cfg.transfer, classes=list(cfg.classes), image_size=cfg.image_size)
    run_transfer(cfg.real, str(synthetic), out / "transfer", tr_cfg, root=cfg.root, progress=progress)
    return out / "transfer" / "report.html"
