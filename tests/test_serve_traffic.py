"""The web app under hostile traffic: memory bounded by admission and by decoding no more than the models
need, truncated JPEGs refused, slow clients holding no request thread (a real gunicorn).
benchmarks/serve_load.py measures the same at scale (memory, throughput, 200 slow sockets)."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from conftest import make_tiny_bundle, serve_process
from PIL import Image
from werkzeug.exceptions import ServiceUnavailable

from synthgap.serve import ServeConfig, create_app
from synthgap.serve.admission import PixelBudget
from synthgap.serve.worker import request_arrived


def jpeg_bytes(width: int, height: int, quality: int = 90, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth colour fields with noise, so DCT scaling has detail to lose."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(11 * x * y)], -1) * 90 + 128
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("traffic")
    return {
        "thumbnails": make_tiny_bundle(root / "thumbnails"),
        "windows": make_tiny_bundle(root / "windows", crop=True),
    }


def _app(detector, **settings):
    return create_app(ServeConfig(detector=str(detector), **settings))


# ------------------------------------------------------------------ decoding no more than the models need


def test_a_thumbnail_detector_decodes_a_large_jpeg_small_and_answers_as_from_the_whole_image(bundles):
    from synthgap.serve.inputs import decode_image

    app = _app(bundles["thumbnails"])
    models = app.extensions["synthgap"]
    assert models.decode_side == 256  # 8 x its 32 px thumbnail (the preview's 256 at least)
    data = jpeg_bytes(2400, 1800)
    whole, _ = decode_image(data, 40_000_000)
    small, _ = decode_image(data, 40_000_000, models.decode_side)
    assert whole.size == (2400, 1800) and 256 <= min(small.size) < 512  # 1/4 by libjpeg's DCT scaling
    p_whole = models.detect(whole)["p_synthetic"]
    r = app.test_client().post("/api/detect", data={"image": (io.BytesIO(data), "x.jpg")})
    assert r.status_code == 200
    assert abs(r.json["p_synthetic"] - p_whole) < 0.01, (r.json["p_synthetic"], p_whole)


def test_a_window_detector_gets_every_pixel(bundles):
    app = _app(bundles["windows"])
    assert app.extensions["synthgap"].decode_side is None
    assert (
        app.test_client().post("/api/detect", data={"image": (io.BytesIO(jpeg_bytes(300, 200)), "x.jpg")}).status_code
        == 200
    )


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "I;16"])
def test_a_large_png_of_any_mode_is_reduced_to_what_the_models_need_with_its_colours(mode):
    from synthgap.data.images import to_rgb, upright_rgb

    arr = np.zeros((1200, 1000, 3), np.uint8)
    arr[:, 500:] = (250, 250, 250)  # left half dark, right half light: survives any reduction
    im = Image.fromarray(arr).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257).convert("I;16")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    opened = Image.open(io.BytesIO(buf.getvalue()))
    small = upright_rgb(opened, 256)
    assert (
        small.mode == "RGB"
        and 256 <= min(small.size) < 512
        and small.size[0] / small.size[1] == pytest.approx(1000 / 1200, rel=0.02)
    )
    a = np.asarray(small, np.float32)
    assert a[:, : a.shape[1] // 3].mean() < 40 and a[:, -a.shape[1] // 3 :].mean() > 200
    whole = to_rgb(Image.open(io.BytesIO(buf.getvalue())))
    assert whole.size == (1000, 1200)


def test_a_jpeg_too_short_for_the_pixels_it_claims_is_refused_as_truncated(bundles, tmp_path):
    from synthgap.data.images import decode_native

    data = jpeg_bytes(2000, 2000, quality=75)
    short = data[:4096] + b"\xff\xd9"  # header, a little scan, an end marker: libjpeg would fill in the rest
    r = _app(bundles["thumbnails"]).test_client().post("/api/detect", data={"image": (io.BytesIO(short), "x.jpg")})
    assert r.status_code == 400 and "truncated" in r.json["error"] and "2000x2000" in r.json["error"]
    (tmp_path / "short.jpg").write_bytes(short)
    im, why = decode_native(tmp_path / "short.jpg")  # files too: one decoder
    assert im is None and "truncated" in why
    im, why = decode_native(data)
    assert why is None and im.size == (2000, 2000)


# ------------------------------------------------------------------ admission by pixels in flight


def test_pixel_budget_admits_in_arrival_order_within_the_budget():
    budget = PixelBudget(100, wait=5)
    order, inside, peak = [], [0], [0]
    lock = threading.Lock()

    def request(k, pixels):
        with budget.hold(pixels):
            with lock:
                order.append(k)
                inside[0] += pixels
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= pixels

    with budget.hold(100):  # the budget full: everyone queues, in the order they arrive
        threads = []
        for k, pixels in enumerate([60, 30, 60, 10, 500]):  # 500: larger than the budget, runs alone
            threads.append(threading.Thread(target=request, args=(k, pixels)))
            threads[-1].start()
            while budget.waiting < k + 1:
                time.sleep(0.001)
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4] and peak[0] <= 500
    assert budget.in_flight == 0 and budget.waiting == 0


def test_a_request_over_the_budget_waits_then_gets_503_with_retry_after_and_the_next_goes_on():
    budget = PixelBudget(100, wait=0.2)
    with budget.hold(80):
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable) as e:
            with budget.hold(50):
                pass
        assert time.monotonic() - t0 >= 0.2 and e.value.retry_after >= 1
        with budget.hold(20):  # what still fits goes through
            pass
    assert budget.waiting == 0


def test_the_api_answers_503_with_retry_after_when_the_budget_is_held(bundles):
    app = _app(bundles["thumbnails"], pixel_budget=1000, admission_wait=0.1)
    budget = app.extensions["synthgap"].admission
    client = app.test_client()
    data = jpeg_bytes(64, 64)
    with budget.hold(1000):
        r = client.post("/api/detect", data={"image": (io.BytesIO(data), "x.jpg")})
        page = client.post("/check", data={"image": (io.BytesIO(data), "x.jpg")})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and "busy" in r.json["error"]
    assert page.status_code == 503 and "busy" in page.get_data(as_text=True)
    assert client.post("/api/detect", data={"image": (io.BytesIO(data), "x.jpg")}).status_code == 200


# ------------------------------------------------------------------ slow clients (serve.worker)


@pytest.mark.parametrize(
    "raw, arrived",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", False),  # headers not ended
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", True),  # over max_body: the app answers 413
        (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", True),  # malformed: gunicorn answers 400
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\nab", True),  # over max_body
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True),  # malformed
    ],
)
def test_request_arrived_knows_when_a_request_is_whole(raw, arrived):
    assert request_arrived(raw, max_body=1000) is arrived


@pytest.fixture(scope="module")
def slow_server(bundles, tmp_path_factory):
    """`synthgap serve` under gunicorn with 4 request threads and a 3 s read timeout; its port."""
    log = tmp_path_factory.mktemp("slow") / "server.log"
    env = {**os.environ, "SYNTHGAP_SERVE_READ_TIMEOUT": "3", "SYNTHGAP_SERVE_THREADS": "4"}
    for base in serve_process(["--detector", str(bundles["thumbnails"])], log, env):
        yield int(base.rsplit(":", 1)[1])


def test_slow_clients_hold_no_request_thread_and_time_out(slow_server):
    port = slow_server
    slow = []
    for k in range(24):  # six times the server's 4 request threads, half in their headers, half in their body
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            if k % 2
            else b"POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
        )
        slow.append(s)
    time.sleep(0.5)
    for _ in range(5):
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 1
    body = json.dumps({"image": ""}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/detect", body, {"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as e:  # a whole request is answered at once: here its 400
        assert e.code == 400 and "empty" in json.load(e)["error"]
    for s in slow:  # past the read timeout: 408 and closed
        s.settimeout(6)
        assert s.recv(100).startswith(b"HTTP/1.1 408")
        s.close()


def test_expect_continue_and_chunked_uploads_are_answered_without_delay(slow_server):
    import http.client

    data = jpeg_bytes(200, 150)
    conn = http.client.HTTPConnection("127.0.0.1", slow_server, timeout=5)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Transfer-Encoding": "chunked"}
    t0 = time.monotonic()
    conn.request("POST", "/api/detect", body=iter([body[:1000], body[1000:]]), headers=headers, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 200 and 0 <= json.load(r)["p_synthetic"] <= 1
    # Expect: 100-continue: the client waits for "100 Continue" before its body; it comes at once.
    s = socket.create_connection(("127.0.0.1", slow_server), timeout=5)
    s.sendall(
        f"POST /api/detect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
    )
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(body)
    reply = b""
    while b"p_synthetic" not in reply:
        chunk = s.recv(65536)
        assert chunk, reply
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.count(b"100 Continue") == 0
    assert time.monotonic() - t0 < 5
    s.close()
