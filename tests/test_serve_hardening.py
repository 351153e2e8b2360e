"""The web app under hostile traffic (issue 29): what it keeps on disk stays within its caps, oldest out
first, private to the server's user; every response carries the hardening headers; a redirect never
names a host the client made up; no visitor sees exact library versions unless the server allows it."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import synthgap
from flask import Response
from test_serve import make_classifier_run, make_detector_bundle, png_bytes, post_file

from synthgap import SynthgapError
from synthgap.generate import save_tiny_pipeline
from synthgap.serve import CONTENT_SECURITY_POLICY, ServeConfig, create_app, harden
from synthgap.serve.retention import LOCK_FILE, Retention, _read_state

VERSIONS = {"synthgap": "0.0.0-test", "torch": str(torch.__version__), "python": sys.version.split()[0]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A classifier and a detector that record the library versions they were made with, and a generator."""
    root = tmp_path_factory.mktemp("hardening-models")
    classifier = make_classifier_run(root / "classifier")
    meta = json.loads((classifier / "classifier.json").read_text())
    assert meta["versions"]["torch"] == VERSIONS["torch"]
    detector = make_detector_bundle(root / "detector")
    meta = json.loads((detector / "detector.json").read_text())
    (detector / "detector.json").write_text(json.dumps({**meta, "versions": VERSIONS}))
    return {
        "classifier": str(classifier),
        "detector": str(detector),
        "generator": str(save_tiny_pipeline(root / "gen")),
    }


@pytest.fixture(scope="module")
def client(models):
    return create_app(ServeConfig(**models)).test_client()


def kept(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != LOCK_FILE)


def keep_at(r: Retention, rel: str, size: int, age_seconds: float) -> str | None:
    """Keep `size` bytes as `rel`, then date the file `age_seconds` back (the order eviction goes by)."""
    out = r.keep(rel, os.urandom(size))
    if out and (r.root / rel).exists():
        t = time.time_ns() - int(age_seconds * 1e9)
        os.utime(r.root / rel, ns=(t, t))
    return out


# ------------------------------------------------------------------ retention


def test_the_size_cap_evicts_the_oldest_files_first(tmp_path):
    r = Retention(tmp_path / "out", max_bytes=1000, sweep=False)
    for i, age in enumerate((40, 30, 20)):
        keep_at(r, f"uploads/{i}.png", 300, age)
    assert kept(r.root) == ["uploads/0.png", "uploads/1.png", "uploads/2.png"]  # 900 bytes: under the cap
    keep_at(r, "generated/3.png", 300, 10)  # 1200: the oldest goes, down to 900
    assert kept(r.root) == ["generated/3.png", "uploads/1.png", "uploads/2.png"]
    r.keep("uploads/4.png", os.urandom(600))  # 1500: down to at most 900, the new file stays
    assert kept(r.root) == ["generated/3.png", "uploads/4.png"]
    with r._locked() as fd:  # the running total the workers share is the folder's
        assert _read_state(fd)[:2] == (900, 2)
    assert r.keep("uploads/5.png", os.urandom(1001)) is None  # larger than the cap: not kept at all
    assert kept(r.root) == ["generated/3.png", "uploads/4.png"]
    with pytest.raises(ValueError, match="not a kept file's name"):
        r.keep("uploads/../../etc/x.png", b"x")


def test_the_count_cap_evicts_the_oldest_files_first(tmp_path):
    r = Retention(tmp_path / "out", max_bytes=2**20, max_files=3, sweep=False)
    for i in range(6):
        keep_at(r, f"uploads/{i}.png", 10, 60 - i)
        assert len(kept(r.root)) == min(i + 1, 3)
    assert kept(r.root) == ["uploads/3.png", "uploads/4.png", "uploads/5.png"]


def test_the_age_limit_removes_old_files_at_start_in_use_and_while_idle(tmp_path):
    out = tmp_path / "out"
    r = Retention(out, max_bytes=2**20, max_age_hours=1, sweep=False)
    keep_at(r, "uploads/old.png", 10, 2 * 3600)
    keep_at(r, "uploads/new.png", 10, 60)
    assert r.evict() == ["uploads/old.png"] and kept(out) == ["uploads/new.png"]
    os.utime(out / "uploads" / "new.png", ns=(0, 0))  # left by an earlier run, long ago
    Retention(out, max_bytes=2**20, max_age_hours=1, sweep=False)  # a server starting
    assert kept(out) == []
    # No request comes: the background sweep still removes a file past its age (here 1 s).
    idle = Retention(out, max_bytes=2**20, max_age_hours=1 / 3600)
    try:
        idle.keep("generated/a.png", b"x")
        deadline = time.monotonic() + 10
        while kept(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kept(out) == []
    finally:
        idle.close()


def test_workers_share_the_caps_through_the_folder(tmp_path):
    """Two workers' Retention on one folder: neither knows the other's writes but through its lock file."""
    a = Retention(tmp_path / "out", max_bytes=2**20, max_files=3, sweep=False)
    b = Retention(tmp_path / "out", max_bytes=2**20, max_files=3, sweep=False)
    keep_at(a, "uploads/a0.png", 10, 40)
    keep_at(b, "uploads/b0.png", 10, 30)
    keep_at(a, "uploads/a1.png", 10, 20)
    keep_at(b, "uploads/b1.png", 10, 10)
    assert kept(a.root) == ["uploads/a1.png", "uploads/b0.png", "uploads/b1.png"]


def test_kept_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        r = Retention(tmp_path / "out", max_bytes=2**20, sweep=False)
        r.keep("uploads/x.png", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((r.root / "uploads" / "x.png").stat().st_mode) == 0o600
    assert stat.S_IMODE((r.root / LOCK_FILE).stat().st_mode) == 0o600
    for folder in ("out", "out/uploads", "out/generated"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700, folder
    (tmp_path / "a-file").write_text("x")  # an output "folder" that cannot be one: said at start
    with pytest.raises(SynthgapError, match="'output': cannot keep files in .*a-file"):
        Retention(tmp_path / "a-file", max_bytes=1, sweep=False)


def test_the_app_keeps_uploads_and_images_within_the_caps_and_says_so(models, tmp_path):
    out = tmp_path / "out"
    (out / "uploads").mkdir(parents=True)
    (out / "uploads").chmod(0o755)  # as an earlier version left it
    app = create_app(ServeConfig(**models, output=str(out), keep_uploads=True, keep_max_files=2))
    c = app.test_client()
    for k in range(3):
        assert post_file(c, "/api/detect", png_bytes(20 + k)).status_code == 200
        time.sleep(0.02)  # distinct modification times
    r = c.post("/api/generate", json={"prompt": "a cat", "steps": 1})
    assert r.status_code == 200 and r.json["saved"].startswith("generated/")
    files = kept(out)
    assert files == sorted([r.json["saved"], f"uploads/{__import__('hashlib').sha256(png_bytes(22)).hexdigest()}.png"])
    for f in files:
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o600, f
    assert stat.S_IMODE((out / "uploads").stat().st_mode) == 0o700
    retention = c.get("/api/models").json["retention"]
    assert retention["writes"] == ["generated images", "uploads"]
    assert (retention["max_bytes"], retention["max_files"], retention["max_age_hours"]) == (2**30, 2, 168)
    assert retention["summary"] == (
        "Generated images and uploads are kept on the server, at most 1 GiB and 2 files in all, "
        "each for at most 168 hours (7 days); the oldest are removed first"
    )
    assert retention["summary"] in c.get("/models").get_data(as_text=True)
    assert str(out) not in json.dumps(retention)


def test_a_server_that_writes_nothing_says_so(client):
    retention = client.get("/api/models").json["retention"]
    assert retention["writes"] == [] and retention["max_bytes"] is None
    assert "Nothing is written on the server" in client.get("/models").get_data(as_text=True)


def test_serve_flags_map_onto_the_retention_and_hardening_settings(models, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("synthgap.serve.server.run", seen.append)
    clean = {k: None for k in os.environ if k.startswith("SYNTHGAP_SERVE_")}
    synthgap(
        "serve",
        "--detector",
        models["detector"],
        "--output",
        tmp_path,
        "--keep-uploads",
        "--keep-max-bytes",
        "5000",
        "--keep-max-files",
        "7",
        "--keep-max-age-hours",
        "0.5",
        "--trusted-host",
        "synthgap.example",
        "--trusted-host",
        ".lab.example",
        "--show-versions",
        env=clean,
    )
    cfg = seen[-1]
    assert (cfg.keep_uploads, cfg.keep_max_bytes, cfg.keep_max_files, cfg.keep_max_age_hours) == (True, 5000, 7, 0.5)
    assert cfg.trusted_hosts == ["synthgap.example", ".lab.example"] and cfg.show_versions is True
    env = {**clean, "SYNTHGAP_SERVE_KEEP_UPLOADS": "true", "SYNTHGAP_SERVE_TRUSTED_HOSTS": "a.example, b.example"}
    synthgap("serve", "--detector", models["detector"], "--output", tmp_path, "--no-keep-uploads", env=env)
    cfg = seen[-1]
    assert cfg.keep_uploads is False and cfg.trusted_hosts == ["a.example", "b.example"]
    assert (cfg.keep_max_bytes, cfg.keep_max_files, cfg.keep_max_age_hours, cfg.show_versions) == (
        2**30,
        10_000,
        168,
        False,
    )
    for bad, message in (
        ({"keep_max_bytes": 0}, "'keep_max_bytes': expected at least 1"),
        ({"keep_max_files": -1}, "'keep_max_files': expected at least 0"),
        ({"keep_max_age_hours": -1}, "'keep_max_age_hours': expected at least 0"),
        ({"trusted_hosts": "evil.example/x"}, "'trusted_hosts': not a host name"),
        ({"trusted_hosts": []}, "'trusted_hosts': expected at least one host"),
    ):
        with pytest.raises(SynthgapError, match=message):
            ServeConfig(detector=models["detector"], **bad).check()


# ------------------------------------------------------------------ hardened responses


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/", 200),
        ("GET", "/check", 200),
        ("GET", "/models", 200),
        ("GET", "/static/style.css", 200),
        ("GET", "/api/models", 200),
        ("GET", "/api/openapi.json", 200),
        ("GET", "/healthz", 200),
        ("GET", "/nowhere", 404),
        ("GET", "/api/nowhere", 404),
        ("DELETE", "/api/detect", 405),
        ("POST", "/api/detect", 415),
    ],
)
def test_every_response_is_hardened(client, method, path, status):
    r = client.open(path, method=method)
    assert r.status_code == status
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    csp = {d.split()[0]: d.split()[1:] for d in r.headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'self'"] and csp["img-src"] == ["'self'", "data:"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'self'"] and csp["base-uri"] == ["'none'"]
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_pages_need_no_inline_script_or_style(client):
    pages = [
        client.get("/models").get_data(as_text=True),
        client.post("/", data={"prompt": "a fox", "seed": "3", "steps": "1"}).get_data(as_text=True),
        post_file(client, "/check", png_bytes(28)).get_data(as_text=True),
    ]
    assert "<meter" in pages[2]  # the classifier's bars
    for html in pages:
        assert not re.search(r"\sstyle\s*=", html) and "<style" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html) and not re.search(r"\son[a-z]+\s*=", html)


def test_redirects_never_name_a_host_the_client_made_up(models):
    c = create_app(ServeConfig(**models)).test_client()
    r = c.get("/api//models", headers={"Host": "evil.example"})  # werkzeug merges the slashes by a redirect
    assert r.status_code == 308 and r.headers["Location"] == "/api/models"
    r = c.get("/static//style.css?v=1", headers={"Host": "evil.example"})
    assert r.status_code == 308 and r.headers["Location"] == "/static/style.css?v=1"

    only = create_app(ServeConfig(**models, trusted_hosts="synthgap.example, .lab.example")).test_client()
    r = only.get("/api/models", headers={"Host": "evil.example"})
    assert r.status_code == 400 and r.json == {"error": "this server does not answer to that host name", "status": 400}
    r = only.get("/models", headers={"Host": "evil.example"})
    assert r.status_code == 400 and "does not answer to that host" in r.get_data(as_text=True)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert only.get("/api//models", headers={"Host": "evil.example"}).status_code == 400
    r = only.get("/api//models", headers={"Host": "gpu.lab.example:8443"})
    assert r.status_code == 308 and r.headers["Location"] == "http://gpu.lab.example:8443/api/models"
    assert only.get("/healthz", headers={"Host": "synthgap.example"}).status_code == 200

    app = create_app(ServeConfig(**models, trusted_hosts=["synthgap.example"]))
    for location, expected in (
        ("http://evil.example/check?x=1#top", "/check?x=1#top"),
        ("//evil.example/check", "/check"),
        ("/\\evil.example/check", "/evil.example/check"),
        ("https://synthgap.example/models", "https://synthgap.example/models"),
        ("javascript://synthgap.example/%0aalert(1)", "/%0aalert(1)"),
        ("/models", "/models"),
    ):
        with app.test_request_context("/"):
            response = harden(Response(status=302, headers={"Location": location}))
        assert response.headers["Location"] == expected, location


def test_library_versions_are_shown_only_when_allowed(models, client):
    secret = [VERSIONS["torch"], VERSIONS["python"]]
    hidden = client.get("/api/models")
    assert "versions" not in hidden.json["classifier"] and "versions" not in hidden.json["detector"]
    assert all("versions" not in d for d in hidden.json["detectors"])
    for body in (hidden.get_data(as_text=True), client.get("/models").get_data(as_text=True)):
        assert not any(v in body for v in secret)
    shown = create_app(ServeConfig(**models, show_versions=True)).test_client()
    m = shown.get("/api/models").json
    assert m["classifier"]["versions"]["torch"] == VERSIONS["torch"] and m["detector"]["versions"] == VERSIONS
    assert all(v in shown.get("/models").get_data(as_text=True) for v in secret)
