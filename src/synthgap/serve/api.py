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


@bp.post("/api/classify")
def classify():
    models = get_models()
    models.require("classifier")
    upload = read_upload(request, models.cfg.max_pixels)
    models.require("classifier", upload.model)
    models.keep_upload(upload.data, upload.format)
    return jsonify(models.classify(upload.image))


@bp.post("/api/detect")
def detect():
    models = get_models()
    models.require("detector")
    upload = read_upload(request, models.cfg.max_pixels)
    models.require("detector", upload.model)
    models.keep_upload(upload.data, upload.format)
    return jsonify(models.detect(upload.image))


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
