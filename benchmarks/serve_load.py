"""Load test of `synthgap serve`: /api/detect with the EfficientNet-Lite0 detector, N concurrent
clients on loopback for a fixed time, against the raw model's images/s in one process.

    .venv/bin/python benchmarks/serve_load.py                 # 16 clients, 30 s
    .venv/bin/python benchmarks/serve_load.py --seconds 3     # smoke run

Prints requests/s, p50/p99 latency, errors, and requests/s as a fraction of the raw model's
images/s (target >= 0.8). The raw figure is measured first, alone, at batch size = clients (the
largest batch the server can form under this load) with torch's default threads (all cores);
batch 1 is printed too. The server runs one gunicorn worker per core by default (each with one
torch thread): in one process, request handling and the model's OpenMP threads fight over the
same cores and the GIL. The detector is the untrained head on ImageNet EfficientNet-Lite0
(offline weights): speed does not depend on training. Bounded: the load phase stops after
--seconds (and --max-requests), the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_bundle(folder: Path) -> Path:
    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.model import DetectorBundle, build_detector
    from synthgap.detect.train import bundle_meta

    cfg = DetectorConfig()  # efficientnet_lite0, input 64, images decoded at 32
    torch.manual_seed(0)
    return DetectorBundle(build_detector(cfg.backbone, pretrained=True), bundle_meta(cfg, 0.5)).save(folder)


def raw_images_per_second(bundle_dir: Path, batch: int, seconds: float) -> float:
    """The bundle's own predict() on in-memory uint8 images, as fast as it goes in this process."""
    from synthgap.detect.model import load_bundle

    bundle = load_bundle(bundle_dir)
    size = bundle.image_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    for _ in range(3):
        bundle.predict(images)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        bundle.predict(images)
        done += batch
    return done / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    bundle_dir: Path, port: int, workers: int, threads: int, log: Path, batch_wait_ms: float | None
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGAP_SERVE_")}
    env["SYNTHGAP_SERVE_THREADS"] = str(threads)
    if batch_wait_ms is not None:
        env["SYNTHGAP_SERVE_BATCH_WAIT_MS"] = str(batch_wait_ms)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synthgap.cli",
                "serve",
                "--detector",
                str(bundle_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"server did not become healthy in 180 s:\n{log.read_text()[-3000:]}")


def request_body(size: int = 32) -> bytes:
    """One CIFAR-sized PNG as the API's base64 JSON."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return json.dumps({"image": base64.b64encode(buf.getvalue()).decode()}).encode()


def load(port: int, clients: int, seconds: float, max_requests: int) -> tuple[list[float], int, float]:
    """`clients` threads, each on its own keep-alive connection, posting until the time is up."""
    body = request_body()
    headers = {"Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    budget = threading.Semaphore(max_requests)
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        while time.perf_counter() < stop_at[0] and budget.acquire(blocking=False):
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/detect", body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                latencies[k].append(time.perf_counter() - t0)
            else:
                errors[k] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + seconds
    start.wait()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - t_start
    return [x for per in latencies for x in per], sum(errors), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the load phase")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gunicorn workers [one per core]")
    ap.add_argument(
        "--raw-seconds", type=float, default=None, help="length of each raw-model measurement [min(10, seconds)]"
    )
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="the server's batch_wait_ms [its default]")
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    args = ap.parse_args()
    raw_seconds = args.raw_seconds or min(10.0, args.seconds)

    with tempfile.TemporaryDirectory(prefix="synthgap-serve-load-") as tmp:
        bundle = make_bundle(Path(tmp) / "detector")
        raw_batched = raw_images_per_second(bundle, args.clients, raw_seconds)
        raw_single = raw_images_per_second(bundle, 1, raw_seconds)
        port = free_port()
        server = start_server(
            bundle, port, args.workers, max(args.clients, 4), Path(tmp) / "server.log", args.batch_wait_ms
        )
        try:
            warm = load(port, args.clients, min(2.0, args.seconds), args.max_requests)  # first batches, lazy threads
            latencies, errors, elapsed = load(port, args.clients, args.seconds, args.max_requests)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/models")
            batches = json.loads(conn.getresponse().read())["detector"]["recent_batch_sizes"]
        finally:
            server.terminate()
            server.wait(30)

    rps = len(latencies) / elapsed
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"detector: efficientnet_lite0 (input 64, images 32x32), {os.cpu_count()} CPU cores, torch {torch.__version__}"
    )
    print(
        f"raw model, one process:   {raw_batched:8.1f} images/s at batch {args.clients}, "
        f"{raw_single:.1f} images/s at batch 1"
    )
    print(
        f"server ({args.workers} gunicorn worker(s), {args.clients} clients, {elapsed:.1f} s, after "
        f"{len(warm[0])} warm-up requests): {rps:8.1f} requests/s"
    )
    print(
        f"latency: p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms; errors: {errors}; "
        f"recent batch sizes: {batches}"
    )
    print(
        f"requests/s / raw images/s (batch {args.clients}): {rps / raw_batched:.2f} (target >= 0.8); "
        f"/ raw batch 1: {rps / raw_single:.2f}"
    )


if __name__ == "__main__":
    main()
