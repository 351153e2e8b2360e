"""synthgap's web app: generate an image, see what the classifier and the detector say; check an upload.

`create_app(config)` is the Flask application factory; without a config it reads the
SYNTHGAP_SERVE_* environment variables, so any WSGI server can run it:

    gunicorn 'synthgap.serve:create_app()'

`synthgap serve` runs it under gunicorn (see `synthgap.serve.server`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.sansio.utils import host_is_trusted

from synthgap.serve.config import ServeConfig

# The pages load only their own script, style sheet and images, and show previews and results as data:
# URIs; no inline script or style runs, no other site may frame them, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def harden(response: Response) -> Response:
    """Every response: no MIME sniffing, the content security policy, no referrer to other sites, and a
    Location naming no host but a configured one (`trusted_hosts`): werkzeug builds a routing redirect's
    URL from the request's Host header, which the client chose, so otherwise it is made a path."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "same-origin"
    if location := response.headers.get("Location"):
        parts = urlsplit(location)
        trusted = current_app.config["TRUSTED_HOSTS"]
        named = parts.scheme or parts.netloc or location.startswith(("//", "/\\", "\\"))
        if named and not (parts.scheme in ("http", "https") and trusted and host_is_trusted(parts.netloc, trusted)):
            # a path on this server: "//host" or "/\host" would name another host to a browser
            path = "/" + parts.path.lstrip("/\\")
            response.headers["Location"] = (
                path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
            )
    return response


def refuse_untrusted_host(e: SecurityError):
    """A Host header not in `trusted_hosts`: 400, as JSON or plain text (no page: with no trusted host
    Flask builds no URLs, so a page's links cannot be made)."""
    message = "this server does not answer to that host name"
    if request.path.startswith("/api/") or request.path == "/healthz":
        return jsonify(error=message, status=400), 400
    return Response(f"400 Bad Request: {message}\n", 400, mimetype="text/plain")


def create_app(config: ServeConfig | None = None) -> Flask:
    """Build the app and load its models (once per worker process). No global side effects: the CPU
    threads of a worker are the server's to set (`synthgap.serve.server.worker_threads`)."""
    from synthgap.serve import api, ui
    from synthgap.serve.models import Models

    cfg = config.check() if config else ServeConfig.load()
    app = Flask(__name__)
    # TRUSTED_HOSTS: a request for another Host gets 400 (None: any host)
    app.config.from_mapping(MAX_CONTENT_LENGTH=cfg.max_upload_bytes, SYNTHGAP=cfg, TRUSTED_HOSTS=cfg.trusted_hosts)
    app.json.sort_keys = False  # keep the documented field order
    app.jinja_env.finalize = _encodable  # no value a page shows can fail the response's encoding
    app.extensions["synthgap"] = Models(cfg)
    app.register_blueprint(api.bp)
    app.register_blueprint(ui.bp)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(SecurityError, refuse_untrusted_host)
    app.after_request(harden)
    return app


def _encodable(value):
    """A value a template shows, fit to encode as UTF-8 (inputs.safe_text); Markup stays Markup, other
    types as they are."""
    from markupsafe import Markup

    from synthgap.serve.inputs import safe_text

    if isinstance(value, Markup):
        return Markup(safe_text(value))
    return safe_text(value) if isinstance(value, str) else value


def handle_http_error(e: HTTPException):
    """API paths get a JSON error body, pages a page; both keep the exception's headers (Retry-After, Allow).
    The message is made safe to encode first: it may echo what the client sent, and a lone surrogate (a JSON
    \\udXXX escape) would fail the response, a 500 with the raw input in the log (inputs.safe_text)."""
    from synthgap.serve.inputs import safe_text

    code = e.code or 500
    e.description = safe_text(e.description or e.name)
    headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
    if request.path.startswith("/api/") or request.path == "/healthz":
        response = jsonify(error=e.description, status=code)
        response.status_code = code
        response.headers.extend(headers)
        return response
    return render_template("error.html", http_error=e), code, headers


__all__ = ["ServeConfig", "create_app"]
