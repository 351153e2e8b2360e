"""The HTML pages: Generate, Check an image, Models. Plain forms that work without JavaScript;
static/app.js only adds drag & drop and a busy state. A mistake re-renders the form with the
message (and the API's status code)."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from werkzeug.exceptions import HTTPException

from synthgap.serve.batching import QueueFull
from synthgap.serve.inputs import read_generate, read_upload, safe_text
from synthgap.serve.models import PREVIEW_SIDE, get_models, png_data_uri

bp = Blueprint("ui", __name__)


@bp.route("/", methods=["GET", "POST"])
def generate():
    models = get_models()
    result, error, status, headers = None, None, 200, {}
    if request.method == "POST":
        try:
            models.require("generator")
            cfg = models.cfg
            result = models.generate(
                read_generate(request, cfg.max_prompt_chars, cfg.max_steps, models.generator.classes)
            )
        except QueueFull as e:
            error, status, headers = str(e), 429, {"Retry-After": str(e.retry_after)}
        except HTTPException as e:
            error, status = safe_text(e.description), e.code
    return (
        render_template(
            "generate.html",
            names=models.names(),
            generator=models.generator,
            form=request.form,
            result=result,
            error=error,
            max_steps=models.cfg.max_steps,
            setup_hint=models.cfg.setup_hint,
        ),
        status,
        headers,
    )


@bp.route("/check", methods=["GET", "POST"])
def check():
    models = get_models()
    result, preview, error, status = None, None, None, 200
    if request.method == "POST":
        try:
            if not (models.classifier or models.detector):
                models.require("detector")
            upload = read_upload(request, models.cfg.max_pixels, models.decode_side)
            with models.admission.hold(upload.pixels):
                image = upload.decode()
                models.keep_upload(upload.data, upload.format)
                result, preview = models.check(image, upload.data), png_data_uri(image, max_side=PREVIEW_SIDE)
        except HTTPException as e:
            error, status = safe_text(e.description), e.code
    return render_template(
        "check.html",
        names=models.names(),
        result=result,
        preview=preview,
        error=error,
        setup_hint=models.cfg.setup_hint,
    ), status


@bp.get("/models")
def models_page():
    models = get_models()
    return render_template(
        "models.html",
        names=models.names(),
        models=models.describe(),
        cfg=models.cfg,
        missing={kind: models.missing(kind) for kind in ("classifier", "detector", "generator")},
    )
