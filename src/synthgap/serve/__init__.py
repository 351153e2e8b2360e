"""synthgap's web app: generate an image, see what the classifier and the detector say; check an upload.

`create_app(config)` is the Flask application factory; without a config it reads the
SYNTHGAP_SERVE_* environment variables, so any WSGI server can run it:

    gunicorn 'synthgap.serve:create_app()'

`synthgap serve` runs it under gunicorn (see `synthgap.serve.server`).
"""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from synthgap.serve.config import ServeConfig


def create_app(config: ServeConfig | None = None) -> Flask:
    """Build the app and load its models (once per worker process). No global side effects: the CPU
    threads of a worker are the server's to set (`synthgap.serve.server.worker_threads`)."""
    from synthgap.serve import api, ui
    from synthgap.serve.models import Models

    cfg = config.check() if config else ServeConfig.load()
    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=cfg.max_upload_bytes, SYNTHGAP=cfg)
    app.json.sort_keys = False  # keep the documented field order
    app.extensions["synthgap"] = Models(cfg)
    app.register_blueprint(api.bp)
    app.register_blueprint(ui.bp)
    app.register_error_handler(HTTPException, handle_http_error)
    return app


def handle_http_error(e: HTTPException):
    """API paths get a JSON error body (keeping headers such as Retry-After and Allow); pages get a page."""
    if request.path.startswith("/api/") or request.path == "/healthz":
        response = jsonify(error=e.description, status=e.code)
        response.status_code = e.code or 500
        for key, value in e.get_response().headers.items():
            if key in ("Retry-After", "Allow"):
                response.headers[key] = value
        return response
    return render_template("error.html", http_error=e), e.code


__all__ = ["ServeConfig", "create_app"]
