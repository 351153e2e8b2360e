"""Load and abuse test of `synthgap serve` on loopback. Prints figures, asserts nothing.

    .venv/bin/python benchmarks/serve_load.py                       # throughput: /api/detect, 16 clients, 30 s
    .venv/bin/python benchmarks/serve_load.py --scenario all        # photos, memory, slow, fairness (~5 min)
    .venv/bin/python benchmarks/serve_load.py --scenario slow --proxy deploy/nginx.conf   # through nginx

Scenarios (a server started for each, stopped at its end; `--run DIR` serves a pipeline folder instead of
the benchmark's own untrained EfficientNet-Lite0 detector, as the hostile-traffic probe of issue 29 did):
- throughput: /api/detect with one CIFAR-sized PNG, N clients, against the raw model's images/s in one
  process (target >= 0.8). The raw figure is measured first, alone, at batch size = clients.
- photos: 64 clients posting real photos ($SYNTHGAP_DATA/photos, else drawn photo-sized JPEGs) for
  --seconds: requests/s, latency, errors.
- memory: 8 and then 32 concurrent just-under-limit images (an all-black 6300x6300 PNG, 154 KB that
  decodes to 40 megapixels): the server's memory (RSS of its process tree) at idle, its peak above idle,
  every answer's status (200, or 503 with Retry-After), /healthz answered throughout, and idle memory a
  few seconds after the burst against the start (target: peak <= 4 GB above idle, after <= 1.5x start).
- slow: 200 sockets trickling a byte every 2 s into their headers and bodies for --slow-seconds while
  /healthz is asked every 0.2 s: the share answered within 2 s (target 100%). `--proxy NGINX_CONF` puts
  nginx (as compose.yaml does) in front, with the conf's upstream pointed at this server.
- fairness: 12 clients asking /api/generate (synthgap-tiny) at once, twice: each accepted request's
  wait, the Retry-After of those turned away with 429, and p95 wait against the Retry-After promised.
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
    serve_args: list[str], port: int, workers: int, threads: int, log: Path, env_extra: dict | None = None
) -> subprocess.Popen:
    """`synthgap serve SERVE_ARGS` on loopback (its settings from the environment cleared, then env_extra)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGAP_SERVE_")}
    env["SYNTHGAP_SERVE_THREADS"] = str(threads)
    env.update({k: str(v) for k, v in (env_extra or {}).items() if v is not None})
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "synthgap.cli", "serve", *serve_args]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
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
                time.sleep(1.0)  # every worker up, not only the first
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


# ------------------------------------------------------------------ the abuse scenarios


def server_rss(proc: subprocess.Popen) -> float:
    """RSS of the server's process tree (arbiter and workers), in MB."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def multipart(data: bytes, filename: str, boundary: str = "synthgap-bench") -> tuple[bytes, dict]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post(port: int, path: str, body: bytes, headers: dict, timeout: float = 120) -> tuple[int, dict, bytes, float]:
    """(status, headers, body, seconds) of one POST on a fresh connection; status 0 if the connection failed."""
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", path, body, headers)
        r = conn.getresponse()
        out = r.read()
        conn.close()
        return r.status, dict(r.getheaders()), out, time.perf_counter() - t0
    except (OSError, http.client.HTTPException):
        return 0, {}, b"", time.perf_counter() - t0


class HealthProbe(threading.Thread):
    """Asks /healthz every `every` seconds until stopped: how many were answered 200 within 2 s."""

    def __init__(self, port: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.port, self.every, self.asked, self.ok, self.slowest = port, every, 0, 0, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            t0 = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
                conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
            seconds = time.perf_counter() - t0
            self.asked += 1
            self.ok += ok and seconds <= 2
            self.slowest = max(self.slowest, seconds)
            self.stopped.wait(max(0.0, self.every - seconds))

    def stop(self) -> str:
        self.stopped.set()
        self.join(5)
        share = 100 * self.ok / max(1, self.asked)
        return f"/healthz {self.ok}/{self.asked} within 2 s ({share:.0f}%), slowest {self.slowest:.2f} s"


def photo_files(n: int, tmp: Path) -> list[bytes]:
    """Real photos and AI images from $SYNTHGAP_DATA/photos (every n-th file of a sorted list), else drawn
    photo-sized JPEGs."""
    root = Path(os.environ.get("SYNTHGAP_DATA", "")) / "photos"
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if files:
        return [f.read_bytes() for f in files[:: max(1, len(files) // n)][:n]]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = (rng.random((480, 640, 3)) * 40 + np.linspace(0, 200, 640)[None, :, None]).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def scenario_photos(port: int, clients: int, seconds: float, tmp: Path) -> str:
    bodies = [multipart(data, "photo") for data in photo_files(64, tmp)]
    latencies, statuses = [], []
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def client(k: int) -> None:
        i = k
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < stop_at:
            body, headers = bodies[i % len(bodies)]
            i += clients
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/detect", body, headers)
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                statuses.append(status)
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    counts = {code: statuses.count(code) for code in sorted(set(statuses))}
    ok = counts.get(200, 0)
    return (
        f"photos: {clients} clients, {len(bodies)} photos, {elapsed:.0f} s: {ok / elapsed:.1f} requests/s answered 200, "
        f"p50 {statistics.median(ms):.0f} ms, p99 {ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.0f} ms, statuses {counts}"
    )


def black_png(side: int = 6300) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def burst(port: int, path: str, body: bytes, headers: dict, n: int, spacing: float = 0.0) -> list[tuple]:
    """n POSTs at once (each `spacing` s after the last: a known arrival order); their post() results."""
    results: list[tuple] = []

    def one() -> None:
        results.append(post(port, path, body, headers, timeout=600))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
        time.sleep(spacing)
    for t in threads:
        t.join(900)
    return results


class PeakRSS(threading.Thread):
    """The server's largest RSS while running, sampled every 50 ms."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stopped = proc, server_rss(proc), threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, server_rss(self.proc))
            self.stopped.wait(0.05)

    def stop(self) -> float:
        self.stopped.set()
        self.join(2)
        return self.peak


def scenario_memory(port: int, proc: subprocess.Popen) -> list[str]:
    body, headers = multipart(black_png(), "black.png")
    start = server_rss(proc)
    lines = [f"memory: {len(body) // 1024} KB PNG of 6300x6300 (39.7 megapixels); server idle {start:.0f} MB"]
    for n in (8, 32):
        idle = server_rss(proc)
        sampler, probe = PeakRSS(proc), HealthProbe(port)
        sampler.start()
        probe.start()
        t0 = time.perf_counter()
        results = burst(port, "/api/detect", body, headers, n)
        elapsed = time.perf_counter() - t0
        health = probe.stop()
        time.sleep(3)
        after = server_rss(proc)
        peak = sampler.stop()
        codes: dict = {}
        for status, hdrs, _, _ in results:
            key = f"{status}" + (" with Retry-After" if status == 503 and "Retry-After" in hdrs else "")
            codes[key] = codes.get(key, 0) + 1
        lines.append(
            f"  {n} at once: {elapsed:.1f} s, answers {codes}; peak {peak - idle:+.0f} MB above idle "
            f"({peak:.0f} MB); 3 s after: {after:.0f} MB = {after / start:.2f}x the start; {health}"
        )
    return lines


SLOW_HEADS = (
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    b"POST /api/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n",
)


def scenario_slow(port: int, sockets: int, seconds: float) -> str:
    """`sockets` clients trickling a byte every 2 s, half into their headers, half into their body."""
    import socket as socket_

    held, refused = [], 0
    for k in range(sockets):
        try:
            s = socket_.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(SLOW_HEADS[k % 2])
            held.append(s)
        except OSError:
            refused += 1
    probe = HealthProbe(port)
    probe.start()
    stop_at = time.monotonic() + seconds
    closed_by_server = 0
    while time.monotonic() < stop_at:
        for s in list(held):
            try:
                s.send(b" ")
            except OSError:
                held.remove(s)
                closed_by_server += 1
        time.sleep(2)
    health = probe.stop()
    for s in held:
        s.close()
    return (
        f"slow: {sockets} sockets trickling for {seconds:.0f} s ({refused} refused, {closed_by_server} closed by the "
        f"server): {health}"
    )


def scenario_fairness(port: int, clients: int, rounds: int = 2) -> str:
    body = json.dumps({"class": "cat", "steps": 50}).encode()  # the most a request may ask: jobs of a second or more
    headers = {"Content-Type": "application/json"}
    waits, promised, codes = [], [], {}
    for _ in range(rounds):
        for status, hdrs, _, seconds in burst(port, "/api/generate", body, headers, clients, spacing=0.01):
            codes[status] = codes.get(status, 0) + 1
            if status == 200:
                waits.append(seconds)
            elif "Retry-After" in hdrs:
                promised.append(float(hdrs["Retry-After"]))
    waits.sort()
    p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))] if waits else float("nan")
    return (
        f"fairness: {clients} generation requests at once x {rounds}: statuses {codes}; accepted waited p50 "
        f"{statistics.median(waits) if waits else float('nan'):.1f} s, p95 {p95:.1f} s, max {max(waits, default=0):.1f} s; "
        f"Retry-After given to those turned away: {sorted(promised) or 'none'}"
    )


def run_proxy(conf: Path, upstream_port: int, tmp: Path) -> tuple[subprocess.Popen, int]:
    """nginx with `conf` (deploy/nginx.conf), its upstream pointed at this server, on a free port."""
    import re
    import shutil

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    text = conf.read_text()
    text = re.sub(r"server\s+synthgap:8000", f"server 127.0.0.1:{upstream_port}", text)
    text = re.sub(r"listen\s+8080", f"listen 127.0.0.1:{port}", text)
    root = tmp / "nginx"
    (root / "temp").mkdir(parents=True, exist_ok=True)
    temp = "".join(
        f"    {k}_temp_path {root / 'temp' / k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    (root / "nginx.conf").write_text(f"pid {root / 'nginx.pid'};\nerror_log {root / 'error.log'};\n" + text)
    proc = subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"])
    time.sleep(1)
    return proc, port


def throughput(args) -> None:
    raw_seconds = args.raw_seconds or min(10.0, args.seconds)
    with tempfile.TemporaryDirectory(prefix="synthgap-serve-load-") as tmp:
        bundle = make_bundle(Path(tmp) / "detector")
        raw_batched = raw_images_per_second(bundle, args.clients, raw_seconds)
        raw_single = raw_images_per_second(bundle, 1, raw_seconds)
        port = free_port()
        server = start_server(
            ["--detector", str(bundle)],
            port,
            args.workers,
            max(args.clients, 4),
            Path(tmp) / "server.log",
            {"SYNTHGAP_SERVE_BATCH_WAIT_MS": args.batch_wait_ms},
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


def abuse(args, scenarios: list[str]) -> None:
    """The abuse scenarios, each against a fresh server (its own memory, its own queues)."""
    with tempfile.TemporaryDirectory(prefix="synthgap-serve-abuse-") as tmp_name:
        tmp = Path(tmp_name)
        models = ["--detector", str(make_bundle(tmp / "detector")), "--generator", "synthgap-tiny"]
        serve_args = [args.run] if args.run else models
        print(
            f"server: synthgap serve {args.run or 'the benchmark Lite0 detector + synthgap-tiny'}, {args.workers} "
            f"gunicorn worker(s), 16 threads each; {os.cpu_count()} CPU cores"
        )
        for name in scenarios:
            port = free_port()
            server = start_server(serve_args, port, args.workers, 16, tmp / f"server-{name}.log")
            proxy = None
            try:
                if name == "photos":
                    print(scenario_photos(port, args.photo_clients, args.seconds, tmp))
                elif name == "memory":
                    print("\n".join(scenario_memory(port, server)))
                elif name == "slow":
                    target = port
                    if args.proxy:
                        proxy, target = run_proxy(Path(args.proxy), port, tmp)
                        print(f"  (through nginx: {args.proxy})")
                    print(scenario_slow(target, args.slow_sockets, args.slow_seconds))
                elif name == "fairness":
                    print(scenario_fairness(port, args.generate_clients))
            finally:
                if proxy:
                    proxy.terminate()
                    proxy.wait(10)
                server.terminate()
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--scenario",
        default="throughput",
        help="throughput | photos | memory | slow | fairness | all (the last four), or a comma-separated list",
    )
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the throughput and photos load phases")
    ap.add_argument("--clients", type=int, default=16, help="throughput clients")
    ap.add_argument("--photo-clients", type=int, default=64)
    ap.add_argument("--slow-sockets", type=int, default=200)
    ap.add_argument("--slow-seconds", type=float, default=30.0)
    ap.add_argument("--generate-clients", type=int, default=12)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gunicorn workers [one per core]")
    ap.add_argument("--run", default=None, help="serve this pipeline folder in the abuse scenarios")
    ap.add_argument("--proxy", default=None, help="slow scenario through nginx with this conf (deploy/nginx.conf)")
    ap.add_argument(
        "--raw-seconds", type=float, default=None, help="length of each raw-model measurement [min(10, seconds)]"
    )
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="the server's batch_wait_ms [its default]")
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    args = ap.parse_args()
    names = ["photos", "memory", "slow", "fairness"] if args.scenario == "all" else args.scenario.split(",")
    unknown = set(names) - {"throughput", "photos", "memory", "slow", "fairness"}
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}")
    if "throughput" in names:
        throughput(args)
    if rest := [n for n in names if n != "throughput"]:
        abuse(args, rest)


if __name__ == "__main__":
    main()
