"""The detector at photo scale, on this machine's CPU: EfficientNet-Lite0 reading 224 x 224 windows of
512 x 384 photos (`input: crop`) against the same detector on the photos resized to 224 (`input: resize`).

The photos are the tests' drawn ones (tests/conftest.draw_photo: smooth random content with pixel noise;
the synthetic side carries a +-6 checkerboard of period 2 px, a generator-like trace that resizing averages
away), PNG on both sides, half real and half synthetic, a fifth held out as test. Lite0 with the default
config: stage 1 on the cached features of every window, stage 2 fine-tunes the top two blocks on random
windows read through DataLoader workers (in_memory_mb 0, so both set sizes take that path).

Prints, per set size: training images/s of each stage, wall time, peak RSS of the process and its workers
(PSS of the process and its workers; target: <= 3 GB, the same for both sizes); test accuracy and AUC of crop against resize; the latency of
`synthgap detect` on one 3000 x 2000 JPEG (decode + 9 windows + their 27 perturbed copies + model; aim
<= 1.5 s), in-process and as the command. Asserts nothing.

    .venv/bin/python benchmarks/detector_photo.py                 # ~50 min on 2 cores
    .venv/bin/python benchmarks/detector_photo.py --sizes 1000    # one size only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB: the sum of their PSS (from /proc), which
    splits the pages forked workers share with their parent between them instead of counting them twice."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class PeakRSS:
    """Samples tree_rss_mb of this process twice a second while it runs."""

    def __enter__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            self._stop.wait(0.5)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_photos(root: Path, n: int) -> tuple[Path, Path]:
    from conftest import make_photo_folder

    real, fake = root / f"n{n}" / "real", root / f"n{n}" / "fake"
    for folder, planted, seed in ((real, False, 1), (fake, True, 2)):
        if not (folder.is_dir() and len(list(folder.glob("*.png"))) == n // 2):
            t = time.perf_counter()
            make_photo_folder(folder, n // 2, planted=planted, seed=seed)
            print(f"drew {n // 2} photos into {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    return real, fake


def train(real: Path, fake: Path, mode: str, out: Path) -> dict:
    from synthgap.config import from_dict
    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.data import assemble, load_sources
    from synthgap.detect.train import run_detector

    over = (
        {"input": mode, "in_memory_mb": 0}
        if mode == "crop"
        else {"input": "resize", "image_size": 224, "input_size": 224}
    )
    cfg = from_dict(DetectorConfig, over)
    if (out / "detector.json").exists():
        return json.loads((out / "detector.json").read_text()) | {"peak_rss_mb": None, "wall_seconds": None}
    with PeakRSS() as rss:
        t = time.perf_counter()
        loaded = load_sources(str(real), str(fake), classes=cfg.classes, size=cfg.image_size, dedupe="drop")
        data = assemble(loaded, val_fraction=cfg.val_fraction, seed=cfg.seed)
        meta = run_detector(data, cfg, out)
        wall = time.perf_counter() - t
    return meta | {"peak_rss_mb": rss.peak, "wall_seconds": wall}


def report(name: str, meta: dict, out: Path) -> None:
    m = json.loads((out / "metrics.json").read_text())
    stages = ", ".join(
        f"{k} {v['images_per_second']:.0f} img/s"
        + (f" (features {v['feature_seconds']:.0f} s)" if "feature_seconds" in v else "")
        for k, v in m["history"].items()
    )
    rss = (
        f"peak memory {meta['peak_rss_mb']:.0f} MB (PSS of the process and its workers)"
        if meta.get("peak_rss_mb")
        else "peak RSS: (read back)"
    )
    wall = f"{meta['wall_seconds'] / 60:.1f} min" if meta.get("wall_seconds") else "-"
    print(
        f"{name}: test accuracy {100 * m['test']['accuracy']:.1f}%, AUC {100 * m['test']['auc']:.1f}% "
        f"(n={m['test']['n']}); {stages}; wall {wall}; {rss}; {meta['preprocessing']['input_why']}",
        flush=True,
    )


def latency(bundle: Path, root: Path, size: tuple[int, int] = (3000, 2000), aim: float = 1.5) -> None:
    """The median time of checking one drawn JPEG of `size` through the bundle (in-process), and of the whole
    `synthgap detect` command on it."""
    import numpy as np
    from conftest import draw_photo

    from synthgap.detect.model import load_bundle

    w, h = size
    photo = root / f"photo-{w}x{h}.jpg"
    if not photo.exists():
        draw_photo(np.random.default_rng(5), size=size).save(photo, quality=90)
    b = load_bundle(bundle)
    b.assess_files([str(photo)])  # warm-up
    times = []
    for _ in range(5):
        t = time.perf_counter()
        rec = b.assess_files([str(photo)])[0]
        times.append(time.perf_counter() - t)
    print(
        f"{w}x{h} JPEG through the bundle: median {np.median(times):.2f} s (min {min(times):.2f}) for "
        f"{rec['views']['n']} windows + {3 * rec['views']['n']} perturbed (aim <= {aim:g} s); verdict {rec['verdict']}"
    )
    t = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "synthgap"), "detect", str(photo), "--model", str(bundle)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(
        f"`synthgap detect` on it, the whole command (Python start, imports, bundle load): "
        f"{time.perf_counter() - t:.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,4000", help="photo-set sizes (half real, half synthetic)")
    ap.add_argument("--out", default="runs/bench-photo")
    ap.add_argument("--resize", default="1000", help="sizes at which the resize detector is trained too ('' none)")
    args = ap.parse_args()
    out = Path(args.out)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in sizes:
        real, fake = make_photos(out / "photos", n)
        modes = ["crop"] + (["resize"] if str(n) in args.resize.split(",") else [])
        for mode in modes:
            folder = out / f"lite0-{mode}-n{n}"
            meta = train(real, fake, mode, folder)
            report(f"n={n} {mode}", meta, folder)
    latency(out / f"lite0-crop-n{sizes[-1]}", out)


if __name__ == "__main__":
    main()
