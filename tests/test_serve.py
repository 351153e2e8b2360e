"""The web app and JSON API: every endpoint and error case through Flask's test client, malformed
payloads from Hypothesis, the micro-batcher and the generation queue, and one run of the real
`synthgap serve` (gunicorn) driven by headless Chromium.

Models are built here: an untrained classifier run, an untrained airnet detector bundle and the
tiny offline diffusers pipeline.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import struct
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_photo, make_pipeline_run, make_tiny_bundle, serve_process, synthgap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from synthgap import SynthgapError
from synthgap.detect.config import DetectorConfig
from synthgap.detect.model import DetectorBundle, build_detector
from synthgap.detect.train import bundle_meta
from synthgap.generate import save_tiny_pipeline
from synthgap.models import build_model
from synthgap.serve import ServeConfig, create_app
from synthgap.serve.batching import DeviceQueue, MicroBatcher, QueueFull
from synthgap.serve.models import load_classifier
from synthgap.serve.openapi import document
from synthgap.train.config import TrainConfig

CLASSES = ["bird", "cat", "frog"]
PHOTO_DOMAIN = {"width": [400, 640], "height": [300, 480], "formats": ["JPEG", "PNG"], "jpeg_quality": [70, 95]}
PROBES = {
    "metadata": {"balanced_accuracy": 0.61, "verdict": "file metadata alone tells the sides apart a little"},
    "content": {"auc": 0.96, "accuracy": 0.89, "image_size": 32},
    "credited": "Its windows find traces that a 32 px thumbnail of the same images does not keep.",
}
MAX_UPLOAD = 300_000
MAX_PIXELS = 1_000_000


# ------------------------------------------------------------------ models and images the tests make


def make_classifier_run(folder: Path) -> Path:
    """What `synthgap train` writes, with an untrained airnet."""
    from synthgap.train.classifier import classifier_meta, save_classifier

    cfg = TrainConfig(widths=[8, 16, 16])
    torch.manual_seed(0)
    meta = classifier_meta(
        cfg, CLASSES, 32, {"accuracy": 0.61, "macro_f1": 0.6, "n": 30}, {"spec": "shapes", "n": 30}, name=folder.name
    )
    return save_classifier(folder, build_model("airnet", len(CLASSES), widths=cfg.widths), meta)


def make_detector_bundle(folder: Path) -> Path:
    torch.manual_seed(0)
    meta = {
        **bundle_meta(DetectorConfig(backbone="airnet"), 0.5),
        "metrics": {"accuracy": 0.9, "auc": 0.95},
        "created": "2026-11-24T00:00:00Z",
    }
    return DetectorBundle(build_detector("airnet", pretrained=False), meta).save(folder)


def png_bytes(size: int = 24, colour=(200, 40, 40), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(size)
    arr = np.clip(np.array(colour) + rng.integers(-10, 11, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").convert(mode).save(buf, fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (CRC fixed): a decompression bomb's shape."""
    data = png_bytes(8)
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def tiff_two_samples() -> bytes:
    """A valid little TIFF with 2 samples of 8 bits and no extra-samples tag: no PIL mode exists for it."""
    w = h = 4
    entries = [(256, w), (257, h), (258, 8), (259, 1), (262, 1), (273, 0), (277, 2), (278, h), (279, w * h * 2)]
    ifd_size = 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, value in entries:
        out += struct.pack("<HHIHH", tag, 3, 1, 8 + ifd_size if tag == 273 else value, 0)
    return out + struct.pack("<I", 0) + bytes(w * h * 2)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    return {
        "classifier": make_classifier_run(root / "classifier"),
        "detector": make_detector_bundle(root / "detector"),
        "generator": save_tiny_pipeline(root / "generator"),
    }


@pytest.fixture(scope="module")
def pipeline_run(model_files, tmp_path_factory):
    """The layout `synthgap pipeline` writes (see experiments.pipeline.models_of_run), with the test's models:
    two transfer runs (the better one on real test images is served), a detector, a generator."""
    import json as json_

    run = make_pipeline_run(
        tmp_path_factory.mktemp("runs") / "pipeline-test",
        model_files["classifier"],
        model_files["detector"],
        model_files["generator"],
        {"real": 0.4, "synthetic": 0.7},
    )
    meta = json_.loads((run / "detector" / "detector.json").read_text())
    meta["domain"] = {"width": [16, 64], "height": [16, 64], "formats": ["JPEG", "PNG"], "jpeg_quality": None}
    (run / "detector" / "detector.json").write_text(json_.dumps(meta))
    make_tiny_bundle(  # the optional photo-detector stage's bundle
        run / "photo-detector", domain=PHOTO_DOMAIN, crop=True, probes=PROBES, metrics={"accuracy": 0.95, "auc": 0.99}
    )
    return run


def test_a_pipeline_folder_serves_whole_and_flags_override_one_model(pipeline_run, model_files, tmp_path):
    cfg = ServeConfig.load({}, run=str(pipeline_run))
    assert (cfg.classifier, cfg.detector, cfg.generator) == (
        str(pipeline_run / "transfer" / "runs" / "synthetic" / "seed0"),
        [str(pipeline_run / "detector"), str(pipeline_run / "photo-detector")],  # its detector first
        str(pipeline_run / "generator"),
    )
    other = ServeConfig.load({"SYNTHGAP_SERVE_RUN": str(pipeline_run)}, detector=str(model_files["detector"]))
    assert other.detector == str(model_files["detector"]) and other.classifier == cfg.classifier
    with pytest.raises(SynthgapError, match="not a `synthgap pipeline` output folder.*synthgap pipeline --config"):
        ServeConfig.load({}, run=str(tmp_path))


@pytest.fixture(scope="module")
def app(model_files, tmp_path_factory):
    cfg = ServeConfig(
        **{k: str(v) for k, v in model_files.items()},
        output=str(tmp_path_factory.mktemp("out")),
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        max_steps=4,
        max_prompt_chars=200,
    )
    return create_app(cfg)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def post_file(client, url, data: bytes, field="image", filename="x.png", **extra):
    return client.post(url, data={field: (io.BytesIO(data), filename), **extra}, content_type="multipart/form-data")


def schema_validator(name: str):
    from jsonschema import Draft202012Validator

    doc = document()
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


# ------------------------------------------------------------------ endpoints


def test_healthz_says_which_models_are_loaded(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json == {"status": "ok", "models": {"classifier": True, "detector": True, "generator": True}}


def test_models_lists_what_is_loaded_its_metrics_and_origin(client, model_files):
    r = client.get("/api/models")
    assert r.status_code == 200
    m = r.json
    assert m["classifier"]["classes"] == CLASSES and m["classifier"]["metrics"]["accuracy"] == 0.61
    assert "path" not in m["classifier"] and m["classifier"]["trained_on"]["spec"] == "shapes"
    assert "path" not in m["detector"] and m["detector"]["name"] == "serve-models0/detector"
    server_root = str(model_files["detector"].resolve().parent)  # no visitor sees where the models live
    assert server_root not in r.get_data(as_text=True) and server_root not in client.get("/models").get_data(
        as_text=True
    )
    assert m["detector"]["threshold"] == 0.5 and m["detector"]["metrics"]["auc"] == 0.95
    assert m["detector"]["architecture"]["backbone"] == "airnet"
    assert m["generator"]["pipeline"] == "StableDiffusionPipeline" and "bird" in m["generator"]["classes"]
    schema_validator("Models").validate(m)


def test_openapi_document_matches_the_routes(app, client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served
    from jsonschema import Draft202012Validator

    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_classify_multipart_and_base64_json_agree(client):
    data = png_bytes()
    a = post_file(client, "/api/classify", data)
    b = client.post("/api/classify", json={"image": base64.b64encode(data).decode()})
    c = client.post(
        "/api/classify",
        json={"image": "data:image/png;base64," + base64.b64encode(data).decode(), "model": "classifier"},
    )
    assert a.status_code == b.status_code == c.status_code == 200, a.json
    assert a.json == b.json == c.json
    probs = a.json["probabilities"]
    assert [p["class"] for p in probs] != [] and sorted(p["class"] for p in probs) == sorted(CLASSES)
    assert a.json["label"] == probs[0]["class"]
    assert abs(sum(p["probability"] for p in probs) - 1) < 1e-4
    assert probs == sorted(probs, key=lambda p: -p["probability"])
    schema_validator("Classification").validate(a.json)


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "GIF"),
        ("RGB", "JPEG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("RGB", "TIFF"),
    ],
)
def test_detect_accepts_common_formats_and_modes(client, mode, fmt):
    r = post_file(client, "/api/detect", png_bytes(20, mode=mode, fmt=fmt))
    assert r.status_code == 200, r.json
    d = r.json
    assert 0 <= d["p_range"][0] <= d["p_synthetic"] <= d["p_range"][1] <= 1
    assert d["threshold"] == 0.5 and d["unsure_band"] == [0.4, 0.6]
    if d["rule"] == "threshold":
        assert (
            d["verdict"] == ("synthetic" if d["p_synthetic"] >= 0.5 else "real") and abs(d["p_synthetic"] - 0.5) >= 0.1
        )
    else:
        assert d["verdict"] == "unsure" and d["reliable"] is False
    schema_validator("Detection").validate(d)


def test_generate_from_a_prompt_is_reproducible_and_judged(client, app):
    body = {"prompt": "a red bird on a branch", "seed": 7, "steps": 2}
    a, b = client.post("/api/generate", json=body), client.post("/api/generate", json=body)
    other = client.post("/api/generate", json={**body, "seed": 8})
    assert a.status_code == b.status_code == other.status_code == 200, a.json
    g = a.json
    schema_validator("Generation").validate(g)
    assert g["prompt"] == body["prompt"] and g["seed"] == 7 and g["steps"] == 2 and g["class"] is None
    png = base64.b64decode(g["image"])
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (g["width"], g["height"])
        meta = json.loads(im.text["synthgap"])
        assert meta["prompt"] == body["prompt"] and meta["seed"] == 7
        pixels = np.asarray(im.convert("RGB"))
    with Image.open(io.BytesIO(base64.b64decode(b.json["image"]))) as im:
        assert np.array_equal(pixels, np.asarray(im.convert("RGB")))
    with Image.open(io.BytesIO(base64.b64decode(other.json["image"]))) as im:
        assert not np.array_equal(pixels, np.asarray(im.convert("RGB")))
    assert g["classifier"]["label"] in CLASSES and 0 <= g["detector"]["p_synthetic"] <= 1
    out = Path(app.config["SYNTHGAP"].output)
    assert (out / g["saved"]).read_bytes() == png


def test_generate_from_a_class_uses_the_prompt_templates(client, app):
    r = client.post("/api/generate", json={"class": "cat", "seed": 3})
    assert r.status_code == 200, r.json
    gen = app.extensions["synthgap"].generator
    assert r.json["class"] == "cat" and r.json["prompt"] == gen.templates.prompt(3, "cat", 0)
    assert r.json["steps"] == min(gen.steps, 4)  # the family default, within max_steps
    form = client.post("/api/generate", data={"class": "cat", "seed": "3", "steps": ""})
    assert form.status_code == 200 and form.json["prompt"] == r.json["prompt"]


def test_a_builtin_class_conditional_generator_is_served_by_class(model_files, tmp_path):
    from conftest import make_image_folder

    from synthgap.generate.builtin import train_generator
    from synthgap.generate.config import GeneratorConfig

    real = make_image_folder(tmp_path / "real", CLASSES, 4, size=16)
    gen = train_generator(
        str(real), tmp_path / "gen", GeneratorConfig(preset="tiny", classes=CLASSES, steps=2), progress=False
    )
    client = create_app(
        ServeConfig(generator=str(gen), detector=str(model_files["detector"]), max_steps=4)
    ).test_client()
    body = {"class": CLASSES[1], "seed": 5, "steps": 2}
    a, b = client.post("/api/generate", json=body), client.post("/api/generate", json=body)
    assert a.status_code == 200, a.json
    assert a.json["prompt"] == a.json["class"] == CLASSES[1] and a.json["width"] == 16
    assert a.json["image"] == b.json["image"] and 0 <= a.json["detector"]["p_synthetic"] <= 1
    r = client.post("/api/generate", json={"prompt": "a cat", "seed": 1})
    assert r.status_code == 400 and "class-conditional" in r.json["error"]
    page = client.get("/").get_data(as_text=True)
    assert "takes no prompt" in page and 'name="prompt"' not in page
    assert '<option value="">' not in page  # a class is chosen from the start: the form works as it opens
    r = client.post("/", data={"class": CLASSES[0], "seed": "3", "steps": "2"})  # the form as it opens, submitted
    assert r.status_code == 200 and 'id="generated"' in r.get_data(as_text=True)
    assert client.get("/api/models").json["generator"]["pipeline"] == "ClassConditionalPipeline"


def test_generate_without_a_seed_picks_one_and_reports_it(client):
    r = client.post("/api/generate", json={"prompt": "a frog"})
    assert r.status_code == 200 and 0 <= r.json["seed"] < 2**32


# ------------------------------------------------------------------ bad input: clear 4xx, never 5xx

IMAGE_ERRORS = [
    ("not an image", dict(file=b"hello, world"), 400, "not an image in a supported format"),
    ("pdf", dict(file=b"%PDF-1.4\n%...."), 400, "not an image in a supported format"),
    (
        "postscript",
        dict(file=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
        400,
        "not an image in a supported",
    ),
    ("empty", dict(file=b""), 400, "empty"),
    ("truncated", dict(file=png_bytes(64)[:300]), 400, "corrupt or truncated PNG"),
    ("corrupt header", dict(file=png_bytes()[:20] + b"\x00" * 40), 400, "cannot be decoded"),
    ("too many pixels", dict(file=png_claiming(2000, 2000)), 400, "decompression bomb"),
    ("pillow's bomb", dict(file=png_claiming(60000, 60000)), 400, "decompression bomb"),
    ("unsupported mode", dict(file=tiff_two_samples()), 400, "unsupported pixel mode or layout"),
    ("too many bytes", dict(file=b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD)), 413, f"at most {MAX_UPLOAD:,} bytes"),
    ("wrong file field", dict(file=png_bytes(), field="file"), 400, "unknown field(s) 'file'"),
    ("image as text", dict(form={"image": "abc"}), 400, "must be a file upload"),
    ("extra field", dict(file=png_bytes(), extra={"colour": "red"}), 400, "unknown field(s) 'colour'"),
    ("no image", dict(form={"model": "x"}), 400, "no image"),
    ("other model", dict(file=png_bytes(), extra={"model": "resnet-9000"}), 400, "unknown"),
    ("json not object", dict(json=[1, 2]), 400, "must be an object"),
    ("json image not text", dict(json={"image": 5}), 400, "must be a base64 string"),
    ("json bad base64", dict(json={"image": "not base64!!"}), 400, "not valid base64"),
    ("json base64 of junk", dict(json={"image": base64.b64encode(b"junk").decode()}), 400, "not an image"),
    ("json unknown field", dict(json={"image": "", "file": 1}), 400, "unknown field(s) 'file'"),
    ("json model not text", dict(json={"image": "", "model": 3}), 400, "field 'model' must be text"),
    (
        "malformed json",
        dict(raw=b'{"image": ', content_type="application/json"),
        400,
        "not valid JSON: Expecting value",
    ),
    ("deep json", dict(raw=b"[" * 100_000 + b"]" * 100_000, content_type="application/json"), 400, ""),
    ("plain text", dict(raw=b"hello", content_type="text/plain"), 415, "multipart/form-data"),
    ("no content type", dict(raw=b""), 415, "multipart/form-data"),
]


def send(client, url, case: dict):
    if "file" in case:
        return post_file(client, url, case["file"], field=case.get("field", "image"), **case.get("extra", {}))
    if "form" in case:
        return client.post(url, data=case["form"], content_type="multipart/form-data")
    if "json" in case:
        return client.post(url, json=case["json"])
    return client.post(url, data=case["raw"], content_type=case.get("content_type"))


@pytest.mark.parametrize("url", ["/api/classify", "/api/detect"])
@pytest.mark.parametrize("name,case,status,message", IMAGE_ERRORS, ids=[c[0] for c in IMAGE_ERRORS])
def test_bad_images_are_clear_json_errors(client, url, name, case, status, message):
    r = send(client, url, case)
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.is_json and r.json["status"] == status and message in r.json["error"], r.json


GENERATE_ERRORS = [
    ({"prompt": ""}, 400, "the prompt is empty"),
    ({"prompt": "   \n "}, 400, "the prompt is empty"),
    ({"prompt": "x" * 201}, 400, "201 characters long; at most 200"),
    ({"prompt": 5}, 400, "field 'prompt' must be text"),
    ({"prompt": "a \ud800 cat"}, 400, "invalid Unicode"),
    ({"prompt": "a \x00 cat"}, 400, "control characters"),
    ({}, 400, "give a 'prompt'"),
    ({"prompt": "a cat", "class": "cat"}, 400, "not both"),
    ({"class": "unicorn"}, 400, "unknown class 'unicorn'"),
    ({"class": ["cat"]}, 400, "field 'class' must be text"),
    ({"prompt": "a", "seed": "7"}, 400, "field 'seed' must be a whole number"),
    ({"prompt": "a", "seed": -1}, 400, "between 0 and"),
    ({"prompt": "a", "seed": 2**32}, 400, "between 0 and"),
    ({"prompt": "a", "seed": True}, 400, "whole number"),
    ({"prompt": "a", "seed": 1.5}, 400, "whole number"),
    ({"prompt": "a", "steps": 0}, 400, "field 'steps' must be between 1 and 4"),
    ({"prompt": "a", "steps": 5}, 400, "between 1 and 4"),
    ({"prompt": "a", "guidance_scale": 31}, 400, "between 0 and 30"),
    ({"prompt": "a", "guidance_scale": "high"}, 400, "must be a number"),
    ({"prompt": "a", "guidance_scale": float("nan")}, 400, "must be a number"),
    ({"prompt": "a", "size": 512}, 400, "unknown field(s) 'size'"),
    ({"prompt": "a", "model": "stabilityai/sdxl"}, 400, "unknown generator 'stabilityai/sdxl'"),
    ([1], 400, "must be an object"),
]


@pytest.mark.parametrize("body,status,message", GENERATE_ERRORS)
def test_bad_generation_requests_are_clear_json_errors(client, body, status, message):
    r = client.post("/api/generate", data=json.dumps(body), content_type="application/json")
    assert r.status_code == status and message in r.json["error"], r.json


def test_generate_form_values_are_checked_too(client):
    r = client.post("/api/generate", data={"prompt": "a cat", "steps": "many"})
    assert r.status_code == 400 and "field 'steps' must be a whole number" in r.json["error"]
    r = client.post("/api/generate", data=b"prompt", content_type="text/plain")
    assert r.status_code == 415


def _image_json(**extra) -> str:
    return json.dumps({"image": base64.b64encode(png_bytes()).decode(), **extra})


LONE_SURROGATES = [  # (url, JSON body, what the message shows): JSON's \udfff escape, or its raw UTF-8 bytes
    ("/api/generate", '{"class": "\\udfff"}', "unknown class '\\udfff'"),
    ("/api/generate", b'{"class": "\xed\xbf\xbf"}', "unknown class '\\udfff'"),
    ("/api/generate", '{"prompt": "a cat", "model": "\\udfff"}', "unknown generator '\\udfff'"),
    ("/api/generate", '{"prompt": "a cat", "\\udfff": 1}', "unknown field(s) '\\udfff'"),
    ("/api/detect", _image_json(model="\udfff"), "unknown detector '\\udfff'"),
    ("/api/classify", _image_json(model="\ud800x"), "unknown classifier '\\ud800x'"),
    ("/", '{"class": "\\udfff"}', "unknown class &#39;\\udfff&#39;"),
    ("/check", '{"image": "", "\\ud800": 1}', "unknown field(s) &#39;\\ud800&#39;"),
]


@pytest.mark.parametrize("url,body,message", LONE_SURROGATES)
def test_a_lone_surrogate_is_echoed_escaped_in_a_4xx_and_logs_nothing(client, caplog, url, body, message):
    r = client.post(url, data=body, content_type="application/json")
    text = r.get_data().decode("utf-8")  # strict: the response is valid UTF-8
    assert r.status_code == 400, text[:500]
    if url.startswith("/api/"):
        assert r.json == {"error": r.json["error"], "status": 400} and message in r.json["error"], r.json
    else:
        assert message in text, text[:3000]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]  # no traceback with the input


def _chunked(client, url, body: bytes, content_type: str):
    """A POST as gunicorn passes a chunked one: no Content-Length, the input terminated by the server."""
    return client.post(
        url,
        data=body,
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/json", b'{"prompt": "' + b"x" * MAX_UPLOAD + b'"}'),
        ("application/x-www-form-urlencoded", b"prompt=" + b"x" * MAX_UPLOAD),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n',
        ),
    ],
    ids=["json", "urlencoded", "multipart"],
)
@pytest.mark.parametrize("url", ["/api/generate", "/api/detect"])
def test_a_chunked_body_over_the_limit_is_413_as_one_with_a_content_length(client, url, content_type, body):
    if content_type.startswith("multipart"):
        body += png_bytes() + b"\x00" * MAX_UPLOAD + b"\r\n--b--\r\n"
    with_length = client.post(url, data=body, content_type=content_type)
    chunked = _chunked(client, url, body, content_type)
    assert with_length.status_code == chunked.status_code == 413, chunked.json
    assert chunked.json == with_length.json
    assert chunked.json["error"] == f"the request is too large: at most {MAX_UPLOAD:,} bytes are accepted"
    page = _chunked(client, "/" if "generate" in url else "/check", body, content_type)
    assert page.status_code == 413 and f"at most {MAX_UPLOAD:,} bytes" in page.get_data(as_text=True)


def test_a_chunked_body_within_the_limit_is_read_whole(client):
    pad = MAX_UPLOAD - len(_image_json(model=""))  # exactly at the limit: still accepted
    body = _image_json(model=" " * pad).encode()
    assert len(body) == MAX_UPLOAD
    r = _chunked(client, "/api/detect", body, "application/json")
    assert r.status_code == 400 and "unknown detector" in r.json["error"]  # read and parsed, not refused
    r = _chunked(client, "/api/detect", _image_json().encode(), "application/json")
    assert r.status_code == 200 and 0 <= r.json["p_synthetic"] <= 1
    r = _chunked(client, "/api/generate", json.dumps({"prompt": "a cat", "steps": 1}).encode(), "application/json")
    assert r.status_code == 200 and r.json["prompt"] == "a cat"


def test_unknown_routes_and_methods_are_json_under_api_and_pages_elsewhere(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.is_json
    r = client.get("/api/classify")
    assert r.status_code == 405 and r.is_json and "POST" in r.headers["Allow"]
    r = client.get("/nothing")
    assert r.status_code == 404 and r.mimetype == "text/html" and "404" in r.get_data(as_text=True)


def test_a_full_generation_queue_is_429_with_retry_after(client, app, monkeypatch):
    queue = app.extensions["synthgap"].generator.queue
    monkeypatch.setattr(queue, "capacity", 0)  # nothing may wait
    entered, release = threading.Event(), threading.Event()

    def occupy():
        with queue.turn():
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=occupy)
    worker.start()
    try:
        assert entered.wait(10)
        r = client.post("/api/generate", json={"prompt": "a cat"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "busy" in r.json["error"]
        page = client.post("/", data={"prompt": "a cat"})
        assert page.status_code == 429 and "busy" in page.get_data(as_text=True)
    finally:
        release.set()
        worker.join()
    assert client.post("/api/generate", json={"prompt": "a cat", "steps": 1}).status_code == 200


def test_a_kind_of_model_the_server_lacks_is_404(model_files):
    client = create_app(ServeConfig(detector=str(model_files["detector"]))).test_client()
    assert client.get("/healthz").json["models"] == {"classifier": False, "detector": True, "generator": False}
    r = post_file(client, "/api/classify", png_bytes())
    assert r.status_code == 404 and "without a classifier" in r.json["error"]
    assert client.post("/api/generate", json={"prompt": "a"}).status_code == 404
    assert post_file(client, "/api/detect", png_bytes()).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "runs without a generator" in page.get_data(as_text=True)
    assert "synthgap serve runs/pipeline-small" in page.get_data(as_text=True)  # the command that makes one
    assert "synthgap pipeline --config" in client.post("/api/generate", json={"prompt": "a"}).json["error"]
    assert "Probability that it is AI-generated" in post_file(client, "/check", png_bytes()).get_data(as_text=True)


# ------------------------------------------------------------------ files: only in the output folder


def test_nothing_is_written_but_generated_images_and_uploads_only_when_asked(model_files, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    plain = create_app(ServeConfig(**{k: str(v) for k, v in model_files.items()})).test_client()
    assert post_file(plain, "/api/detect", png_bytes()).status_code == 200
    assert plain.post("/api/generate", json={"prompt": "a cat", "steps": 1}).json["saved"] is None
    keeping = create_app(ServeConfig(detector=str(model_files["detector"]), output=str(out), keep_uploads=True))
    data = png_bytes(30)
    assert post_file(keeping.test_client(), "/api/detect", data, filename="../../etc/evil.png").status_code == 200
    assert post_file(keeping.test_client(), "/check", png_bytes(31, fmt="JPEG")).status_code == 200
    assert list(cwd.iterdir()) == []
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert kept[0] == ".retention.lock"  # the workers' lock and running total (serve.retention)
    kept = kept[1:]
    assert len(kept) == 2 and all(k.startswith("uploads/") for k in kept)
    assert (out / "uploads" / f"{__import__('hashlib').sha256(data).hexdigest()}.png").read_bytes() == data


# ------------------------------------------------------------------ HTML pages (no JavaScript needed)


def test_generate_page_works_as_a_plain_form(client):
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'name="prompt"' in html and "<option>cat</option>" in html
    r = client.post("/", data={"prompt": "a <b>bold</b> cat", "seed": "5", "steps": "2"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="generated"' in html and "data:image/png;base64," in html
    assert "a &lt;b&gt;bold&lt;/b&gt; cat" in html and "<b>bold" not in html  # escaped
    assert "Looks like a" in html and "Probability that it is AI-generated" in html
    bad = client.post("/", data={"prompt": "  "})
    assert bad.status_code == 400 and "the prompt is empty" in bad.get_data(as_text=True)


def test_check_page_works_as_a_plain_form(client):
    assert 'enctype="multipart/form-data"' in client.get("/check").get_data(as_text=True)
    r = post_file(client, "/check", png_bytes(40, fmt="JPEG"), filename="photo.jpg")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "Probability that it is AI-generated" in html and "Looks like a" in html
    assert 'class="preview"' in html and "Threshold 50%" in html
    bad = post_file(client, "/check", b"not an image")
    assert bad.status_code == 400 and "not an image" in bad.get_data(as_text=True)
    big = post_file(client, "/check", bytes(MAX_UPLOAD + 10))
    assert big.status_code == 413 and "too large" in big.get_data(as_text=True).lower()


def test_detect_classify_and_the_check_page_carry_the_files_provenance(client, test_pki):
    from PIL.PngImagePlugin import PngInfo

    from synthgap.provenance.mark import ManifestSigner, SignConfig

    signed = ManifestSigner(SignConfig(str(test_pki["chain"]), str(test_pki["key"]))).sign(
        png_bytes(32), "png", {"seed": 1}
    )
    d = post_file(client, "/api/detect", signed).json
    schema_validator("Detection").validate(d)
    assert d["provenance"]["code"] == "signed_ai" and d["provenance"]["c2pa"]["state"] == "untrusted"
    assert d["answer"]["verdict"] == "synthetic" and d["answer"]["decided_by"] == "C2PA manifest"
    stripped = post_file(client, "/api/detect", png_bytes(32)).json
    assert stripped["provenance"]["code"] == "none"
    assert (stripped["answer"]["verdict"], stripped["answer"]["decided_by"]) == (stripped["verdict"], "pixel detector")
    c = post_file(client, "/api/classify", signed).json
    schema_validator("Classification").validate(c)
    assert c["provenance"]["code"] == "signed_ai"

    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Seed: 1")
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(32))).save(buf, "PNG", pnginfo=info)
    html = post_file(client, "/check", buf.getvalue()).get_data(as_text=True)
    assert "Provenance" in html and "Declared AI-generated by unsigned metadata" in html
    assert "Stable Diffusion WebUI" in html and "decided by the pixel detector" in html
    html = post_file(client, "/check", signed).get_data(as_text=True)
    assert "decided by the C2PA manifest" in html and "synthgap test signer" in html
    assert "valid signature, signer not in the trust list" in html and "trainedAlgorithmicMedia" in html


def test_generated_images_are_marked_and_signed_where_large_enough(model_files, test_pki, client):
    g = client.post("/api/generate", json={"prompt": "a red bird", "seed": 3, "steps": 2}).json
    assert g["provenance"]["code"] == "unsigned_ai" and g["provenance"]["c2pa"] is None  # the default: the XMP mark
    sign = {"sign_cert_chain": str(test_pki["chain"]), "sign_key": str(test_pki["key"])}
    for min_side, code in ((256, "unsigned_ai"), (0, "signed_ai")):  # the tiny model's images are 32 px
        app = create_app(
            ServeConfig(generator=str(model_files["generator"]), max_steps=2, sign_min_side=min_side, **sign)
        )
        r = app.test_client().post("/api/generate", json={"prompt": "a red bird", "seed": 3}).json
        assert r["width"] < 256 and r["provenance"]["code"] == code
        schema_validator("Generation").validate(r)
    with pytest.raises(SynthgapError, match="give both cert_chain and key"):
        ServeConfig(generator=str(model_files["generator"]), sign_cert_chain=str(test_pki["chain"])).check()


def test_models_page_shows_metrics_and_origin(client, model_files):
    html = client.get("/models").get_data(as_text=True)
    assert "serve-models0/detector" in html and "auc" in html and "0.95" in html
    assert "StableDiffusionPipeline" in html and "macro f1" in html


# ------------------------------------------------------------------ Hypothesis: malformed payloads never 5xx

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["image", "prompt", "class", "seed", "steps", "guidance_scale", "model", "file"]
) | st.text(max_size=8)
image_like = st.sampled_from(
    [
        b"",
        b"\x89PNG\r\n\x1a\n",
        png_bytes(8)[:40],
        png_claiming(5000, 5000),
        tiff_two_samples(),
        png_bytes(12),
        b"GIF89a\x01\x00",
    ]
) | st.binary(max_size=300)
payloads = st.one_of(
    st.builds(lambda v: {"json": v}, st.dictionaries(field_names, json_values | st.text(max_size=600), max_size=5)),
    st.builds(lambda v: {"json": v}, json_values),
    st.builds(
        lambda b, v: {"json": {"image": base64.b64encode(b).decode(), **v}},
        image_like,
        st.dictionaries(field_names, json_values, max_size=2),
    ),
    st.builds(
        lambda name, b, form: {"files": {name: b}, "form": form},
        field_names,
        image_like,
        st.dictionaries(field_names, st.text(max_size=40), max_size=3),
    ),
    st.builds(
        lambda b, ct: {"raw": b, "content_type": ct},
        st.binary(max_size=300),
        st.sampled_from(
            [
                None,
                "application/json",
                "multipart/form-data",
                "multipart/form-data; boundary=x",
                "application/x-www-form-urlencoded",
                "text/plain",
                "image/png",
            ]
        ),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=st.sampled_from(["/api/classify", "/api/detect", "/api/generate", "/", "/check"]), payload=payloads)
def test_malformed_payloads_never_get_a_5xx(client, url, payload):
    if "json" in payload:
        r = client.post(url, data=json.dumps(payload["json"]), content_type="application/json")
    elif "files" in payload:
        data = {k: (io.BytesIO(v), "f.png") for k, v in payload["files"].items()}
        data.update({k: v for k, v in payload["form"].items() if k not in data})
        r = client.post(url, data=data, content_type="multipart/form-data")
    else:
        r = client.post(url, data=payload["raw"], content_type=payload["content_type"])
    assert r.status_code < 500, r.get_data(as_text=True)[:500]
    if url.startswith("/api/") and r.status_code >= 400:
        assert r.is_json and r.json["error"]


# ------------------------------------------------------------------ the parts


def test_micro_batcher_batches_concurrent_requests_and_keeps_them_apart():
    calls = []

    def predict(x):
        calls.append(len(x))
        time.sleep(0.05)  # while this runs, the other requests queue up
        return x.float().mean(dim=(1, 2, 3))

    batcher = MicroBatcher(predict, max_batch=4, max_wait=0.01)
    images = [torch.full((3, 4, 4), i, dtype=torch.uint8) for i in range(10)]
    results = [None] * 10

    def ask(i):
        results[i] = float(batcher(images[i]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [float(i) for i in range(10)]
    assert sum(calls) == 10 and max(calls) > 1 and max(calls) <= 4


def test_micro_batcher_passes_a_model_error_to_its_callers_and_goes_on():
    state = {"fail": True}

    def predict(x):
        if state["fail"]:
            raise RuntimeError("model broke")
        return x.float().sum(dim=(1, 2, 3))

    batcher = MicroBatcher(predict, max_batch=8, max_wait=0)
    with pytest.raises(RuntimeError, match="model broke"):
        batcher(torch.ones(3, 2, 2, dtype=torch.uint8))
    state["fail"] = False
    assert float(batcher(torch.ones(3, 2, 2, dtype=torch.uint8))) == 12


def test_device_queue_runs_one_job_and_bounds_the_waiting():
    queue = DeviceQueue(capacity=1, timeout=10)
    inside, release, order = threading.Event(), threading.Event(), []

    def job(name, hold):
        with queue.turn():
            order.append(name)
            if hold:
                inside.set()
                release.wait(10)

    first = threading.Thread(target=job, args=("first", True))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=job, args=("second", False))
    second.start()
    while queue.pending < 2:
        time.sleep(0.01)
    with pytest.raises(QueueFull) as full:
        with queue.turn():
            pass
    assert full.value.retry_after >= 1
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first", "second"] and queue.pending == 0


def test_device_queues_of_two_workers_share_the_device_through_their_lock_file(tmp_path):
    # Two gunicorn workers = two DeviceQueues with the same lock file: their jobs never overlap.
    lock = str(tmp_path / "device.lock")
    workers = [DeviceQueue(capacity=4, timeout=10, lock_file=lock) for _ in range(2)]
    spans: list[tuple[float, float]] = []

    def job(queue):
        with queue.turn():
            t0 = time.monotonic()
            time.sleep(0.15)
            spans.append((t0, time.monotonic()))

    threads = [threading.Thread(target=job, args=(workers[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    spans.sort()
    assert len(spans) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    # A worker that cannot get the device within its timeout answers "busy", it does not hang.
    slow = DeviceQueue(capacity=4, timeout=0.2, lock_file=lock)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with workers[0].turn():
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    with pytest.raises(QueueFull):
        with slow.turn():
            pass
    release.set()
    holder.join(10)


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize("workers", [1, 2], ids=["one worker", "two workers sharing a lock file"])
def test_device_queue_serves_jobs_in_arrival_order(tmp_path, workers):
    # Job 0 holds the device while jobs 1-5 line up one after the other (alternating between the workers);
    # then the thread of job 0 asks again at once, as job 6: it must not jump the line.
    lock = str(tmp_path / "device.lock") if workers > 1 else None
    queues = [DeviceQueue(capacity=10, timeout=10, lock_file=lock) for _ in range(workers)]
    order, inside, release = [], threading.Event(), threading.Event()

    def first():
        with queues[0].turn():
            order.append(0)
            inside.set()
            release.wait(10)
        with queues[0].turn():
            order.append(6)

    def job(k):
        with queues[k % workers].turn():
            order.append(k)
            time.sleep(0.01)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert inside.wait(10)
    for k in range(1, 6):
        threads.append(threading.Thread(target=job, args=(k,)))
        threads[-1].start()
        _until(lambda k=k: sum(q.pending for q in queues) == k + 1)  # in line before the next one comes
    release.set()
    for t in threads:
        t.join(10)
    assert order == list(range(7)) and all(q.pending == 0 for q in queues), order


@pytest.mark.parametrize(
    "seconds,names",
    [([0.25], [""]), ([0.25, 0.25], ["", ""]), ([0.4, 0.05], ["slow model", "fast model"])],
    ids=["one worker", "two workers sharing a lock file", "two servers with other models on the device"],
)
def test_retry_after_is_the_wait_of_every_job_in_line(tmp_path, seconds, names):
    # A refused request is told how long the line (of every worker, each job at its model's pace) takes.
    import math

    lock = str(tmp_path / "device.lock") if len(names) > 1 else None
    queues = [DeviceQueue(capacity=2, timeout=30, lock_file=lock, name=name) for name in names]

    def job(k):
        with queues[k].turn():
            time.sleep(seconds[k])

    for k in range(len(queues)):
        job(k)  # one job of each measured
    assert queues[0].expected_wait() == 0
    # The refused worker holds 3 jobs (1 running, 2 waiting: its capacity); the other worker 2 more.
    targets = [0, 0, 0] + [1, 1] * (len(queues) > 1)
    threads = [threading.Thread(target=job, args=(k,)) for k in targets]
    for n, t in enumerate(threads):
        t.start()
        _until(lambda n=n: sum(q.pending for q in queues) == n + 1)
    with pytest.raises(QueueFull) as full:
        with queues[0].turn():
            pass
    refused = time.monotonic()
    for t in threads:
        t.join(30)
    measured = time.monotonic() - refused
    assert measured > sum(seconds[k] for k in targets[1:])
    assert abs(full.value.wait - measured) < 0.1 + 0.15 * measured, (full.value.wait, measured)
    assert full.value.retry_after == max(1, math.ceil(full.value.wait)) and "busy" in str(full.value)
    assert queues[0].expected_wait() == 0


# ------------------------------------------------------------------ several detectors, one answer per image


def photo_png(size=(512, 384), seed=0) -> bytes:
    buf = io.BytesIO()
    draw_photo(np.random.default_rng(seed), size).save(buf, "PNG")
    return buf.getvalue()


def test_several_detectors_each_answer_the_images_of_their_domain(pipeline_run, model_files):
    """The main job's detector (16-64 px) and its photo detector: the API and the Check page name which one
    answered, with its probe figures; an image neither covers is outside the training domain, naming both."""
    cfg = ServeConfig(detector=[str(pipeline_run / "detector"), str(pipeline_run / "photo-detector")])
    client = create_app(cfg).test_client()
    thumb = post_file(client, "/api/detect", png_bytes(32)).json
    photo = post_file(client, "/api/detect", photo_png()).json
    strip = post_file(client, "/api/detect", photo_png((5000, 40))).json
    for rec in (thumb, photo, strip):
        schema_validator("Detection").validate(rec)
    assert thumb["model"] == "pipeline-test/detector" and thumb["answered_by"]["name"] == "detector"
    assert photo["model"] == "pipeline-test/photo-detector" and photo["views"]["n"] == 4
    assert photo["answered_by"] == {
        "name": "photo-detector",
        "backbone": "airnet",
        "input": "windows at native scale",
        "test_auc": 0.99,
        "test_accuracy": 0.95,
        "probes": {
            "metadata": {"balanced_accuracy": 0.61, "verdict": PROBES["metadata"]["verdict"]},
            "content": {"auc": 0.96, "accuracy": 0.89, "image_size": 32},
            "credited": PROBES["credited"],
        },
    }
    assert photo["routing"]["tried"][0] == {
        "name": "detector",
        "inside": False,
        "why": ["size 512x384 px, trained on 16-64x16-64 px"],
    }
    assert strip["verdict"] == "outside the training domain" and strip["model"] is None
    assert strip["p_synthetic"] is None and strip["unsure_band"] is None and strip["answered_by"] is None
    assert (
        "every detector: detector (size 5000x40 px" in strip["why"] and "photo-detector (size 5000x40" in strip["why"]
    )
    assert strip["answer"]["verdict"] == "outside the training domain"
    # A client may ask for one detector by name: then only that one answers.
    only = post_file(client, "/api/detect", photo_png(), model="detector").json
    assert only["answered_by"]["name"] == "detector" and only["verdict"] == "outside the training domain"
    assert post_file(client, "/api/detect", photo_png(), model="other").status_code == 400

    models = client.get("/api/models").json
    assert [d["answers_as"] for d in models["detectors"]] == ["detector", "photo-detector"]
    assert models["detector"]["name"] == "pipeline-test/detector" and "photo-detector" in models["routing"]
    assert models["detectors"][1]["probes"]["content"]["auc"] == 0.96

    html = post_file(client, "/check", photo_png()).get_data(as_text=True)
    assert (
        'Answered by <b class="detector-name">photo-detector</b> (airnet, windows at native scale). '
        "On its test split: AUC 0.99; content alone (32 px thumbnails): AUC 0.96; "
        "file metadata alone: balanced accuracy 0.61." in html
    )
    assert "Passed on by detector (size 512x384 px, trained on 16-64x16-64 px)" in html
    html = post_file(client, "/check", photo_png((5000, 40))).get_data(as_text=True)
    assert "Outside what any of the 2 detectors was trained on" in html and "photo-detector</b>: size 5000x40" in html
    pages = html + client.get("/models").get_data(as_text=True) + json.dumps(models)
    assert str(pipeline_run.parent) not in pages  # names only, never where the models live on the server


def test_a_bundle_without_probes_or_a_name_answers_by_its_folder_name(model_files):
    client = create_app(ServeConfig(detector=str(model_files["detector"]))).test_client()
    rec = post_file(client, "/api/detect", png_bytes(32)).json
    assert rec["model"] == "serve-models0/detector" and "probes" not in rec["answered_by"]
    assert rec["answered_by"]["name"] == "detector" and rec["routing"]["order"] == ["detector"]
    html = post_file(client, "/check", png_bytes(32)).get_data(as_text=True)
    assert (
        'Answered by <b class="detector-name">detector</b> (airnet, 32 px thumbnails). On its test split: AUC 0.95.'
        in html
    )
    assert "content alone" not in html and "Passed on by" not in html


def test_the_detector_setting_takes_several_folders(pipeline_run):
    two = [str(pipeline_run / "detector"), str(pipeline_run / "photo-detector")]
    assert ServeConfig.load({"SYNTHGAP_SERVE_DETECTOR": ",".join(two)}).detectors == two
    assert ServeConfig.load({}, detector=tuple(two)).detector == two  # --detector A --detector B
    assert ServeConfig.load({}, detector=(two[0],)).detector == two[0]
    with pytest.raises(SynthgapError, match="'detector': no folder .*missing"):
        ServeConfig.load({}, detector=(two[0], two[0] + "-missing"))


def test_settings_come_from_the_environment_and_flags_win(tmp_path):
    env = {
        "SYNTHGAP_SERVE_DETECTOR": str(tmp_path),
        "SYNTHGAP_SERVE_PORT": "9001",
        "SYNTHGAP_SERVE_DEBUG": "true",
        "SYNTHGAP_SERVE_UNSURE_BAND": "0.05",
        "SYNTHGAP_SERVE_OUTPUT": "",
        "PATH": "/bin",
    }
    cfg = ServeConfig.load(env, port=9002, host=None)
    assert (cfg.detector, cfg.port, cfg.debug, cfg.unsure_band, cfg.output, cfg.host) == (
        str(tmp_path),
        9002,
        True,
        0.05,
        None,
        "127.0.0.1",
    )
    with pytest.raises(SynthgapError, match="unknown environment variable SYNTHGAP_SERVE_WORKRES"):
        ServeConfig.load({**env, "SYNTHGAP_SERVE_WORKRES": "2"})
    with pytest.raises(SynthgapError, match="serve setting 'workers': expected int, got 'two'"):
        ServeConfig.load({**env, "SYNTHGAP_SERVE_WORKERS": "two"})
    with pytest.raises(SynthgapError, match="'keep_uploads' needs 'output'"):
        ServeConfig.load(env, keep_uploads=True)
    with pytest.raises(SynthgapError, match="nothing to serve"):
        ServeConfig.load({})
    with pytest.raises(SynthgapError, match="'classifier': no folder"):
        ServeConfig.load({}, classifier=str(tmp_path / "missing"))


def test_load_classifier_reads_the_one_format_and_names_what_is_wrong(model_files, tmp_path):
    c = load_classifier(model_files["classifier"])
    assert c.classes == CLASSES and c.image_size == 32 and c.name == "classifier" and c.tta == TrainConfig().tta
    with pytest.raises(SynthgapError, match="not a classifier"):
        load_classifier(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(model_files["classifier"], broken)
    (broken / "classifier.json").write_text("{")
    with pytest.raises(SynthgapError, match="classifier.json: unreadable"):
        load_classifier(broken)


def test_a_classifier_is_safetensors_and_json_and_an_older_model_pt_folder_still_loads(model_files, tmp_path):
    folder = model_files["classifier"]
    meta = json.loads((folder / "classifier.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "model.safetensors"]
    assert meta["normalization"] == {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    assert meta["image_size"] == 32 and meta["classes"] == CLASSES and meta["architecture"] == "airnet"
    new = load_classifier(folder)
    old = tmp_path / "old"  # a folder written before the weights moved to safetensors
    old.mkdir()
    shutil.copy(folder / "classifier.json", old)
    torch.save(new.model.state_dict(), old / "model.pt")
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(load_classifier(old).predict(x), new.predict(x))


def test_cli_refuses_to_serve_nothing():
    r = synthgap("serve", env={k: None for k in os.environ if k.startswith("SYNTHGAP_SERVE_")}, check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: nothing to serve")


# ------------------------------------------------------------------ the real server, in a browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


LIVE_LOGS: dict[str, Path] = {}  # a live server's address: its log (stdout and stderr)


@pytest.fixture(scope="module")
def live_server(pipeline_run, tmp_path_factory):
    """`synthgap serve RUN_DIR` (gunicorn) on a free loopback port, stopped after the module."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    for base in serve_process([str(pipeline_run)], log):
        LIVE_LOGS[base] = log
        yield base


def test_gunicorn_serves_the_api(live_server):
    body = json.dumps({"image": base64.b64encode(png_bytes()).decode()}).encode()
    req = urllib.request.Request(live_server + "/api/detect", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and 0 <= json.load(r)["p_synthetic"] <= 1


def test_gunicorn_refuses_a_chunked_body_over_the_limit_and_echoes_a_surrogate_escaped(live_server):
    import http.client
    from urllib.parse import urlsplit

    limit = ServeConfig().max_upload_bytes
    url = urlsplit(live_server)

    def post(body, chunked: bool):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            if chunked:  # chunks of 64 KiB: http.client sends no Content-Length
                chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
                conn.request("POST", "/api/generate", chunks, {"Content-Type": "application/json"}, encode_chunked=True)
            elif len(body) > limit:  # refused on its Content-Length alone (the rest would meet a closed socket)
                conn.putrequest("POST", "/api/generate")
                conn.putheader("Content-Type", "application/json")
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders()
            else:
                conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    big = b'{"prompt": "' + b"x" * limit + b'"}'
    refused = (413, {"error": f"the request is too large: at most {limit:,} bytes are accepted", "status": 413})
    assert post(big, chunked=True) == post(big, chunked=False) == refused
    status, body = post(b'{"prompt": "a cat", "steps": 1, "seed": 3}', chunked=True)
    assert status == 200 and body["seed"] == 3
    status, body = post(b'{"class": "\\udfff"}', chunked=False)
    assert status == 400 and body["error"].startswith("unknown class '\\udfff'")
    log = LIVE_LOGS[live_server].read_text()
    assert "Traceback" not in log and "udfff" not in log, log[-3000:]


def test_browser_generates_an_image_and_checks_an_upload(live_server, tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(48, colour=(40, 200, 40)))
    large = tmp_path / "large.png"  # photo-sized: the photo detector's
    large.write_bytes(photo_png())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # The pages work under their content security policy: the browser refuses nothing.
            refused = []
            page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
            shots = Path(os.environ.get("SYNTHGAP_SCREENSHOTS", tmp_path))
            shots.mkdir(parents=True, exist_ok=True)
            response = page.goto(live_server + "/")
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
            page.fill("textarea[name=prompt]", "a small green frog on a leaf")
            page.fill("input[name=seed]", "11")
            page.click("button[type=submit]")
            page.wait_for_selector("#generated")
            assert page.eval_on_selector("#generated", "img => img.complete && img.naturalWidth > 0")
            assert "Probability that it is AI-generated" in page.content() and "seed 11" in page.content()
            page.screenshot(path=str(shots / "generate.png"), full_page=True)

            page.goto(live_server + "/check")
            page.set_input_files("input[name=image]", str(photo))
            page.click("button[type=submit]")
            page.wait_for_selector(".verdict")
            assert page.inner_text(".classifier .label") in CLASSES
            assert page.eval_on_selector("img.preview", "img => img.naturalWidth > 0")
            assert page.inner_text(".provenance .prov") == "No provenance"
            assert "decided by the pixel detector" in page.inner_text(".answer")
            # The classifier's bars (<meter>s: no inline style) are drawn, the longest first.
            widths = page.eval_on_selector_all(
                ".classifier meter",
                "ms => ms.map(m => [m.getBoundingClientRect().width, m.value])",
            )
            assert len(widths) == 3 and all(w > 50 for w, _ in widths)
            assert [v for _, v in widths] == sorted((v for _, v in widths), reverse=True)
            page.screenshot(path=str(shots / "check.png"), full_page=True)

            # Drag & drop: a dropped file is checked at once.
            page.goto(live_server + "/check")
            page.evaluate(
                """async (b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
                document.querySelector(".dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
            }""",
                base64.b64encode(photo.read_bytes()).decode(),
            )
            page.wait_for_selector(".verdict")
            assert "%" in page.inner_text(".p-ai")
            assert page.inner_text(".detector .detector-name") == "detector"

            # A photo-sized image: answered by the pipeline's photo detector, named with its figures.
            page.goto(live_server + "/check")
            page.set_input_files("input[name=image]", str(large))
            page.click("button[type=submit]")
            page.wait_for_selector(".answered-by")
            line = page.inner_text(".answered-by")
            assert line.startswith("Answered by photo-detector (airnet, windows at native scale).")
            assert "content alone (32 px thumbnails): AUC 0.96" in line and "mean over 4 windows" in page.content()
            shot = shots / "check-two-detectors.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            page.goto(live_server + "/models")
            assert "What is kept" in page.inner_text("main")
            page.screenshot(path=str(shots / "models.png"), full_page=True)
            assert refused == []
        finally:
            browser.close()


def test_an_image_outside_the_detectors_training_domain_gets_no_verdict(tmp_path):
    """A bundle trained on 32 x 32 JPEGs: a larger photo is 'outside the training domain' on the API and the Check page."""
    import json as _json

    bundle = make_detector_bundle(tmp_path / "det")
    meta = _json.loads((bundle / "detector.json").read_text())
    meta["domain"] = {"width": [32, 32], "height": [32, 32], "formats": ["JPEG"], "jpeg_quality": [40, 95]}
    (bundle / "detector.json").write_text(_json.dumps(meta))
    client = create_app(ServeConfig(detector=str(bundle), max_pixels=MAX_PIXELS)).test_client()
    photo, thumb = png_bytes(200, fmt="JPEG"), png_bytes(32, fmt="JPEG")
    far = post_file(client, "/api/detect", photo, filename="photo.jpg").json
    assert far["verdict"] == "outside the training domain" and far["rule"] == "outside_domain" and not far["reliable"]
    assert far["domain"]["why"] == ["size 200x200 px, trained on 32x32 px"]
    schema_validator("Detection").validate(far)
    near = post_file(client, "/api/detect", thumb, filename="thumb.jpg").json
    assert near["domain"]["inside"] and near["verdict"] in ("real", "synthetic", "unsure")
    page = post_file(client, "/check", photo, filename="photo.jpg").get_data(as_text=True)
    assert "Outside what this detector was trained on" in page and "size 200x200 px" in page


def test_a_detector_with_a_real_bound_answers_not_confidently_real_and_the_page_says_why(tmp_path):
    """Under the threshold but not under the bundle's real_bound: "unsure", the band shown from the bound up."""
    folder = make_tiny_bundle(tmp_path / "bounded")
    meta = json.loads((folder / "detector.json").read_text())
    meta.update(threshold=0.99, real_bound={"quantile": 0.5, "p": 0.001, "n_val_real": 20})
    (folder / "detector.json").write_text(json.dumps(meta))
    client = create_app(ServeConfig(detector=str(folder))).test_client()
    rec = post_file(client, "/api/detect", png_bytes(32)).json
    schema_validator("Detection").validate(rec)
    assert 0.001 <= rec["p_synthetic"] < 0.89, rec  # an untrained airnet: between the bound and the band
    assert (rec["verdict"], rec["rule"], rec["reliable"]) == ("unsure", "not_confidently_real", False)
    assert rec["unsure_band"] == [0.001, 1.0] and "which 50% of its validation real images stay under" in rec["why"]
    page = post_file(client, "/check", png_bytes(32)).get_data(as_text=True)
    assert "not confidently real" in page and "between 0% and 100% the answer is" in page
