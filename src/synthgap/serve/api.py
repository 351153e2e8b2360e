"""The JSON API; /api/openapi.json describes exactly these routes."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import TooManyRequests

from synthgap.serve.batching import QueueFull
from synthgap.serve.inputs import read_generate, read_upload
from synthgap.serve.models import get_models

bp = Blueprint("api", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok", models={k: v is not None for k, v in get_models().names().items()})


@bp.get("/api/models")
def models():
    return jsonify(get_models().describe())


def _judge_upload(kind: str):
    """The uploaded image through the `kind` model ('classifier' or 'detector'), as JSON."""
    models = get_models()
    models.require(kind)
    upload = read_upload(request, models.cfg.max_pixels, models.decode_side)
    models.require(kind, upload.model)
    with models.admission.hold(upload.pixels):  # decoded and judged within the worker's pixel budget
        image = upload.decode()
        models.keep_upload(upload.data, upload.format)
        if kind == "classifier":
            return jsonify({**models.classify(image), "provenance": models.provenance(upload.data)})
        return jsonify(models.detect(image, upload.data, upload.model))


@bp.post("/api/classify")
def classify():
    return _judge_upload("classifier")


@bp.post("/api/detect")
def detect():
    return _judge_upload("detector")


@bp.post("/api/generate")
def generate():
    models = get_models()
    models.require("generator")
    cfg = models.cfg
    req = read_generate(request, cfg.max_prompt_chars, cfg.max_steps, models.generator.classes)
    models.require("generator", req.model)
    try:
        return jsonify(models.generate(req))
    except QueueFull as e:
        raise TooManyRequests(str(e), retry_after=e.retry_after) from None


@bp.get("/api/openapi.json")
def openapi():
    from synthgap.serve.openapi import document

    return jsonify(document())
