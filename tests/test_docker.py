"""The container files agree with each other and with the code (images cannot be built on CI machines):
compose.yaml, the Dockerfile, scripts/setup.sh, the settings ServeConfig reads and the pipeline's folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from synthgap import SynthgapError
from synthgap.serve import ServeConfig, create_app

ROOT = Path(__file__).resolve().parent.parent


def _defaults(value: str) -> str:
    """compose's ${VAR:-default} and ${VAR-default} with nothing set in the environment."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(value))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def dockerfile_env(text: str) -> dict[str, str]:
    """The ENV settings of the Dockerfile (KEY=VALUE pairs, continued lines joined)."""
    env = {}
    for block in re.findall(r"^ENV (.+?)(?<!\\)$", text.replace("\\\n", " "), flags=re.M):
        env.update(pair.split("=", 1) for pair in shlex.split(block))
    return env


def test_the_app_and_the_one_shot_pipeline_share_the_image_and_the_models_volume(compose):
    app, pipeline = compose["services"]["synthgap"], compose["services"]["pipeline"]
    assert app["build"] == pipeline["build"] and app["image"] == pipeline["image"]
    assert pipeline["profiles"] == ["setup"]  # `docker compose up` does not start it
    run = app["environment"]["SYNTHGAP_SERVE_RUN"]
    cmd = pipeline["command"]
    assert cmd[:2] == [".venv/bin/synthgap", "pipeline"]
    config = cmd[cmd.index("--config") + 1]
    assert (ROOT / config).is_file()  # relative to the image's WORKDIR, where the checkout is copied
    assert f"out={run}" in cmd  # the pipeline writes where the app reads
    mounts = {
        s: {v.split(":")[1]: v.split(":")[0] for v in compose["services"][s]["volumes"]}
        for s in ("synthgap", "pipeline")
    }
    owner = next(m for m in mounts["synthgap"] if run.startswith(m + "/"))
    assert mounts["pipeline"][owner] == mounts["synthgap"][owner] in compose["volumes"]  # the same named volume
    # The app says how to fill it: the commands name these services
    hint = app["environment"]["SYNTHGAP_SERVE_SETUP_HINT"]
    assert "docker compose run --rm pipeline" in hint and "restart synthgap" in hint


def test_every_setting_the_container_files_give_is_one_the_code_reads(compose, dockerfile):
    env = {
        **dockerfile_env(dockerfile),
        **{k: _defaults(v) for k, v in compose["services"]["synthgap"]["environment"].items()},
    }
    serve = {k: v for k, v in env.items() if k.startswith("SYNTHGAP_SERVE_")}
    assert {"SYNTHGAP_SERVE_HOST", "SYNTHGAP_SERVE_PORT", "SYNTHGAP_SERVE_RUN"} <= set(serve)
    others = {k for k in env if k.startswith("SYNTHGAP_") and k not in serve} | set(
        compose["services"]["pipeline"]["environment"]
    )
    source = "".join(p.read_text() for p in (ROOT / "src" / "synthgap").rglob("*.py"))
    for name in others:  # SYNTHGAP_CACHE, SYNTHGAP_DATA: read by the code, not a typo
        assert f'"{name}"' in source, name
    # The container's settings load as they stand (unknown SYNTHGAP_SERVE_* names are an error there)
    cfg = ServeConfig.load(serve)
    assert cfg.host == "0.0.0.0" and cfg.port == int(re.search(r"EXPOSE (\d+)", dockerfile).group(1))
    assert compose["services"]["synthgap"]["expose"] == [str(cfg.port)]


def test_the_app_is_reached_only_through_nginx_with_deadlines_and_the_body_limit(compose):
    """compose publishes nginx's port, never the app's; nginx's conf points at the app's port, reads requests
    with header and body deadlines, and refuses bodies the app would refuse anyway."""
    services = compose["services"]
    assert "ports" not in services["synthgap"]
    proxy = services["proxy"]
    assert proxy["depends_on"] == ["synthgap"] and "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    listen = re.search(r"listen\s+(\d+);", conf).group(1)
    assert _defaults(proxy["ports"][0]).endswith(f":{listen}")
    port = ServeConfig.load(
        {k: v for k, v in dockerfile_env((ROOT / "Dockerfile").read_text()).items() if k.startswith("SYNTHGAP_SERVE_")}
        | {"SYNTHGAP_SERVE_ALLOW_EMPTY": "true"}
    ).port
    assert re.search(rf"server\s+synthgap:{port};", conf)
    for directive in ("client_header_timeout", "client_body_timeout"):
        assert int(re.search(rf"{directive}\s+(\d+)s;", conf).group(1)) <= 30, directive
    limit_mb = int(re.search(r"client_max_body_size\s+(\d+)m;", conf).group(1))
    app_limit = ServeConfig().max_upload_bytes
    assert app_limit <= limit_mb * 2**20 <= 2 * app_limit  # room for multipart/base64 wrapping, no more


def test_on_an_empty_models_volume_the_app_starts_and_says_what_to_run(compose, dockerfile, tmp_path, caplog):
    env = {k: _defaults(v) for k, v in compose["services"]["synthgap"]["environment"].items()}
    env["SYNTHGAP_SERVE_RUN"] = str(tmp_path / "models" / "pipeline-small")  # the volume, empty
    with caplog.at_level("WARNING", logger="synthgap"):
        client = create_app(ServeConfig.load(env)).test_client()
    assert "serving no models" in caplog.text and "docker compose run --rm pipeline" in caplog.text
    assert client.get("/healthz").json["models"] == {"classifier": False, "detector": False, "generator": False}
    for page in ("/", "/check", "/models"):
        r = client.get(page)
        assert r.status_code == 200 and "docker compose run --rm pipeline" in r.get_data(as_text=True), page
    assert "docker compose run --rm pipeline" in client.post("/api/classify", json={"image": ""}).json["error"]
    # Without allow_empty a missing pipeline folder is an error that says how to make it
    with pytest.raises(SynthgapError, match="no folder .*pipeline-small; make it with: synthgap pipeline"):
        ServeConfig.load({k: v for k, v in env.items() if k != "SYNTHGAP_SERVE_ALLOW_EMPTY"})


def test_the_dockerfile_is_a_thin_wrapper_over_setup_and_serve(dockerfile):
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "RUN bash scripts/setup.sh" in dockerfile and "-m venv .venv" in setup  # the venv the CMD runs from
    assert re.search(r'CMD \["\.venv/bin/synthgap", "serve"\]', dockerfile)
    assert 'synthgap = "synthgap.cli:main"' in (ROOT / "pyproject.toml").read_text()
    assert "/healthz" in dockerfile and any(
        r.rule == "/healthz" for r in create_app(ServeConfig(allow_empty=True)).url_map.iter_rules()
    )
    owned = re.search(r"mkdir -p ([^&]+)&& chown synthgap ([^\n\\]+)", dockerfile)
    assert owned and {"/models", "/cache", "/data"} <= set(owned.group(2).split())  # volumes the user writes to
