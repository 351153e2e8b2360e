"""The saved models: one table of their kinds, one loader for all, and the models a pipeline run folder holds.

Every model synthgap saves is a folder with one meta file, written last (a folder with it is complete), that
records the model's `kind` and `format_version` (`KINDS`):

    classifier    classifier.json     `synthgap train`, each run of a transfer study    train.classifier
    detector      detector.json       `synthgap detector train`                         detect.model (bundle)
    generator     model_index.json    `synthgap generator train` (a diffusers pipeline) generate.builtin
    autoencoder   autoencoder.json    `synthgap autoencoder train`                      detect.autoencoder

`load_artifact(path)` reads the kind and loads the folder with that kind's own loader, after checking its
format version: a folder made by a newer synthgap is a one-line error, not a traceback from the middle of
a loader. Folders written before the meta files recorded `kind` and `format_version` are format 1, their kind
inferred from which meta file they hold (`artifact_kind`, the one place a kind is told by a file name).

A `synthgap pipeline` run folder holds one model of each of its stages' kinds; `models_of_run` says which
(what `synthgap serve RUN_DIR` serves) and `resolve_model` turns "a model folder, or a run folder" into
the model folder, which is how every command that takes a model also takes a run folder.

Nothing heavy is imported here: the loaders are imported when a folder is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from synthgap import SynthgapError

RUN_RECORD = "pipeline.yaml"  # the mark of a `synthgap pipeline` run folder


@dataclass(frozen=True)
class Kind:
    """One kind of saved model: its meta file, its loader ("module:function", imported when used), the newest
    format version this synthgap writes and reads, and what errors call it and expect of it."""

    name: str
    meta: str
    loader: str
    format_version: int
    label: str  # "not a <label>"
    expected: str  # what a folder of this kind holds and what makes one
    in_run: str | None = None  # where a pipeline run folder holds it (None: never)
    foreign: bool = False  # its commands also take models synthgap did not make (hub ids, diffusers folders)
    # A meta file written before `kind` was recorded is of this kind only if it names this _class_name
    # (model_index.json is every diffusers pipeline's file, not only synthgap's).
    legacy_class: str | None = None

    @property
    def recorded(self) -> str:
        """The `kind` its meta file records."""
        return f"synthgap-{self.name}"

    def stamp(self) -> dict:
        """What a writer puts in the meta file: {"kind", "format_version"}."""
        return {"kind": self.recorded, "format_version": self.format_version}


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "classifier",
            "classifier.json",
            "synthgap.train.classifier:load_classifier",
            1,
            "classifier",
            "classifier.json and model.safetensors: a `synthgap train` output, or a transfer study's "
            "runs/<set>/seed<k>",
            in_run="transfer/runs/<set>/seed<k>/",
        ),
        Kind(
            "detector",
            "detector.json",
            "synthgap.detect.model:load_bundle",
            1,
            "detector bundle",
            "detector.json and model.safetensors: a `synthgap detector train` output",
            in_run="detector/ (and photo-detector/)",
        ),
        Kind(
            "generator",
            "model_index.json",
            "synthgap.generate.builtin:load_generator",
            1,
            "synthgap generator",
            "model_index.json naming ClassConditionalPipeline: a `synthgap generator train` output",
            in_run="generator/",
            foreign=True,
            legacy_class="ClassConditionalPipeline",
        ),
        Kind(
            "autoencoder",
            "autoencoder.json",
            "synthgap.detect.autoencoder:load_autoencoder",
            1,
            "synthgap autoencoder",
            "autoencoder.json and the AutoencoderKL: a `synthgap autoencoder train` output",
            foreign=True,
        ),
    )
}


def kind_of_name(kind: str) -> Kind:
    """KINDS[kind], or an error naming the kinds there are."""
    if kind not in KINDS:
        raise SynthgapError(f"unknown kind of model {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


def check_format(record: dict, kind: str, where: str | os.PathLike) -> None:
    """Refuse a meta record (read from `where`) of another kind, or of a format newer than this synthgap reads.
    A record without `kind` or `format_version` was written before they were recorded: format 1 of `kind`."""
    k = kind_of_name(kind)
    recorded = record.get("kind")
    if recorded is not None and recorded != k.recorded:
        known = [x.recorded for x in KINDS.values()]
        if recorded in known:
            raise SynthgapError(f"{where}: kind {recorded!r}, expected {k.recorded!r}")
        raise SynthgapError(
            f"{where}: kind {recorded!r}, which this synthgap does not know (it knows {', '.join(known)}): "
            "made by a newer synthgap? upgrade synthgap"
        )
    version = record.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SynthgapError(f"{where}: format_version {version!r}, expected a whole number from 1")
    if version > k.format_version:
        raise SynthgapError(
            f"{where}: made by a newer synthgap (format {version}; this one reads up to {k.format_version}): "
            "upgrade synthgap"
        )


def _read(path: Path) -> dict | None:
    """A meta file's JSON object, or None when it cannot be read as one (its loader then says what is wrong)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _found(folder: Path) -> tuple[Kind, dict | None] | None:
    """(the kind of model `folder` holds, its meta record: None when unreadable), or None when it holds none.
    The kind is the one its meta file records; a meta file written before `kind` was recorded tells it by its
    name (the legacy path: the one place a kind is inferred from a file name). Checked by check_format."""
    for k in KINDS.values():
        meta = folder / k.meta
        if not meta.is_file():
            continue
        record = _read(meta)
        if record is None:  # unreadable: a diffusers file is no evidence; our own files are, for the loader
            if k.legacy_class is None:
                return k, None
            continue
        ours = record.get("_class_name") == k.legacy_class or str(record.get("kind", "")).startswith("synthgap-")
        if k.legacy_class and not ours:
            continue  # another diffusers pipeline
        check_format(record, k.name, meta)
        return k, record
    return None


def artifact_kind(path: str | os.PathLike, *, missing_ok: bool = False) -> str | None:
    """The kind of saved model the folder `path` holds ("classifier", "detector", "generator", "autoencoder").
    A folder of an unknown kind or a newer format is an error; one that holds none is an error too, or None
    with `missing_ok` (so is a path that is no folder, e.g. a hub id)."""
    folder = Path(path).expanduser()
    found = _found(folder) if folder.is_dir() else None
    if found is None and not missing_ok:
        raise SynthgapError(_not_a_model(folder))
    return found[0].name if found else None


def read_meta(path: str | os.PathLike, kind: str) -> dict | None:
    """The meta record of `path` when it is a readable folder of `kind` (format checked), else None."""
    folder = Path(path).expanduser()
    found = _found(folder) if folder.is_dir() else None
    return found[1] if found and found[0].name == kind_of_name(kind).name else None


def _not_a_model(folder: Path) -> str:
    metas = [f"{k.meta} ({k.name})" for k in KINDS.values()]
    where = ", ".join(k.in_run for k in KINDS.values() if k.in_run)
    if is_run_folder(folder):
        return (
            f"{folder}: a pipeline run folder, not one model: say which kind to take from it "
            f"({', '.join(k.name for k in KINDS.values() if k.in_run)}), or pass one of its model folders ({where})"
        )
    return (
        f"{folder}: not a synthgap model folder: expected {', '.join(metas[:-1])} or {metas[-1]}; "
        f"a pipeline run folder holds them under {where}"
    )


def load_artifact(path: str | os.PathLike, kind: str | None = None, **kw):
    """Load a saved model folder with its kind's loader (`kw`: the loader's options, e.g. device="cpu"): a
    Classifier, a DetectorBundle, a ClassConditionalPipeline, or (AutoencoderKL, its record). With `kind`,
    `path` may also be a pipeline run folder (its model of that kind, see resolve_model), and a folder of
    another kind is an error."""
    import importlib

    folder = Path(resolve_model(path, kind) if kind else path).expanduser()
    found = _found(folder) if folder.is_dir() else None
    if found is None:
        k = KINDS.get(kind or "")
        raise SynthgapError(f"{folder}: not a {k.label} (expected {k.expected})" if k else _not_a_model(folder))
    k = found[0]
    if kind and k.name != kind:
        raise SynthgapError(_wrong_kind(folder, k, KINDS[kind]))
    module, name = k.loader.split(":")
    return getattr(importlib.import_module(module), name)(folder, **kw)


def _wrong_kind(folder: Path, have: Kind, want: Kind) -> str:
    return f"{folder}: a {have.label}, not a {want.label} (expected {want.expected}; or a pipeline run folder)"


# ---------------------------------------------------------------- pipeline run folders


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a `synthgap pipeline` output folder (it holds pipeline.yaml)."""
    return (Path(path).expanduser() / RUN_RECORD).is_file()


def models_of_run(run: str | os.PathLike) -> dict[str, str | list[str] | None]:
    """The models a pipeline folder holds, for `synthgap serve RUN`: its generator (the builtin one it
    trained, or the diffusers model it used), the transfer run with the best real test accuracy, and its
    detector (a list of two when it also trained a photo detector: its detector first); None where the
    folder has none (e.g. a stage that did not run)."""
    from synthgap.config import load_config
    from synthgap.experiments.config import PipelineConfig

    run = Path(run)
    if not run.is_dir():
        raise SynthgapError(
            f"no folder {run}; make it with: synthgap pipeline --config configs/pipeline-small.yaml --set out={run}"
        )
    if not is_run_folder(run):
        raise SynthgapError(
            f"{run}: not a `synthgap pipeline` output folder (no {RUN_RECORD}); "
            "make one with: synthgap pipeline --config configs/pipeline-small.yaml"
        )
    cfg = load_config(PipelineConfig, run / RUN_RECORD)
    # The generator stage's folder: the builtin generator it trained (any diffusers pipeline folder serves).
    generator = (
        str(run / "generator")
        if (run / "generator" / KINDS["generator"].meta).is_file()
        else cfg.generate.model
        if cfg.generator == "diffusers"
        else None
    )
    best, best_accuracy = None, -1.0
    for meta in sorted((run / "transfer" / "runs").glob(f"*/seed*/{KINDS['classifier'].meta}")):
        accuracy = json.loads(meta.read_text()).get("metrics", {}).get("test_real_accuracy", -1.0)
        if accuracy > best_accuracy:
            best, best_accuracy = str(meta.parent), accuracy
    # Its detectors in the order they are asked: the main job's (thumbnails), then the photo detector.
    detectors = [
        str(run / name) for name in ("detector", "photo-detector") if (run / name / KINDS["detector"].meta).is_file()
    ]
    detector = detectors if len(detectors) > 1 else (detectors[0] if detectors else None)
    return {"generator": generator, "classifier": best, "detector": detector}


def resolve_models(path: str | os.PathLike, kind: str) -> list[str]:
    """The model folders (or, for a generator, a diffusers model id) `path` stands for as a model of `kind`:
    [path] for a folder of that kind; for a pipeline run folder, what `synthgap serve RUN_DIR` takes from it
    (both its detectors, in the order they are asked); [path] as given for a kind whose commands also take
    models synthgap did not make (a generator: a diffusers id or folder) when it is none of ours. Anything
    else is an error naming what was expected."""
    k = kind_of_name(kind)
    folder = Path(path).expanduser()
    have = artifact_kind(folder, missing_ok=True)
    if have == kind:
        return [str(path)]
    if have is None and is_run_folder(folder):
        found = models_of_run(folder).get(kind)
        if not found:
            raise SynthgapError(
                f"{folder}: a pipeline run folder without a {k.label}"
                + (f" (none under {k.in_run}: that stage has not run or not finished)" if k.in_run else "")
            )
        return found if isinstance(found, list) else [found]
    if have is not None:
        raise SynthgapError(_wrong_kind(folder, KINDS[have], k))
    if k.foreign:
        return [str(path)]
    raise SynthgapError(
        f"{folder}: not a {k.label} (expected {k.expected}), nor a `synthgap pipeline` run folder ({RUN_RECORD})"
    )


def resolve_model(path: str | os.PathLike, kind: str) -> str:
    """One model of `kind` for `path` (see resolve_models): of a run folder's two detectors, its own (the
    first `synthgap serve RUN_DIR` asks)."""
    return resolve_models(path, kind)[0]


__all__ = [
    "KINDS",
    "Kind",
    "artifact_kind",
    "check_format",
    "is_run_folder",
    "load_artifact",
    "models_of_run",
    "read_meta",
    "resolve_model",
    "resolve_models",
]
