"""The `synthgap` command: a thin layer over the Python API."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from synthgap import SynthgapError, __version__
from synthgap.data.spec import DATA_HELP, SPEC_HELP

log = logging.getLogger("synthgap")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return f"warning: {msg}" if record.levelno >= logging.WARNING else msg


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


root_option = click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Data root holding CIFAR-10 (default: $SYNTHGAP_DATA, else ~/.cache/synthgap/data).",
)
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config file; see configs/ for examples.",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config field, e.g. --set train.epochs=5 (repeatable).",
)


def _spec_help_in_doc(f):
    """A command whose docstring says SPEC_HELP: the one help text of the data specs (synthgap.data.spec) there."""
    f.__doc__ = f.__doc__.replace("SPEC_HELP", SPEC_HELP)
    return f


def ray_options(what: str):
    """--ray [ADDRESS|auto|local], --ray-cpus and --ray-gpus: run `what` as Ray tasks (synthgap.cluster)."""
    opts = [
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value="local",
            default=None,
            metavar="[ADDRESS|auto|local]",
            help=f"Run the {what} as Ray tasks: a bare --ray (or local) starts Ray on this machine, auto joins the "
            "running cluster ($RAY_ADDRESS or `ray start`), else the cluster at ADDRESS. --out must be on storage "
            "every node sees.",
        ),
        click.option(
            "--ray-cpus",
            type=click.FloatRange(min=0, min_open=True),
            default=1,
            show_default=True,
            help="CPUs per Ray task (its torch threads, unless the config sets threads).",
        ),
        click.option(
            "--ray-gpus", type=click.FloatRange(min=0), default=0, show_default=True, help="GPUs per Ray task."
        ),
    ]

    def wrap(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return wrap


def _ray_kwargs(ray_address, ray_cpus, ray_gpus) -> dict:
    if ray_address is None and (ray_cpus != 1 or ray_gpus != 0):
        raise SynthgapError("--ray-cpus and --ray-gpus are the resources of each Ray task: add --ray")
    if ray_address is not None:  # join or start Ray now: a missing cluster fails before the data is loaded
        from synthgap.cluster import connect

        connect(ray_address)
    return {"ray": ray_address, "ray_cpus": ray_cpus, "ray_gpus": ray_gpus}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="synthgap")
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
def cli(verbose: bool) -> None:
    """synthgap: generate synthetic image datasets and measure their gap to real data.

    \b
    Typical use:
      synthgap pipeline --config configs/pipeline-small.yaml   # everything, in one command
      synthgap data cifar10 --root DATA           # fetch or locate CIFAR-10
      synthgap generate --model stabilityai/sd-turbo --per-class 100 --out runs/synthetic
      synthgap transfer --real cifar10 --synthetic runs/synthetic --out runs/study --quick
      synthgap report runs/study                  # rebuild the report of a finished study
    """
    _setup_logging(verbose)


@cli.group()
def data() -> None:
    """Prepare datasets."""


@data.command("cifar10")
@root_option
@click.option("--no-download", is_flag=True, help="Only look under the data root; never download.")
def data_cifar10(root: str | None, no_download: bool) -> None:
    """Locate CIFAR-10 under the data root, or download and MD5-check the official tarball.

    Accepted offline under the root: cifar-10-python.tar.gz, the extracted cifar-10-batches-py/,
    or an image-folder copy (cifar10-jpeg/train/<class>/*, .../test/<class>/*).
    """
    from synthgap.data import prepare_cifar10

    kind, where = prepare_cifar10(root, download=not no_download)
    click.echo(f"CIFAR-10 ready ({kind}) at {where}")


@cli.command()
@click.option(
    "--data",
    "spec",
    required=True,
    help=f"Training data, {SPEC_HELP}.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--classes", default=None, help="Comma-separated class names (default: bird,cat,deer,dog,frog,horse).")
@click.option("--size", default=32, show_default=True, help="Image size the data is resized to.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option(
    "--dedupe",
    type=click.Choice(["drop", "warn", "off"]),
    default="drop",
    show_default=True,
    help="The data audit first: drop test images with a twin in the training split and second copies inside "
    "it (warn: only report them; off: no audit).",
)
@root_option
@config_option
@set_option
def train(spec, out, classes, size, resume, dedupe, root, config_file, overrides) -> None:
    """Train one classifier on a dataset's train split and evaluate it on its test split.

    The config file holds training fields (model, epochs, lr, augment, ...) at the top level.
    """
    from synthgap.audit import AuditPart, apply_dedupe, audit_record
    from synthgap.config import dump_yaml, load_config
    from synthgap.data import load_spec, parse_classes
    from synthgap.io import environment, write_json, write_text
    from synthgap.report import plot_confusion
    from synthgap.train import evaluate, fit
    from synthgap.train.classifier import classifier_meta, save_classifier
    from synthgap.train.config import TrainConfig

    cfg = load_config(TrainConfig, config_file, overrides)
    names = parse_classes(classes)
    parts = [AuditPart(spec, split, "real", load_spec(spec, split, names, size, root)) for split in ("train", "test")]
    (train_set, test_set), audited = apply_dedupe(parts, dedupe)
    out = Path(out)
    write_text(out / "config.yaml", dump_yaml(cfg))
    env = environment()
    env["data"] = {"train": train_set.describe(), "test": test_set.describe()}
    env["audit"] = audit_record(audited, dedupe)
    if audited:
        audited.write(out / "audit")
    write_json(out / "environment.json", env)
    result = fit(train_set, cfg, out_dir=out, resume=resume)
    metrics = evaluate(result.model, test_set, tta=cfg.tta, device=result.device)
    metrics.update(
        history=result.history,
        train_seconds=round(result.seconds, 1),
        images_per_second=round(result.images_per_second, 1),
    )
    trained_on = {
        "spec": spec,
        "n": len(train_set),
        "class_counts": train_set.class_counts(),
        "sha256": train_set.sha256(),
    }
    scores = {k: metrics[k] for k in ("accuracy", "macro_f1", "n")}
    save_classifier(out, result.model, classifier_meta(cfg, names, size, scores, trained_on, name=out.name))
    write_json(out / "metrics.json", metrics)
    plot_confusion(metrics, out / "confusion.png", f"{spec} test")
    click.echo(
        f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"({result.seconds:.0f} s of training, {result.images_per_second:.0f} img/s); outputs in {out}"
    )


@cli.command()
@click.option("--real", required=True, metavar="SPEC", help=f"Real data, {SPEC_HELP}.")
@click.option("--synthetic", required=True, metavar="SPEC", help=f"Synthetic data, {SPEC_HELP}.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (re-run to resume).")
@click.option(
    "--quick",
    is_flag=True,
    help="Small preset: 2 seeds, 3 fractions, 3,000 training images, about 4 minutes on 2 cores.",
)
@ray_options("runs (one per training set and seed)")
@root_option
@config_option
@set_option
def transfer(real, synthetic, out, quick, ray_address, ray_cpus, ray_gpus, root, config_file, overrides) -> None:
    """Train on real, synthetic and mixed sets; test every model on real and synthetic images.

    Writes config.yaml, environment.json, summary.json/.csv/.md, runs/<set>/seed<k>/ (metrics.json,
    confusion PNGs), accuracy_vs_fraction.png and report.html to --out. Running the same command again
    resumes an interrupted study, with or without --ray.

    With real_per_class (e.g. --config configs/study-curve.yaml), the real-data scarcity curve: runs on k
    real images per class, alone and with the synthetic set, and the exchange rate (how many real images
    the synthetic set is worth); gap_closing adds arms that try to close the gap (finetune, adabn,
    augment, filter, selftrain). See docs/transfer.md.
    """
    from synthgap.config import load_config
    from synthgap.experiments import run_transfer
    from synthgap.experiments.config import QUICK, TransferConfig
    from synthgap.experiments.scarcity import curve_rows, headline
    from synthgap.report import aggregate, markdown_table
    from synthgap.report.tables import arms_table, scarcity_table

    on_ray = _ray_kwargs(ray_address, ray_cpus, ray_gpus)
    cfg = load_config(TransferConfig, config_file, overrides, presets=[QUICK] if quick else [])
    records = run_transfer(real, synthetic, out, cfg, root=root, **on_ray)
    fixed = [r for r in records if r.get("real_per_class") is None]
    if fixed:
        click.echo(markdown_table(aggregate(fixed)))
    curve = curve_rows(records)
    if curve:
        click.echo(scarcity_table(curve) + "\n" + arms_table(curve) + "\n" + headline(curve))
    click.echo(f"report: {Path(out) / 'report.html'}")


@cli.command()
@click.option(
    "--model",
    default=None,
    help="diffusers text-to-image model id or local folder [default: stabilityai/sd-turbo], "
    "a folder made by `synthgap generator train` (class-conditional: no prompts), "
    "or a `synthgap pipeline` run folder (its generator, as `synthgap serve RUN_DIR` takes it); "
    "'synthgap-tiny' builds a tiny offline demo pipeline (noise-like images).",
)
@click.option("--classes", default=None, help="Comma-separated class names [default: bird,cat,deer,dog,frog,horse].")
@click.option("--per-class", type=int, default=None, help="Images per class [default: 100].")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder (re-run to resume).")
@click.option(
    "--seed", type=int, default=None, help="Run seed: image i of class c gets a seed derived from (seed, c, i)."
)
@click.option("--batch-size", type=int, default=None, help="Images per pipeline call [default: 8].")
@click.option(
    "--templates", type=click.Path(dir_okay=False, exists=True), default=None, help="Your own prompt template YAML."
)
@click.option(
    "--new", is_flag=True, help="If --out holds a run with another config, write to a fresh folder beside it."
)
@click.option("--ray", "use_ray", is_flag=True, help="Shard the work over Ray actors (a running cluster, or local).")
@click.option(
    "--ray-workers", type=int, default=0, help="Number of Ray actors [default: one per GPU, else per CPU group]."
)
@click.option(
    "--quality-against",
    "quality_against",
    default=None,
    metavar="SPEC",
    help="After generating, write OUT/quality.json: FID-Lite0 against SPEC's test split (e.g. cifar10) and "
    "the data audit's twins within the set, with SPEC's test split and with its training split (memorisation).",
)
@click.option(
    "--reproduce",
    nargs=2,
    metavar="DIR ID",
    default=None,
    help="Regenerate image ID of folder DIR alone and report its difference to the stored one.",
)
@click.option(
    "--sign",
    nargs=2,
    metavar="CERT_CHAIN KEY",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Embed a signed C2PA manifest in every image (PEM certificate chain and its private key; "
    "config: sign.cert_chain, sign.key, sign.alg). Adds a few KB per image: the run prints how much.",
)
@config_option
@set_option
def generate(
    model,
    classes,
    per_class,
    out,
    seed,
    batch_size,
    templates,
    new,
    use_ray,
    ray_workers,
    quality_against,
    reproduce,
    sign,
    config_file,
    overrides,
) -> None:
    """Generate a labelled synthetic image dataset with a diffusers text-to-image model.

    Prompts come from per-class templates (contexts, viewpoints, lighting, styles); each image has its
    own seed, so any single image can be regenerated alone (--reproduce). Images are saved at the
    target size with their generation record (PNG text chunk or JPEG comment) and marked AI-generated
    in XMP (IPTC digital source type trainedAlgorithmicMedia); --sign adds a signed C2PA manifest.
    They are listed in OUT/manifest.jsonl, the resolved config in OUT/generation.yaml. Re-running the
    same command resumes; a changed config is refused.
    """
    from synthgap.config import load_config
    from synthgap.generate import generate as run_generate
    from synthgap.generate import reproduce as run_reproduce
    from synthgap.generate.config import GenerateConfig

    if reproduce:
        path, diff = run_reproduce(reproduce[0], reproduce[1])
        click.echo(f"regenerated {reproduce[1]} -> {path}; max pixel difference to the stored image: {diff:g}")
        return
    if not out:
        raise SynthgapError("--out is required (the folder to write the dataset to)")
    flags = {
        "model": model,
        "classes": classes,
        "per_class": per_class,
        "seed": seed,
        "batch_size": batch_size,
        "templates": templates,
        "sign": {"cert_chain": sign[0], "key": sign[1]} if sign else None,
    }
    cfg = load_config(GenerateConfig, config_file, overrides, flags=flags)
    if cfg.model:  # a pipeline run folder: its generator
        import dataclasses

        from synthgap.artifacts import resolve_model

        cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model, "generator"))
    written = run_generate(_resolve_tiny(cfg, Path(out)), out, new=new, ray_workers=ray_workers if use_ray else None)
    click.echo(f"dataset ready: {written} (manifest: {written / 'manifest.jsonl'})")
    if quality_against:
        from synthgap.data import load_spec, parse_classes
        from synthgap.generate.quality import quality_report

        real, real_train = (
            load_spec(quality_against, split, parse_classes(cfg.classes), cfg.size) for split in ("test", "train")
        )
        q = quality_report(written, real, real_train)
        click.echo(
            f"quality: FID-Lite0 {q['fid_lite0']:.2f} against {real.name}; twin pairs: "
            f"{len(q['twins_within'])} within the set, {len(q['twins_vs_real_test'])} with {real.name}, "
            f"{len(q['twins_vs_real_train'])} with {real_train.name} (memorised); "
            f"{len(q['blanked_and_regenerated'])} blanked images regenerated ({written / 'quality.json'}, "
            f"pairs side by side: {written / 'audit' / 'audit.html'})"
        )


@cli.group()
def generator() -> None:
    """Train synthgap's own class-conditional diffusion generator (no model hub needed).

    \b
      synthgap generator train --real cifar10 --out runs/generator --minutes 60
      synthgap generate --model runs/generator --per-class 1000 --out runs/synthetic
    """


@generator.command("train")
@click.option(
    "--real",
    required=True,
    metavar="SPEC",
    help=f"Real training images, {SPEC_HELP}.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="GEN_DIR: the model, checkpoint, grids and figures."
)
@click.option(
    "--preset", default=None, help="tiny (tests, seconds) | small (CPU, under an hour) | base (GPU) [default: small]."
)
@click.option("--classes", default=None, help="Comma-separated class names [default: bird,cat,deer,dog,frog,horse].")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: the preset's].")
@click.option(
    "--minutes",
    "time_budget",
    type=float,
    default=None,
    help="Training time budget over all resumes; stops and saves the model when reached. It shapes the LR "
    "schedule by the clock, so the result depends on the machine's speed [default: none; the run is --steps long].",
)
@click.option(
    "--time-limit",
    type=float,
    default=None,
    help="Minutes after which training stops and saves, as a safety cap only: a run that ends by --steps is "
    "the same on every machine; one the cap stops is marked cut short [default: none].",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint (e.g. with more --steps).")
@root_option
@config_option
@set_option
def generator_train(
    real, out, preset, classes, steps, time_budget, time_limit, resume, root, config_file, overrides
) -> None:
    """Train a class-conditional diffusion model (diffusers UNet2DModel) on real images.

    DDPM noise for training, label dropout for classifier-free guidance, EMA weights, a sample grid
    per class every few hundred steps (OUT/samples/) and atomic checkpoints; Ctrl-C saves one, and
    --resume continues the same loss curve. The result is a diffusers pipeline in OUT: sample it
    with `synthgap generate --model OUT`.
    """
    from synthgap.config import load_config
    from synthgap.generate.builtin import train_generator
    from synthgap.generate.config import GeneratorConfig

    flags = {
        "preset": preset,
        "classes": classes,
        "steps": steps,
        "time_budget": time_budget,
        "time_limit": time_limit,
    }
    cfg = load_config(GeneratorConfig, config_file, overrides, flags=flags)
    written = train_generator(real, out, cfg, root=root, resume=resume)
    click.echo(
        f"generator ready: {written} (sample grid: {written / 'samples' / 'final.png'}); "
        f"sample it with: synthgap generate --model {written} --out DIR"
    )


TINY_MODEL = "synthgap-tiny"


def _resolve_tiny(cfg, out: Path):
    """'synthgap-tiny': save the tiny offline pipeline beside the output and load it like any model folder."""
    import dataclasses

    if cfg.model != TINY_MODEL:
        return cfg
    from synthgap.generate import save_tiny_pipeline

    folder = out.parent / f".{out.name}-tiny-model"
    if not (folder / "model_index.json").exists():
        save_tiny_pipeline(folder)
    return dataclasses.replace(cfg, model=str(folder.resolve()))


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    required=True,
    help="Pipeline YAML (see configs/pipeline-*.yaml).",
)
@set_option
def pipeline(config_file, overrides) -> None:
    """The whole study in one command: real data -> generate -> transfer -> report -> detector.

    Writes OUT/synthetic (the generated set), OUT/transfer (the study and its report.html) and
    OUT/detector (a detector of the generated images against the real ones); with the builtin
    generator also OUT/generator; with a photo_detector section (real and synthetic photo specs)
    also OUT/photo-detector, a detector of photo-sized images. Re-running resumes every stage.
    Serve what it made with `synthgap serve OUT`.
    """
    import dataclasses

    from synthgap.config import load_config, written_fields
    from synthgap.experiments.config import PipelineConfig
    from synthgap.experiments.pipeline import run_pipeline

    cfg = load_config(PipelineConfig, config_file, overrides)
    cfg = dataclasses.replace(cfg, generate=_resolve_tiny(cfg.generate, Path(cfg.out) / "synthetic"))
    report_path = run_pipeline(cfg, written=written_fields(config_file, overrides))
    click.echo(f"report: {report_path}")
    click.echo(f"serve its models: synthgap serve {cfg.out}   (then open http://127.0.0.1:8000)")


@cli.command()
@click.argument("specs", nargs=-1, metavar="SPEC...")
@click.option(
    "--synthetic",
    "synthetic_specs",
    multiple=True,
    metavar="SPEC",
    help="A set to audit as synthetic (repeatable); a `synthgap generate` folder is taken as synthetic by itself.",
)
@click.option(
    "--against",
    "against_specs",
    multiple=True,
    metavar="SPEC",
    help="A reference set (repeatable): only its pairs with the SPECs count, e.g. the real set a generator "
    "was trained on, or a detector's training data.",
)
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Write audit.json and audit.html here.")
@click.option("--classes", default=None, help="Comma-separated class names [default: bird,cat,deer,dog,frog,horse].")
@click.option(
    "--size",
    default=32,
    show_default=True,
    help="Size the images are decoded to for the near-twin search "
    "(exact twins are always compared at their native size).",
)
@click.option(
    "--radius",
    default=10,
    show_default=True,
    help="Hamming radius (of 64 bits) of the perceptual hash for a candidate pair.",
)
@click.option(
    "--min-correlation",
    default=0.96,
    show_default=True,
    help="Pixel correlation (at the best small shift) that confirms a candidate as a near twin.",
)
@root_option
@_spec_help_in_doc
def audit(specs, synthetic_specs, against_specs, out, classes, size, radius, min_correlation, root) -> None:
    """Find duplicate images within and across data sets before any number is reported.

    \b
    For every pair of twins it says where it lies: within a training or a test split, between the
    train and test splits of one set (leakage), between a synthetic image and a real training image
    (memorisation), and whether their labels agree. Exact twins have the same pixels at their native
    size (a JPEG and a PNG of the same pixels, or files that differ only in metadata); near twins have
    perceptual hashes within --radius bits and a pixel correlation of at least --min-correlation.

    Each SPEC is SPEC_HELP; or any folder of images, or a REAL/FAKE root (CIFAKE style).

    \b
    Example:
      synthgap audit cifar10 --synthetic DATA/cifake-sd14-fake --out runs/audit
    """
    from synthgap.audit import AuditSettings, load_parts, summary_lines
    from synthgap.audit import audit as run_audit
    from synthgap.data import parse_classes

    if not specs and not synthetic_specs:
        raise SynthgapError("give at least one data set to audit (SPEC or --synthetic SPEC)")
    settings = AuditSettings(radius=radius, min_correlation=min_correlation)
    settings.check()
    names = parse_classes(classes)
    parts = []
    for spec, synthetic, reference in (
        [(s, False, False) for s in specs]
        + [(s, True, False) for s in synthetic_specs]
        + [(s, False, True) for s in against_specs]
    ):
        parts += load_parts(spec, classes=names, size=size, root=root, synthetic=synthetic, reference=reference)
    result = run_audit(parts, settings)
    for line in summary_lines(result.summary()):
        click.echo(line)
    if out:
        page = result.write(out)
        click.echo(f"report: {page} (pairs with paths: {Path(out) / 'audit.json'})")
    else:
        click.echo("(--out DIR writes audit.json with every pair and audit.html with the pairs side by side)")


@cli.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
def report(out) -> None:
    """Rebuild summary.md, the plots and report.html of a transfer output folder."""
    from synthgap.report import write_report

    click.echo(f"report: {write_report(out)}")


# ---------------------------------------------------------------- detector


class RegisteredName(click.Choice):
    """The names of one kind of model in synthgap.models.registry, as a click.Choice; an unknown name is the
    registry's own error, listing the known ones."""

    def __init__(self, kind: str):
        from synthgap.models.registry import names

        super().__init__(names(kind))
        self.kind = kind

    def convert(self, value, param, ctx):
        from synthgap.models.registry import lookup

        try:
            lookup(self.kind, value, field="")  # click names the option: "Invalid value for '--backbone': ..."
        except SynthgapError as e:
            self.fail(str(e), param, ctx)
        return value


def detector_data_options(f):
    """The data and model options shared by `detector train`, `tune` and `compare`."""
    from synthgap.models.registry import BACKBONES

    opts = [
        click.option(
            "--real",
            multiple=True,
            metavar="[NAME=]SPEC",
            help=f"Real images, {SPEC_HELP}; or any folder of images (searched recursively; train/ and test/ "
            "honoured). Repeat it for several sources.",
        ),
        click.option(
            "--synthetic",
            multiple=True,
            metavar="[NAME=]SPEC",
            help="Synthetic images: same kinds as --real (e.g. a synthgap generate folder). Repeat it for several "
            "generators; a folder with a sub-folder per generator, or a manifest whose lines name several "
            "`generator`s, is one source each. Training draws each side's sources in equal shares.",
        ),
        click.option(
            "--data",
            "data_root_dir",
            default=None,
            metavar="ROOT",
            help=f"Instead of --real/--synthetic: {DATA_HELP}.",
        ),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option(
            "--backbone",
            default=None,
            type=RegisteredName("backbone"),
            help="The detector's feature extractor (default efficientnet_lite0, ImageNet weights shipped offline); "
            f"from scratch: {', '.join(n for n, i in BACKBONES.items() if not i.pretrainable)}; from the Hugging Face "
            f"hub: {', '.join(n for n, i in BACKBONES.items() if i.hub_id)} (set backbone_model=ID|FOLDER to use "
            "another model); the others download ImageNet weights once.",
        ),
        click.option(
            "--no-pretrained", is_flag=True, help="Train the backbone from scratch instead of ImageNet weights."
        ),
        click.option(
            "--normalize-format",
            is_flag=True,
            help="Re-encode both sides identically (JPEG) before training, so the detector cannot learn file format.",
        ),
        click.option(
            "--quick", is_flag=True, help="Small preset for a first look: 2,000 images per side, short stages."
        ),
        root_option,
        config_option,
        set_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _detector_config(backbone, no_pretrained, normalize_format, quick, config_file, overrides):
    """The detector config of the shared options, checked before minutes of decoding."""
    from synthgap.config import load_config
    from synthgap.data import parse_classes
    from synthgap.detect.config import DETECTOR_QUICK, DetectorConfig
    from synthgap.detect.train import check_detector_config

    flags = {
        "backbone": backbone,
        "pretrained": False if no_pretrained else None,
        "normalize_format": True if normalize_format else None,
    }
    cfg = load_config(DetectorConfig, config_file, overrides, presets=[DETECTOR_QUICK] if quick else [], flags=flags)
    cfg.classes = parse_classes(cfg.classes)
    check_detector_config(cfg)
    return cfg


def _echo_audit(audit) -> None:
    if audit:
        from synthgap.audit import summary_lines

        click.echo("\n".join(summary_lines(audit.summary())))


def _detector_setup(
    real, synthetic, data_root_dir, backbone, no_pretrained, normalize_format, quick, root, config_file, overrides
):
    from synthgap.detect.data import detector_data

    cfg = _detector_config(backbone, no_pretrained, normalize_format, quick, config_file, overrides)
    data = detector_data(cfg, real=real, synthetic=synthetic, data=data_root_dir, root=root)
    click.echo(
        f"data: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} images "
        f"({', '.join(data.specs['real'])} vs {', '.join(data.specs['synthetic'])})"
    )
    _echo_audit(data.audit)
    return cfg, data


def _echo_result(meta: dict, out) -> None:
    m = meta["metrics"]
    click.echo(meta["preprocessing"].get("input_why", "input: resize"))
    click.echo(
        f"test accuracy {100 * m['accuracy']:.2f}%, AUC {m['auc']:.4f}, AP {m['average_precision']:.4f}, "
        f"F1 {m['f1_synthetic']:.4f} at threshold {meta['threshold']:.3f} ({meta['training']['seconds']:.0f} s)"
    )
    click.echo("robustness: " + ", ".join(f"{r['test set']} {100 * r['accuracy']:.1f}%" for r in meta["robustness"]))
    click.echo(f"format-bias audit: {meta['format_bias']['verdict']}")
    click.echo(f"bundle and report in {out} (use it: synthgap detect IMAGE --model {out})")


@cli.group()
def detector() -> None:
    """Train, tune and compare detectors of AI-generated images (real vs synthetic)."""


@detector.command("train")
@detector_data_options
@click.option("--resume", is_flag=True, help="Continue the stages from their checkpoints in --out.")
def detector_train(
    real,
    synthetic,
    data_root_dir,
    out,
    backbone,
    no_pretrained,
    normalize_format,
    quick,
    root,
    config_file,
    overrides,
    resume,
) -> None:
    """Train a detector: frozen backbone + shared head, then fine-tune the top blocks.

    \b
    Writes to --out: the bundle (model.safetensors, detector.json), metrics.json, format_bias.json,
    audit/ (the data audit: audit.json, audit.html),
    summary.md, confusion.png, roc_calibration.png, report.html, config.yaml, environment.json.
    Example:
      synthgap detector train --real DATA/cifar10-jpeg \\
          --synthetic DATA/cifake-sd14-fake --out runs/detector
    """
    from synthgap.detect.train import run_detector

    cfg, data = _detector_setup(
        real, synthetic, data_root_dir, backbone, no_pretrained, normalize_format, quick, root, config_file, overrides
    )
    _echo_result(run_detector(data, cfg, out, resume=resume), out)


@detector.command("tune")
@detector_data_options
@click.option(
    "--trials", default=20, show_default=True, help="Finished trials the study should hold (a re-run resumes)."
)
@click.option("--timeout", type=float, default=None, help="Stop starting new trials after this many seconds.")
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random"]),
    default="tpe",
    show_default=True,
    help="tpe: Optuna's TPE; random: random search (Keras Tuner's RandomSearch).",
)
@click.option("--max-finetune-blocks", default=2, show_default=True, help="Largest unfreeze depth searched.")
def detector_tune(
    real,
    synthetic,
    data_root_dir,
    out,
    backbone,
    no_pretrained,
    normalize_format,
    quick,
    root,
    config_file,
    overrides,
    trials,
    timeout,
    sampler,
    max_finetune_blocks,
) -> None:
    """Search head width, dropout, learning rates, weight decay, unfreeze depth and augmentation.

    An Optuna study in --out/study.db (SQLite): run the same command again to resume it. Trials are
    scored on validation; train the winner with `synthgap detector train --config OUT/best.yaml`.
    """
    from synthgap.detect.tune import tune_detector

    cfg, data = _detector_setup(
        real, synthetic, data_root_dir, backbone, no_pretrained, normalize_format, quick, root, config_file, overrides
    )
    s = tune_detector(
        data, cfg, out, trials=trials, timeout=timeout, sampler=sampler, max_finetune_blocks=max_finetune_blocks
    )
    click.echo(f"best validation accuracy {100 * s['best_value']:.2f}% (trial {s['best_trial']}): {s['best_params']}")
    click.echo(f"trials: {s['trials']}; train it: synthgap detector train ... --config {Path(out) / 'best.yaml'}")


@detector.command("compare")
@detector_data_options
@click.option(
    "--backbones",
    default="airnet,efficientnet_lite0",
    show_default=True,
    help="Comma-separated backbones, e.g. vgg16,resnet50,efficientnet_b0,efficientnet_lite0.",
)
def detector_compare(
    real,
    synthetic,
    data_root_dir,
    out,
    backbone,
    no_pretrained,
    normalize_format,
    quick,
    root,
    config_file,
    overrides,
    backbones,
) -> None:
    """Every backbone with the same head, data and budget: comparison.md, comparison.png, report.html."""
    from synthgap.detect.compare import compare_backbones

    cfg, data = _detector_setup(
        real, synthetic, data_root_dir, backbone, no_pretrained, normalize_format, quick, root, config_file, overrides
    )
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    rows = compare_backbones(data, cfg, names, out)
    for r in rows:
        click.echo(
            f"{r['backbone']:>20}: accuracy {100 * r['accuracy']:.2f}%, AUC {r['auc']:.4f}, "
            f"F1 {r['f1_synthetic']:.4f}, {r['train_seconds']:.0f} s"
        )
    click.echo(f"comparison in {Path(out) / 'comparison.md'} and {Path(out) / 'report.html'}")


@detector.command("evaluate")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--real", multiple=True, metavar="[NAME=]SPEC", help="Real images (repeatable), as for `detector train`.")
@click.option(
    "--synthetic", multiple=True, metavar="[NAME=]SPEC", help="Synthetic images (repeatable), as for `detector train`."
)
@click.option(
    "--data",
    "data_root_dir",
    default=None,
    metavar="ROOT",
    help=f"Instead of --real/--synthetic: {DATA_HELP}.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--split",
    type=click.Choice(["all", "test", "train"]),
    default="all",
    show_default=True,
    help="Which split of the data to evaluate on; `all` takes every image (twins of the bundle's training "
    "images are dropped first, see --dedupe).",
)
@click.option(
    "--dedupe",
    type=click.Choice(["drop", "warn", "off"]),
    default="drop",
    show_default=True,
    help="Audit the data against the bundle's training data (when it can be loaded here) and drop the twins.",
)
@root_option
def detector_evaluate(bundle, real, synthetic, data_root_dir, out, split, dedupe, root) -> None:
    """Evaluate a trained detector on other labelled data, without retraining.

    BUNDLE: a detector bundle folder, or a `synthgap pipeline` run folder (its detector, the first
    `synthgap serve RUN_DIR` asks).

    \b
    The same figures as `detector train` (accuracy at the bundle's own threshold, never re-tuned here;
    AUC, average precision, per source, robustness), how many images lie outside the bundle's training
    domain, and the data audited against the bundle's training data. Writes evaluation.json,
    summary.md, report.html, environment.json and audit/ to --out.
    Example:
      synthgap detector evaluate runs/detector --real DATA/cifar10-jpeg --synthetic runs/builtin-set --out runs/eval
    """
    from synthgap.artifacts import resolve_model
    from synthgap.detect.generalise import evaluate_bundle

    bundle = resolve_model(bundle, "detector")
    r = evaluate_bundle(
        bundle, out, real=real, synthetic=synthetic, data=data_root_dir, split=split, dedupe=dedupe, root=root
    )
    t = r["test"]
    click.echo(
        f"accuracy {100 * t['accuracy']:.2f}% at the bundle's threshold {r['threshold']:.3f}, AUC {t['auc']:.4f}, "
        f"AP {t['average_precision']:.4f} on {t['n']:,} images"
    )
    for row in r["per_source"]:
        click.echo(
            f"  {row['source']:>24} ({row['side']}): accuracy {100 * row['accuracy']:.1f}%"
            + (f", AUC {row['auc']:.4f}" if "auc" in row else "")
            + f" ({row['n']:,} images)"
        )
    if r["domain"].get("outside"):
        click.echo(
            f"{r['domain']['outside']:,} of {r['domain']['checked']:,} images lie outside the bundle's training "
            f"domain ({r['domain']['reasons']}): its answers on them are not to be trusted"
        )
    click.echo(f"report: {Path(out) / 'report.html'}")


@detector.command("cross")
@detector_data_options
@click.option(
    "--backbones",
    default="efficientnet_lite0,npr,airnet",
    show_default=True,
    help="Comma-separated detector families, each trained for every cell of the matrix.",
)
@ray_options("cells (one detector per backbone and source set)")
def detector_cross(
    real,
    synthetic,
    data_root_dir,
    out,
    backbone,
    no_pretrained,
    normalize_format,
    quick,
    root,
    config_file,
    overrides,
    backbones,
    ray_address,
    ray_cpus,
    ray_gpus,
) -> None:
    """The generalisation matrix: how detectors do on generators they never saw.

    \b
    For each backbone: one detector per synthetic source, one per left-out source (trained on all the
    others) and one on all of them, with the same real data, config and budget; each is tested on the
    real test images against every source's test images. Writes cross.json, cross.md, a heatmap of
    accuracy and of AUC per backbone, report.html, and each detector's bundle under OUT/<backbone>/.
    A re-run reads finished detectors back (with or without --ray, which trains the cells as Ray tasks). Example:
      synthgap detector cross --real DATA/cifar10-jpeg --synthetic sd14=DATA/cifake-sd14-fake \\
          --synthetic builtin=runs/builtin-set --out runs/cross
    """
    from synthgap.detect.data import load_sources
    from synthgap.detect.generalise import cross_matrix

    on_ray = _ray_kwargs(ray_address, ray_cpus, ray_gpus)
    cfg = _detector_config(backbone, no_pretrained, normalize_format, quick, config_file, overrides)
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    loaded = load_sources(
        real, synthetic, data=data_root_dir, classes=cfg.classes, size=cfg.image_size, root=root, dedupe=cfg.dedupe
    )
    _echo_audit(loaded.audit)
    result = cross_matrix(loaded, cfg, names, out, **on_ray)
    for row in result["summary"]:
        loo = row["unseen_leave_one_out_auc"]
        click.echo(
            f"{row['backbone']:>20}: unseen sources: AUC {100 * (loo if loo is not None else row['unseen_single_source_auc']):.1f}%, "
            f"accuracy {100 * (row['unseen_leave_one_out_accuracy'] or row['unseen_single_source_accuracy']):.1f}% "
            f"({'leave-one-out' if loo is not None else 'single-source'}); trained on all: AUC "
            f"{100 * row['all_sources_auc']:.1f}%"
        )
    click.echo(f"matrix: {Path(out) / 'cross.md'}; report: {Path(out) / 'report.html'}")


# ---------------------------------------------------------------- autoencoder (content-matched fakes)


@cli.group()
def autoencoder() -> None:
    """Content-matched fakes: real photos through an autoencoder, as a detector's synthetic side.

    \b
    Each photo keeps its content and gains the decoder's upsampling traces (B-Free, AutoGAN), so a
    detector cannot tell the sides apart by what the images show:
      synthgap autoencoder train --real photos/real --out runs/ae
      synthgap autoencoder reconstruct --model runs/ae --real photos/real --out runs/recon
      synthgap detector train --real photos/real --synthetic recon=runs/recon --synthetic ai=photos/ai --out runs/det
    """


@autoencoder.command("train")
@click.option(
    "--real",
    required=True,
    metavar="SPEC",
    help="Real photos: a folder of images (searched recursively; without train/ and test/ the fixed 20% "
    f"hold-out is left for the metrics), or {SPEC_HELP}.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder: the model and its record.")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: 1000, about 5 minutes on 2 cores].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint (e.g. with more --steps).")
@root_option
@config_option
@set_option
def autoencoder_train(real, out, steps, resume, root, config_file, overrides) -> None:
    """Train a small AutoencoderKL (diffusers, no hub) on random windows of real photos at their own scale.

    \b
    MSE + a small KL + EfficientNet-Lite0 features against blur (`perceptual`, 0.1), a budget in
    steps, seeded, an atomic checkpoint every `checkpoint_every` steps; Ctrl-C saves one, --resume
    continues. Writes the model (save_pretrained: config.json, diffusion_pytorch_model.safetensors),
    autoencoder.json (config, data hashes, versions, held-out PSNR and the blur check), training.yaml,
    loss.csv and checkpoint.pt to --out. Example:
      synthgap autoencoder train --real DATA/photos/real --out runs/ae-photos
    """
    from synthgap.config import load_config
    from synthgap.detect.autoencoder import AutoencoderConfig, read_record, train_autoencoder

    cfg = load_config(AutoencoderConfig, config_file, overrides, flags={"steps": steps})
    written = train_autoencoder(real, out, cfg, root=root, resume=resume)
    record = read_record(written)
    m, t = record["metrics"], record["training"]
    click.echo(
        f"autoencoder ready: {written} ({t['steps']} steps, {t['steps_per_second']:.2f} steps/s); "
        f"{'held-out' if m.get('held_out') else 'training'} windows: PSNR {m['psnr']:.2f} dB, high-frequency "
        f"energy of the reconstructions / the originals: {m['hf_ratio_laplacian']:.3f} (Laplacian), "
        f"{m['hf_ratio_npr']:.3f} (NPR)"
    )
    click.echo(f"reconstruct photos with it: synthgap autoencoder reconstruct --model {written} --real DIR --out DIR")


@autoencoder.command("reconstruct")
@click.option(
    "--model",
    required=True,
    metavar="DIR_OR_HUB_ID",
    help="A `synthgap autoencoder train` folder, a save_pretrained AutoencoderKL folder, a diffusers pipeline "
    "folder, or a Hugging Face hub id (e.g. stabilityai/sd-vae-ft-mse, or a pipeline id with --subfolder vae).",
)
@click.option(
    "--real",
    required=True,
    metavar="DIR",
    help="A folder of real images (searched recursively); every one is reconstructed.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: the same relative paths with suffix .png, and reconstructions.json (re-run to resume).",
)
@click.option("--subfolder", default=None, help="The autoencoder's subfolder in --model (a pipeline's: vae).")
@click.option("--revision", default=None, help="Hub revision (a commit or tag) of --model.")
@click.option(
    "--latent",
    type=click.Choice(["mean", "sample"]),
    default=None,
    help="Decode the latent's mean, or a seeded sample of it [default: mean].",
)
@config_option
@set_option
def autoencoder_reconstruct(model, real, out, subfolder, revision, latent, config_file, overrides) -> None:
    """Pass every image of a folder through an autoencoder at its own size; write the PNGs as a mirror.

    \b
    Images are padded to a multiple of the autoencoder's down-sampling and cropped back; larger than
    `tile` (512) they go through in overlapping tiles, so memory stays bounded. The output keeps the
    input's relative names and order, so the fixed hold-out of a folder without splits puts a photo and
    its reconstruction on the same side; each PNG carries the AI-generated mark (XMP) and its record.
    A re-run skips finished files; reconstructions.json records the autoencoder (path or hub id and
    commit), its hashes, the count and each source's sha256. Example:
      synthgap autoencoder reconstruct --model runs/ae-photos --real DATA/photos/real --out runs/recon
      synthgap detector train --real DATA/photos/real --synthetic recon=runs/recon --out runs/det
    """
    from synthgap.config import load_config
    from synthgap.detect.autoencoder import ReconstructConfig, reconstruct_folder

    cfg = load_config(ReconstructConfig, config_file, overrides, flags={"latent": latent})
    r = reconstruct_folder(model, real, out, cfg, subfolder=subfolder, revision=revision)
    s = r["summary"]
    per = f", {s['seconds_per_image']:.2f} s per image" if s["seconds_per_image"] else ""
    click.echo(
        f"{r['count']} reconstructions in {out} ({s['reconstructed_now']} now{per}, {s['done_before']} done before, "
        f"{s['skipped_unreadable']} unreadable skipped); PSNR {s['psnr_mean']:.2f} dB, high-frequency ratio "
        f"{s['hf_ratio_laplacian_median']:.3f} (Laplacian), {s['hf_ratio_npr_median']:.3f} (NPR), medians"
    )
    click.echo(f"use them: synthgap detector train --real {real} --synthetic recon={out} --out DIR")


def _image_paths(paths) -> list[str]:
    """The files named, and the image files in the folders named (recursively, sorted)."""
    from synthgap.data.images import IMAGE_EXTENSIONS

    files = []
    for p in map(Path, paths):
        files += (
            sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS) if p.is_dir() else [str(p)]
        )
    if not files:
        raise SynthgapError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}")
    return files


def _echo_records(files: list[str], records: list[dict], as_json: bool, line) -> None:
    """One line per file (line(record), or its error), or one JSON object; an error if no file was readable."""
    import json

    for f, rec in zip(files, records):
        if as_json:
            click.echo(json.dumps({"path": f, **rec}))
        else:
            click.echo(f"{f}\t" + (f"error: {rec['error']}" if "error" in rec else line(rec)))
    if all("error" in r for r in records):
        raise SynthgapError("no file could be read as an image")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--model",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A classifier: a `synthgap train` output folder, a transfer study's runs/<set>/seed<k>, or a "
    "`synthgap pipeline` run folder (its transfer run with the best real test accuracy, as `synthgap serve "
    "RUN_DIR` takes it).",
)
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="Classes listed per image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image instead of a table.")
def classify(paths, run_dir, top, as_json) -> None:
    """Which class each image shows, by a trained classifier.

    PATHS: image files or folders (searched recursively). Per image: the most likely class and the
    --top classes with their probabilities; a file that is not a readable image is listed with the
    reason. The counterpart of `synthgap detect` (real or AI-generated). Example:

    \b
      synthgap classify photos/ --model runs/pipeline-small
      synthgap classify photos/ --model runs/pipeline-small/transfer/runs/real/seed0
    """
    from synthgap.artifacts import load_artifact

    files = _image_paths(paths)
    records = load_artifact(run_dir, "classifier").classify_files(files, top)
    _echo_records(
        files,
        records,
        as_json,
        lambda rec: "  ".join(f"{r['class']} {100 * r['probability']:.1f}%" for r in rec["probabilities"]),
    )


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--model",
    "bundles",
    required=True,
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A detector bundle folder (made by `synthgap detector train`), or a `synthgap pipeline` run folder (its "
    "detectors, as `synthgap serve RUN_DIR` asks them). Repeat it for several detectors: each image is answered "
    "by the first, in the order given, whose training domain holds it.",
)
@click.option(
    "--trust-anchors",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM file of the root certificates a C2PA signer must chain to to count as trusted "
    "(e.g. the C2PA trust list) [default: none: every signer is 'untrusted', signatures still checked].",
)
@click.option(
    "--fetch-remote-manifests",
    is_flag=True,
    help="Fetch a C2PA manifest an image points to by URL (a network request) [default: never].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image instead of a table.")
def detect(paths, bundles, trust_anchors, fetch_remote_manifests, as_json) -> None:
    """Whether each image is AI-generated: the pixel detector, the image's provenance, one answer.

    PATHS: image files or folders (searched recursively). Per image:

    \b
    - P(AI-generated) from the pixel detector (trained on windows at the images' own scale: the mean
      over a fixed grid of windows), its range under mild changes (JPEG q90, a 0.75 downscale, a
      1-pixel shift) and its verdict: "synthetic" or "real" by the bundle's threshold; "unsure" when
      it flips under those changes; "outside the training domain" (P unreliable) for an image unlike
      the bundle's training images in pixel size, format or JPEG quality;
    - provenance: a C2PA manifest (Content Credentials: signer, digital source type, valid /
      untrusted signer / tampered) and unsigned metadata (Stable Diffusion WebUI and ComfyUI text
      chunks, XMP digital source type, EXIF camera and software);
    - the answer and what decided it: a valid signed manifest declaring AI decides; otherwise the
      pixel detector's verdict stands and unsigned metadata is shown as a hint.

    With several --model detectors (e.g. a pipeline's detector and photo-detector), each image goes
    to the first, in the order given, whose training domain holds it, and the line names it; an image
    none of them covers is "outside the training domain", with each one's reason.

    --json gives every record in full. No network request is made unless --fetch-remote-manifests.
    """
    from synthgap.artifacts import resolve_models
    from synthgap.detect.route import DetectorSet, answered_line
    from synthgap.provenance import ProvenanceOptions, combine, read_provenance

    bundles = [found for b in bundles for found in resolve_models(b, "detector")]  # a run folder: its detectors
    files = _image_paths(paths)
    records = DetectorSet.load(bundles).assess_files(files)
    options = ProvenanceOptions(trust_anchors, fetch_remote_manifests)
    for f, rec in zip(files, records):
        if "error" not in rec:
            rec["provenance"] = read_provenance(f, options)
            rec["answer"] = combine(rec["provenance"], rec)
    _echo_records(
        files,
        records,
        as_json,
        lambda rec: (
            (
                f"{rec['p_synthetic']:.4f} ({rec['p_range'][0]:.2f}-{rec['p_range'][1]:.2f})\t"
                if rec["p_synthetic"] is not None
                else "-\t"
            )
            + f"{rec['verdict']}"
            + ("" if rec["reliable"] else f" ({rec['why']})")
            + (f"\t{answered_line(rec)}" if len(bundles) > 1 else "")
            + f"\tprovenance: {rec['provenance']['verdict']}"
            f"\tanswer: {rec['answer']['verdict']} (by {rec['answer']['decided_by']})"
        ),
    )


# ---------------------------------------------------------------- web app


@cli.command()
@click.argument("run", required=False, metavar="[RUN_DIR]")
@click.option(
    "--classifier",
    default=None,
    help="A `synthgap train` output folder, a transfer study's runs/<set>/seed<k>, or a pipeline run folder (its "
    "best transfer run).",
)
@click.option(
    "--detector",
    multiple=True,
    help="A detector bundle folder (`synthgap detector train`), or a pipeline run folder (its detectors). Repeat it "
    "for several: each image is answered by the first, in the order given, whose training domain holds it.",
)
@click.option(
    "--generator",
    default=None,
    help="A diffusers text-to-image id or folder, a `synthgap generator train` folder (takes a class, not a prompt), "
    "a pipeline run folder (its generator), or synthgap-tiny (offline demo).",
)
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1; 0.0.0.0 in the container].")
@click.option("--port", type=int, default=None, help="Port [default: 8000].")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="gunicorn worker processes, each with its own models and "
    "generation queue [default: 1]; one per core gives the most classify/detect throughput on a CPU.",
)
@click.option(
    "--output", default=None, help="Folder for generated images (and kept uploads) [default: none, nothing is written]."
)
@click.option(
    "--keep-uploads/--no-keep-uploads",
    default=None,
    help="Keep uploaded images in OUTPUT/uploads (needs --output) [default: no].",
)
@click.option(
    "--keep-max-bytes",
    type=int,
    default=None,
    help="Size cap of the kept files (generated images and uploads), the oldest removed first [default: 1 GiB].",
)
@click.option(
    "--keep-max-files",
    type=int,
    default=None,
    help="Most kept files, the oldest removed first; 0: no limit [default: 10000].",
)
@click.option(
    "--keep-max-age-hours",
    type=float,
    default=None,
    help="Kept files are removed after this many hours; 0: no limit [default: 168, a week].",
)
@click.option(
    "--trusted-host",
    "trusted_hosts",
    multiple=True,
    help="A Host name this server answers to (repeatable; .example.org: with its subdomains); any other gets 400 "
    "[default: any].",
)
@click.option(
    "--show-versions",
    is_flag=True,
    default=None,
    help="Show the library versions the models were trained with on /models and /api/models [default: hidden].",
)
@click.option(
    "--debug", is_flag=True, default=None, help="Flask's development server with the debugger, instead of gunicorn."
)
def serve(**flags) -> None:
    """The web app and JSON API: generate images, classify them, detect AI-generated ones.

    RUN_DIR: a `synthgap pipeline` output folder (e.g. runs/pipeline-small): its generator, its
    transfer run with the best real test accuracy and its detector (and its photo detector, when it
    trained one: each image goes to the detector whose training domain holds it); --classifier,
    --detector and --generator override each, and each also takes a pipeline folder (its model of
    that kind). Every command that takes a model takes a pipeline folder the same way.

    \b
    Example:
      synthgap serve runs/pipeline-small     # then open http://127.0.0.1:8000

    Every setting also comes from an environment variable SYNTHGAP_SERVE_<NAME> (e.g.
    SYNTHGAP_SERVE_DETECTOR, SYNTHGAP_SERVE_MAX_UPLOAD_BYTES); flags win. The settings are the
    fields of synthgap.serve.ServeConfig. Pages: / (generate), /check, /models; API: /api/*,
    described at /api/openapi.json; health: /healthz.
    """
    from synthgap.serve import ServeConfig
    from synthgap.serve.server import run

    cfg = ServeConfig.load(**flags)
    click.echo(
        f"synthgap serve on http://{cfg.host}:{cfg.port} ({'debug server' if cfg.debug else f'gunicorn, {cfg.workers} worker(s)'})"
    )
    run(cfg)


def main(args: list[str] | None = None) -> None:
    """The console entry point; `args` (default: sys.argv[1:]) lets tests run it in-process."""
    import warnings

    # Deprecation notices of the Hugging Face libraries are for developers of synthgap, not its users.
    for lib in ("diffusers", "transformers", "huggingface_hub", "datasets", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=lib)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=lib)
    try:
        cli.main(args=args, prog_name="synthgap", standalone_mode=False)
    except SynthgapError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
