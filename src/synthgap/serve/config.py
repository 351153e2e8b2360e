"""The web app's settings: one dataclass, filled from SYNTHGAP_SERVE_* environment variables and
command-line flags (flags win), so a container configures it with its environment alone."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthgap import SynthgapError
from synthgap.config import from_dict, to_dict

ENV_PREFIX = "SYNTHGAP_SERVE_"


@dataclass
class ServeConfig:
    run: str | None = None  # a `synthgap pipeline` output folder: its generator, best classifier and detector
    # Each of classifier, detector and generator may also be a pipeline folder: its model of that kind, the one
    # `run` would serve (synthgap.artifacts.resolve_model).
    classifier: str | None = None  # a `synthgap train` output folder, or one run of a transfer study
    # A detector bundle folder (`synthgap detector train`), or several: a list (or one string, comma-separated),
    # asked in this order, each image answered by the first whose training domain holds it (detect.route).
    detector: str | list[str] | None = None
    generator: str | None = None  # a diffusers text-to-image id or folder, or synthgap-tiny
    host: str = "127.0.0.1"
    port: int = 8000
    # The Host headers this server answers to (Flask's TRUSTED_HOSTS): a list or one string, comma-separated
    # ("example.org", ".example.org" with its subdomains, "localhost:8000"); any other gets 400. None: any
    # host. Either way no redirect's Location names a host but one of these (none: it is a path).
    trusted_hosts: list[str] | None = None
    show_versions: bool = False  # /models and /api/models show the library versions a model was trained with
    workers: int = 1  # gunicorn worker processes; each loads the models once
    threads: int = 16  # request threads per worker: concurrent requests meet in the micro-batcher
    debug: bool = False  # Flask's development server instead of gunicorn
    device: str = "auto"  # auto | cpu | cuda | mps
    torch_threads: int = 0  # CPU threads per worker for the models; 0: cores / workers
    output: str | None = None  # generated images (and kept uploads) are written here; None: nothing is written
    keep_uploads: bool = False  # keep uploaded images in OUTPUT/uploads
    # Kept files (OUTPUT/generated and OUTPUT/uploads together, synthgap.serve.retention): a size cap, and
    # a count and an age limit (0: none); the oldest are removed first.
    keep_max_bytes: int = 2**30
    keep_max_files: int = 10_000
    keep_max_age_hours: float = 168.0
    max_upload_bytes: int = 10 * 2**20  # a larger request body is refused with 413
    max_pixels: int = 40_000_000  # a larger image (by its header) is refused as a decompression bomb
    # Admission (serve.admission): pixels a worker decodes and judges at once; a request beyond waits up to
    # admission_wait seconds in arrival order, then gets 503 with Retry-After. Memory: docs/web_app.md#sizing.
    pixel_budget: int = 50_000_000
    admission_wait: float = 10.0
    # A request's headers and body must arrive within read_timeout seconds; until they have, the connection
    # waits in the worker's event loop, not on a request thread (serve.worker), so slow clients hold no thread.
    read_timeout: float = 30.0
    # A worker is replaced after max_requests requests (+ up to max_requests_jitter, so workers do not all
    # restart at once): the memory a burst of large images left behind is given back. 0: never.
    max_requests: int = 2000
    max_requests_jitter: int = 200
    max_prompt_chars: int = 500
    max_steps: int = 50
    generate_queue: int = 4  # generation requests that may wait for the device; one more gets 429
    generate_timeout: float = 300.0  # seconds a generation request waits for the device at most
    batch_size: int = 32  # most images per classifier/detector call
    batch_wait_ms: float = 2.0  # how long the first queued image waits for company
    unsure_band: float = 0.1  # |P(AI) - threshold| below this is "unsure"
    # Provenance (synthgap.provenance): roots a C2PA signer must chain to to be "trusted" (PEM), and
    # whether a manifest an image points to by URL may be fetched (a network request per such image).
    trust_anchors: str | None = None
    fetch_remote_manifests: bool = False
    # Sign generated images with a C2PA manifest (PEM chain + key), those whose shorter side is at least
    # sign_min_side: a manifest adds ~3 KB or more (with a real chain, tens of KB), as much as a 32x32 PNG.
    sign_cert_chain: str | None = None
    sign_key: str | None = None
    sign_min_side: int = 256
    # Serve with no models instead of refusing (the container on an empty volume): the log and every page
    # say what is missing and the command that makes it (setup_hint).
    allow_empty: bool = False
    setup_hint: str = "synthgap pipeline --config configs/pipeline-small.yaml\nsynthgap serve runs/pipeline-small"

    def check(self) -> ServeConfig:
        for name, least in (
            ("port", 1),
            ("workers", 1),
            ("threads", 1),
            ("torch_threads", 0),
            ("max_upload_bytes", 1),
            ("max_pixels", 1),
            ("pixel_budget", 1),
            ("admission_wait", 0),
            ("read_timeout", 1),
            ("max_requests", 0),
            ("max_requests_jitter", 0),
            ("max_prompt_chars", 1),
            ("max_steps", 1),
            ("generate_queue", 0),
            ("generate_timeout", 0),
            ("batch_size", 1),
            ("batch_wait_ms", 0),
            ("unsure_band", 0),
            ("sign_min_side", 0),
            ("keep_max_bytes", 1),
            ("keep_max_files", 0),
            ("keep_max_age_hours", 0),
        ):
            if getattr(self, name) < least:
                raise SynthgapError(f"serve setting '{name}': expected at least {least}, got {getattr(self, name)}")
        if self.port > 65535:
            raise SynthgapError(f"serve setting 'port': expected at most 65535, got {self.port}")
        if self.unsure_band >= 0.5:
            raise SynthgapError(f"serve setting 'unsure_band': expected less than 0.5, got {self.unsure_band}")
        if isinstance(self.trusted_hosts, str):
            self.trusted_hosts = [h.strip() for h in self.trusted_hosts.split(",") if h.strip()]
        if self.trusted_hosts is not None:
            if not self.trusted_hosts:
                raise SynthgapError("serve setting 'trusted_hosts': expected at least one host name (or none: any)")
            for h in self.trusted_hosts:
                if not h or any(c in h for c in "/\\@ \t") or h.strip(".:") == "":
                    raise SynthgapError(f"serve setting 'trusted_hosts': not a host name: {h!r}")
        if self.keep_uploads and not self.output:
            raise SynthgapError("serve setting 'keep_uploads' needs 'output' (the folder to keep them in)")
        if self.trust_anchors and not Path(self.trust_anchors).is_file():
            raise SynthgapError(f"serve setting 'trust_anchors': no file {self.trust_anchors}")
        self.signing().check("serve setting 'sign'")
        for name, folders in (
            ("classifier", [self.classifier] if self.classifier else []),
            ("detector", self.detectors),
        ):
            for folder in folders:  # caught here, before any worker starts
                if not Path(folder).is_dir():
                    raise SynthgapError(f"serve setting '{name}': no folder {folder}")
        if not (self.classifier or self.detectors or self.generator or self.allow_empty):
            raise SynthgapError(
                "nothing to serve: give a pipeline folder (synthgap serve runs/pipeline-small; make it with "
                "synthgap pipeline --config configs/pipeline-small.yaml) or at least one of --classifier RUN, "
                f"--detector BUNDLE, --generator MODEL (or {ENV_PREFIX}RUN, {ENV_PREFIX}CLASSIFIER, ...)"
            )
        return self

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **flags: Any) -> ServeConfig:
        """Defaults <- SYNTHGAP_SERVE_* variables <- flags that are not None; checked."""
        environ = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)}
        data: dict[str, Any] = {}
        for key, value in environ.items():
            if key.startswith(ENV_PREFIX):
                name = key.removeprefix(ENV_PREFIX).lower()
                if name not in names:  # a typo would silently do nothing otherwise
                    known = ", ".join(ENV_PREFIX + n.upper() for n in sorted(names))
                    raise SynthgapError(f"unknown environment variable {key}; known: {known}")
                data[name] = value if value != "" else None
        data.update({k: v for k, v in flags.items() if v is not None and v != ()})
        # `detector` is one folder or several (a list from a flag given more than once, or a YAML list):
        # kept as given, one of them as a plain string.
        detector = data.pop("detector", None)
        if isinstance(detector, (list, tuple)):
            detector = [str(d) for d in detector] if len(detector) != 1 else str(detector[0])
        elif detector is not None and not isinstance(detector, str):
            raise SynthgapError(f"serve setting 'detector': expected a folder or a list of folders, got {detector!r}")
        try:
            cfg = from_dict(cls, {k: v for k, v in data.items() if v is not None})
            cfg.detector = detector
            from synthgap.artifacts import is_run_folder, models_of_run, resolve_model, resolve_models

            # a pipeline folder given for one model: the one it would serve of that kind (its detectors: both)
            for name in ("classifier", "generator"):
                if getattr(cfg, name) and is_run_folder(getattr(cfg, name)):
                    setattr(cfg, name, resolve_model(getattr(cfg, name), name))
            if any(is_run_folder(d) for d in cfg.detectors):
                found = [m for d in cfg.detectors for m in resolve_models(d, "detector")]
                cfg.detector = found if len(found) > 1 else found[0]
            if cfg.run and not (cfg.allow_empty and not Path(cfg.run).exists()):
                # a pipeline folder fills in the models not given one by one
                for name, found in models_of_run(cfg.run).items():
                    if getattr(cfg, name) is None and found:
                        setattr(cfg, name, found)
            return cfg.check()
        except SynthgapError as e:
            raise SynthgapError(str(e).replace("config field", "serve setting")) from None

    @property
    def detectors(self) -> list[str]:
        """The detector folders in the order they are asked: `detector` as a list, or split at commas (unless
        the whole string is a folder)."""
        d = self.detector
        if not d:
            return []
        if isinstance(d, (list, tuple)):
            return [str(x) for x in d if str(x).strip()]
        if "," not in d or Path(d).is_dir():
            return [d]
        return [part.strip() for part in d.split(",") if part.strip()]

    def signing(self):
        from synthgap.provenance.mark import SignConfig

        return SignConfig(self.sign_cert_chain, self.sign_key)

    def to_dict(self) -> dict:
        return to_dict(self)
