"""Shared test helpers: an isolated decode cache and tiny, class-distinguishable image folders."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

# One colour per class index (up to ten classes, as CIFAR-10): far apart in RGB so that a small
# network, or a test looking at the median pixel, can tell the classes apart at any size.
CLASS_COLOURS = (
    (220, 30, 30),  # red
    (30, 200, 40),  # green
    (40, 60, 220),  # blue
    (230, 220, 40),  # yellow
    (200, 40, 210),  # magenta
    (40, 210, 210),  # cyan
    (240, 140, 20),  # orange
    (120, 60, 20),  # brown
    (245, 245, 245),  # white
    (25, 25, 25),  # black
)
NOISE = 8  # +- per channel


def class_colour(k: int) -> tuple[int, int, int]:
    """The background colour `make_image_folder` gives the k-th class."""
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def _draw_image(k: int, size: int, rng: np.random.Generator) -> Image.Image:
    """Class k: solid class colour with noise, plus a small class-specific shape in a contrasting colour."""
    base = np.array(class_colour(k), dtype=np.int16)
    arr = base + rng.integers(-NOISE, NOISE + 1, size=(size, size, 3), dtype=np.int16)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    ink = tuple(255 - c for c in class_colour(k))
    s = max(2, size // 4)  # shape side: about 1/16 of the area, so the background stays the median colour
    x, y = (int(v) for v in rng.integers(0, max(1, size - s), size=2))
    shape = k % 4
    if shape == 0:
        draw.rectangle((x, y, x + s - 1, y + s - 1), fill=ink)
    elif shape == 1:
        draw.ellipse((x, y, x + s - 1, y + s - 1), fill=ink)
    elif shape == 2:
        draw.line((x, y, x + s - 1, y + s - 1), fill=ink, width=max(1, s // 3))
    else:
        draw.polygon([(x, y + s - 1), (x + s - 1, y + s - 1), (x + s // 2, y)], fill=ink)
    return im


def make_image_folder(root, classes, n_per_class, size=16, splits=("train", "test"), ext="png", seed=0):
    """Write n_per_class images per class into root/<split>/<class>/NNNN.<ext>; return root (a Path).

    With ``splits=()`` (or None) the layout is root/<class>/NNNN.<ext> instead. Image k of a class
    is its class colour (see `class_colour`) plus noise and a small shape; `seed` fixes the noise.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(ext.lower(), ext.upper())
    for split in splits or (None,):
        base = root / split if split else root
        for k, c in enumerate(classes):
            d = base / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                _draw_image(k, size, rng).save(d / f"{i:04d}.{ext}", fmt)
    return root


def draw_photo(rng: np.random.Generator, size=(512, 384), planted: bool = False) -> Image.Image:
    """A photo-sized image: smooth random content with pixel noise; `planted` adds a +-6 checkerboard of
    period 2 px, the kind of high-frequency trace a generator leaves. Any resize to a thumbnail averages
    it away (as it does the noise); a window at the image's own scale keeps it."""
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), "RGB")
    arr = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    arr = arr + rng.integers(-4, 5, size=(h, w, 3), dtype=np.int16)
    if planted:
        arr = arr + 6 * (1 - 2 * ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2))[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def make_photo_folder(root, n: int, *, planted: bool, size=(512, 384), seed: int = 0, ext: str = "png"):
    """n photo-sized images (draw_photo) in root/NNNN.<ext>; return root (a Path)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        draw_photo(rng, size, planted).save(root / f"{i:04d}.{ext}")
    return root


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Keep module/session-scoped fixtures (which run before per-test fixtures) out of the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHGAP_CACHE", str(tmp_path_factory.mktemp("synthgap-cache-session")))
        # No test may reach a model hub: the tiny pipelines are saved and loaded from local folders.
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        # huggingface_hub reads the variable when imported, which collecting the tests already did: an
        # in-process command would otherwise try the network and wait out its retries.
        import huggingface_hub.constants

        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test decodes into its own, empty cache: nothing leaks between tests or into ~/.cache."""
    d = tmp_path_factory.mktemp("synthgap-cache")
    monkeypatch.setenv("SYNTHGAP_CACHE", str(d))
    return d


@pytest.fixture
def image_folder(tmp_path):
    """Factory: image_folder(classes, n_per_class, **kw) -> a fresh folder under tmp_path."""
    counter = iter(range(1_000_000))

    def make(classes, n_per_class, name=None, **kw):
        return make_image_folder(tmp_path / (name or f"images{next(counter)}"), classes, n_per_class, **kw)

    return make


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA and a C2PA signer it issued (root.pem, chain.pem, key.pem), made offline."""
    from synthgap.provenance.devcert import make_dev_pki

    return make_dev_pki(tmp_path_factory.mktemp("pki"))


def synthgap(*args, env=None, check=True, in_subprocess=False) -> subprocess.CompletedProcess:
    """The `synthgap` command as a user runs it: its exit status, stdout and stderr.

    In-process through click's CliRunner by default (no interpreter start and no imports per run);
    `in_subprocess=True` runs the real console entry point in a new interpreter, which each command
    gets once, in its smoke test. An unexpected exception in-process shows in stderr with its traceback,
    as it would in a terminal. check: raise unless the command succeeded."""
    args = [str(a) for a in args]
    if in_subprocess:
        proc = subprocess.run(
            [sys.executable, "-m", "synthgap.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=600,
        )
    else:
        from click.testing import CliRunner

        from synthgap.cli import main

        with CliRunner().isolation(env=env) as (out, err, _):
            try:
                main(args)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # a bug, not a user mistake: shown as a terminal would show it
                code = 1
                traceback.print_exc()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
        # The command pointed synthgap's log at CliRunner's streams, which are closed now.
        log = logging.getLogger("synthgap")
        log.handlers.clear()
        log.propagate, log.level = True, logging.NOTSET
        proc = subprocess.CompletedProcess(["synthgap", *args], code, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"synthgap {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def make_tiny_bundle(folder, *, domain=None, crop=False, name=None, probes=None, metrics=None, seed=0) -> Path:
    """An untrained airnet detector bundle in `folder` (32 px thumbnails, or with `crop` 2 x 2 windows of
    64 px at the image's own scale) whose detector.json carries the given training `domain` record (pixel
    sizes, formats, JPEG qualities: what routes an image to it), `name`, `probes` and test `metrics`."""
    import torch

    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.crops import InputChain
    from synthgap.detect.model import DetectorBundle, build_detector
    from synthgap.detect.train import bundle_meta

    torch.manual_seed(seed)
    chain = (InputChain("crop", 32, 64, 2), "input: crop (test)") if crop else None
    meta = bundle_meta(DetectorConfig(backbone="airnet"), 0.5, chain=chain)
    meta.update(metrics=metrics or {"accuracy": 0.9, "auc": 0.95}, created="2026-11-24T00:00:00Z")
    for key, value in (("domain", domain), ("name", name), ("probes", probes)):
        if value is not None:
            meta[key] = value
    model = build_detector("airnet", pretrained=False, input_size=meta["architecture"]["input_size"])
    return DetectorBundle(model, meta).save(folder)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(serve_args: list[str], log: Path, env: dict | None = None):
    """`synthgap serve SERVE_ARGS` (gunicorn) on a free loopback port, in a subprocess logging to `log`: a
    generator yielding its base URL once /healthz answers, stopping the server after (for a fixture)."""
    import time
    import urllib.request

    port = free_port()
    args = [sys.executable, "-m", "synthgap.cli", "serve", *serve_args, "--port", str(port), "--host", "127.0.0.1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def make_pipeline_run(run, classifier, detector, generator, accuracies: dict[str, float]) -> Path:
    """The layout `synthgap pipeline` writes (synthgap.artifacts.models_of_run) from ready models: a transfer run
    per name in `accuracies` (a copy of `classifier` with that real test accuracy), the detector, the generator.
    A test adds what else it needs (e.g. a photo-detector bundle)."""
    import json
    import shutil

    from synthgap.config import dump_yaml
    from synthgap.experiments.config import PipelineConfig

    run = Path(run)
    run.mkdir(parents=True)
    (run / "pipeline.yaml").write_text(dump_yaml(PipelineConfig(out=str(run), generator="builtin")))
    for name, accuracy in accuracies.items():
        folder = run / "transfer" / "runs" / name / "seed0"
        shutil.copytree(classifier, folder)
        meta = json.loads((folder / "classifier.json").read_text())
        meta.update(name=f"{name}/seed0", metrics={"test_real_accuracy": accuracy})
        (folder / "classifier.json").write_text(json.dumps(meta))
    shutil.copytree(detector, run / "detector")
    shutil.copytree(generator, run / "generator")
    return run
