"""The data audit: exact and near twins on images the tests draw, where each pair lies, label
conflicts, corrupt files, `dedupe` in the experiments, the cache, and `synthgap audit` itself."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from conftest import synthgap as run_synthgap
from PIL import Image, PngImagePlugin

from synthgap.audit import AuditPart, AuditSettings, audit, hamming_pairs, load_parts, phashes
from synthgap.data import load_spec
from synthgap.experiments.config import TransferConfig

CLASSES = ["bird", "cat"]


def photo(seed: int, size: int = 256) -> Image.Image:
    """A photo-like picture: 1/f noise per channel (the spectrum of natural images), distinct per seed."""
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    amp = 1 / np.maximum(f, 1 / size)
    chans = []
    for _ in range(3):
        x = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((size, size)))))
        chans.append((x - x.mean()) / x.std())
    x = np.stack(chans, -1) * 45 + rng.integers(60, 200, 3)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def shifted(im: Image.Image, k: int) -> Image.Image:
    a = np.asarray(im)
    return Image.fromarray(np.pad(a, ((k, 0), (k, 0), (0, 0)), mode="edge")[: a.shape[0], : a.shape[1]])


def write_set(root, images: dict[str, dict[str, list[tuple[str, Image.Image]]]]):
    """images[split][class] = [(file name, image)]: the file's extension picks its format."""
    for split, by_class in images.items():
        for c, files in by_class.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for name, im in files:
                im.save(root / split / c / name)
    return root


def pairs_of(result) -> set[tuple[str, str, str, str]]:
    """{(path a, path b, kind, match)} with the two paths' file names, a < b."""
    out = set()
    for k, kind in enumerate(result.kinds()):
        a = result.path(int(result.a_part[k]), int(result.a_index[k])).split("/", -1)
        b = result.path(int(result.b_part[k]), int(result.b_index[k])).split("/", -1)
        x, y = sorted(("/".join(a[-3:]), "/".join(b[-3:])))
        out.add((x, y, kind, "exact" if result.exact[k] else "near"))
    return out


def distinct(n: int, first_seed: int, size: int = 64) -> list[tuple[str, Image.Image]]:
    return [(f"d{first_seed + i}.png", photo(first_seed + i, size)) for i in range(n)]


def test_exact_twins_across_a_jpeg_png_reencode_and_a_metadata_change(tmp_path):
    pixels = jpeg(photo(1, 64), 90)
    root = write_set(
        tmp_path / "set",
        {
            "train": {"bird": [("a.png", pixels)] + distinct(3, 10), "cat": distinct(3, 20)},
            "test": {"bird": distinct(2, 30), "cat": distinct(2, 40)},
        },
    )
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a prompt, Steps: 20")
    pixels.save(root / "test" / "bird" / "a.png", pnginfo=meta)  # the same pixels, other bytes (a text chunk)
    encoded = io.BytesIO()
    photo(2, 64).save(encoded, "JPEG", quality=80)
    (root / "test" / "cat" / "c.jpg").write_bytes(encoded.getvalue())
    Image.open(io.BytesIO(encoded.getvalue())).save(root / "train" / "cat" / "c.png")  # the JPEG's pixels as a PNG
    assert (root / "test" / "bird" / "a.png").read_bytes() != (root / "train" / "bird" / "a.png").read_bytes()
    result = audit(load_parts(str(root), classes=CLASSES, size=32))
    assert pairs_of(result) == {
        ("test/bird/a.png", "train/bird/a.png", "train_test", "exact"),
        ("test/cat/c.jpg", "train/cat/c.png", "train_test", "exact"),
    }
    summary = result.summary()
    assert summary["test_images_with_training_twin"] == {f"{root}[test]": 2}
    assert summary["counts"] == {"exact": {"train_test": 2}, "near": {}} and summary["label_conflicts"] == 0


def test_recompressed_and_shifted_copies_are_near_twins_and_different_pictures_are_not(tmp_path):
    base = photo(7)  # 256 x 256, decoded to 32 x 32 as the experiments do
    root = write_set(
        tmp_path / "set",
        {
            "train": {"bird": [("orig.png", base)] + distinct(4, 50, 256), "cat": distinct(4, 60, 256)},
            "test": {
                "bird": [("q60.jpg", jpeg(base, 60)), ("shift2.png", shifted(base, 2))] + distinct(3, 70, 256),
                "cat": distinct(3, 80, 256),
            },
        },
    )
    result = audit(load_parts(str(root), classes=CLASSES, size=32))
    found = pairs_of(result)
    assert ("test/bird/q60.jpg", "train/bird/orig.png", "train_test", "near") in found
    assert ("test/bird/shift2.png", "train/bird/orig.png", "train_test", "near") in found
    assert ("test/bird/q60.jpg", "test/bird/shift2.png", "within_test", "near") in found
    assert len(found) == 3  # 14 other pictures, none paired
    assert result.correlation.min() >= AuditSettings().min_correlation


def load_part(images: torch.Tensor, labels: list[str]):
    from synthgap.data import ImageSet

    classes = sorted(set(labels))
    return ImageSet(images, torch.tensor([classes.index(c) for c in labels]), classes, "drawn")


def test_two_flat_images_of_different_colours_share_a_hash_but_are_not_confirmed():
    flat = torch.stack(
        [
            torch.tensor(c, dtype=torch.uint8)[:, None, None].expand(3, 32, 32).clone()
            for c in ((220, 30, 30), (40, 60, 220))
        ]
    )
    assert phashes(flat)[0] == phashes(flat)[1]  # a perceptual hash cannot tell them apart...
    result = audit([AuditPart("x", "train", "real", load_part(flat, ["bird", "bird"]))], use_cache=False)
    assert result.candidates == 1 and len(result) == 0  # ...the confirmation does


def test_hamming_pairs_in_small_chunks_match_the_brute_force():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 300, dtype=np.uint64)
    h[50] = h[10] ^ np.uint64(0b1011)  # 3 bits from 10
    h[200] = h[10]
    other = np.r_[h[:5] ^ np.uint64(1 << 40), rng.integers(0, 2**63, 40, dtype=np.uint64)]
    brute_within = {
        (i, j, int(np.bitwise_count(h[i] ^ h[j])))
        for i in range(300)
        for j in range(i + 1, 300)
        if np.bitwise_count(h[i] ^ h[j]) <= 12
    }
    brute_across = {
        (i, j, int(np.bitwise_count(h[i] ^ other[j])))
        for i in range(300)
        for j in range(45)
        if np.bitwise_count(h[i] ^ other[j]) <= 12
    }
    for chunk in (7, 1000, 1 << 24):  # a row at a time ... everything at once
        assert set(map(tuple, hamming_pairs(h, 12, chunk_elements=chunk).tolist())) == brute_within
        assert set(map(tuple, hamming_pairs(h, 12, other, chunk_elements=chunk).tolist())) == brute_across
    assert {(10, 50, 3), (10, 200, 0), (50, 200, 3)} <= brute_within and len(brute_across) >= 5


def test_a_twin_with_another_label_is_a_label_conflict(tmp_path):
    pic = photo(5, 64)
    root = write_set(
        tmp_path / "set",
        {
            "train": {"bird": [("x.png", pic)] + distinct(2, 90), "cat": distinct(2, 95)},
            "test": {"bird": distinct(2, 100), "cat": [("x.png", pic)] + distinct(1, 105)},
        },
    )
    result = audit(load_parts(str(root), classes=CLASSES, size=32))
    assert pairs_of(result) == {("test/cat/x.png", "train/bird/x.png", "train_test", "exact")}
    assert result.summary()["label_conflicts"] == 1
    result.write(tmp_path / "out")
    pair = json.loads((tmp_path / "out" / "audit.json").read_text())["pair_list"][0]
    assert pair["same_label"] is False and {pair["a"]["label"], pair["b"]["label"]} == {"bird", "cat"}
    assert "labels differ" in (tmp_path / "out" / "audit.html").read_text()


def test_a_corrupt_file_is_skipped_with_its_reason(tmp_path, caplog):
    root = write_set(
        tmp_path / "set",
        {
            "train": {"bird": distinct(3, 110), "cat": distinct(3, 115)},
            "test": {"bird": distinct(2, 120), "cat": distinct(2, 125)},
        },
    )
    good = (root / "train" / "bird" / "d110.png").read_bytes()
    (root / "train" / "bird" / "broken.png").write_bytes(good[: len(good) // 2])
    result = audit(load_parts(str(root), classes=CLASSES, size=32))
    assert result.summary()["images"] == 10
    result.write(tmp_path / "out")
    skipped = json.loads((tmp_path / "out" / "audit.json").read_text())["skipped_files"][f"{root}[train]"]
    assert [s["path"].split("/")[-1] for s in skipped] == ["broken.png"] and "truncated" in skipped[0]["reason"]


@pytest.fixture
def leaky(tmp_path):
    """A real set whose test split holds an exact and a near copy of training images, and whose
    training split holds one image twice; a synthetic set without twins."""
    a, b, c = photo(200, 64), photo(201, 64), photo(202, 64)
    real = write_set(
        tmp_path / "real",
        {
            "train": {
                "bird": [("a.png", a), ("b.png", b), ("b-again.png", b)] + distinct(3, 210),
                "cat": [("c.png", c)] + distinct(4, 220),
            },
            "test": {"bird": [("a.png", a)] + distinct(3, 230), "cat": [("c.jpg", jpeg(c, 60))] + distinct(3, 240)},
        },
    )
    synth = write_set(
        tmp_path / "synth",
        {
            "train": {"bird": distinct(6, 250), "cat": distinct(6, 260)},
            "test": {"bird": distinct(4, 270), "cat": distinct(4, 280)},
        },
    )
    return str(real), str(synth)


def test_dedupe_drop_removes_test_twins_and_second_copies_and_says_so(leaky, caplog):
    from synthgap.experiments.transfer import load_transfer_data

    real, synth = leaky
    with caplog.at_level(logging.WARNING, logger="synthgap"):
        data, result = load_transfer_data(real, synth, TransferConfig(classes=CLASSES, dedupe="drop"), progress=False)
    assert (len(data["real"]["train"]), len(data["real"]["test"])) == (11 - 1, 8 - 2)
    assert (len(data["synthetic"]["train"]), len(data["synthetic"]["test"])) == (12, 8)
    assert not {"a.png", "c.jpg"} & {f.split("/")[-1] for f in data["real"]["test"].files}
    assert len({"b.png", "b-again.png"} & {f.split("/")[-1] for f in data["real"]["train"].files}) == 1
    assert result.removed == {
        f"{real}[train]": {"removed": 1, "kept": 10, "why": "a second copy inside the split"},
        f"{real}[test]": {"removed": 2, "kept": 6, "why": "a twin in a training split"},
    }
    assert "2 of 8 in" in caplog.text and "dropped" in caplog.text
    kept, _ = load_transfer_data(real, synth, TransferConfig(classes=CLASSES, dedupe="warn"), progress=False)
    assert len(kept["real"]["test"]) == 8 and len(kept["real"]["train"]) == 11
    off, none = load_transfer_data(real, synth, TransferConfig(classes=CLASSES, dedupe="off"), progress=False)
    assert none is None and len(off["real"]["test"]) == 8


def test_detector_data_is_deduplicated_before_the_caps_and_the_validation_split(leaky):
    from synthgap.detect.data import load_detector_data

    real, synth = leaky
    data = load_detector_data(real=real, synthetic=synth, classes=CLASSES, size=32, val_fraction=0.2, progress=False)
    assert len(data.test) == 6 + 8 and len(data.train) + len(data.val) == 10 + 12
    assert data.audit.summary()["test_images_with_training_twin"] == {"real[test]": 2, "synth[test]": 0}  # by source
    assert data.sources["real"]["real"]["test"] == 6 and data.sources["synthetic"]["synth"]["test"] == 8


TINY = {
    "classes": CLASSES,
    "image_size": 16,
    "seeds": [0],
    "fractions": [0.0, 1.0],
    "extra_synthetic": [],
    "train": {"widths": [8, 16, 16], "epochs": 1, "batch_size": 8},
}


def test_a_study_reports_its_audit_and_a_resumed_study_reads_it_from_the_cache(leaky, tmp_path, monkeypatch):
    from synthgap.config import from_dict
    from synthgap.experiments import run_transfer

    real, synth = leaky
    cfg = from_dict(TransferConfig, TINY)
    run_transfer(real, synth, tmp_path / "study", cfg, progress=False)
    env = json.loads((tmp_path / "study" / "environment.json").read_text())
    assert env["audit"]["dedupe"] == "drop" and env["audit"]["removed"][f"{real}[test]"]["removed"] == 2
    assert not env["audit"]["from_cache"] and env["data"]["real_test"]["n"] == 6
    page = (tmp_path / "study" / "report.html").read_text()
    assert "Data audit" in page and "2 of 8 test images" in page and 'href="audit/audit.html"' in page
    assert "removed 2" in (tmp_path / "study" / "summary.md").read_text()

    def no_second_audit(*a, **k):
        raise AssertionError("the audit ran again instead of coming from the cache")

    monkeypatch.setattr("synthgap.audit.result.find_twins", no_second_audit)
    run_transfer(real, synth, tmp_path / "study", cfg, progress=False)  # resumes: every run done, audit cached
    assert json.loads((tmp_path / "study" / "environment.json").read_text())["audit"]["from_cache"] is True


def synthgap(capsys, *args) -> tuple[int, str, str]:
    """The console entry point, in-process (conftest.synthgap) as (exit status, stdout, stderr)."""
    proc = run_synthgap(*args, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_audits_sets_and_writes_the_report(leaky, tmp_path, capsys):
    real, synth = leaky
    code, out, err = synthgap(
        capsys, "audit", real, "--synthetic", synth, "--classes", "bird,cat", "--out", str(tmp_path / "a")
    )
    assert code == 0, err
    assert f"2 of 8 test images of {real}[test]" in out
    listed = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert listed["pairs"] == {"exact": 2, "near": 1} and listed["pair_list"][0]["leak"] is True
    assert {p["domain"] for p in listed["parts"]} == {"real", "synthetic"}
    assert (tmp_path / "a" / "audit.html").read_text().count("data:image/png;base64") >= 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["audit"], "at least one data set"),
        (["audit", "no/such/folder"], "no/such/folder: no such file or folder"),
        (["audit", "{real}", "--radius", "40"], "--radius"),
    ],
)
def test_cli_mistakes_are_one_line(leaky, capsys, args, message):
    code, out, err = synthgap(capsys, *[a.format(real=leaky[0]) for a in args])
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.shared
def test_jpeg_copies_of_cifar10_thumbnails_are_found_and_its_test_split_has_training_twins():
    """On real 32 x 32 photos: JPEG q60 copies are found, and so are CIFAR-10's own test images with twins
    in its training split (ciFAIR, Barz & Denzler 2020, reports ~3% for all ten classes)."""
    import os
    from pathlib import Path

    root = Path(os.environ.get("SYNTHGAP_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not (root / "cifar10-jpeg").is_dir():
        pytest.skip("needs ../shared/data")
    test = load_spec("cifar10", "test", ["frog", "horse"], 32, root)
    originals = test.subset(range(300))
    copies = load_part(
        torch.stack(
            [
                torch.from_numpy(np.array(jpeg(Image.fromarray(x.permute(1, 2, 0).numpy()), 60))).permute(2, 0, 1)
                for x in originals.images
            ]
        ),
        ["frog"] * 300,
    )
    result = audit(
        [AuditPart("a", "train", "real", originals), AuditPart("b", "test", "real", copies)], use_cache=False
    )
    assert result.summary()["test_images_with_training_twin"]["b[test]"] >= 297  # 99% of the copies
    train = load_spec("cifar10", "train", ["frog", "horse"], 32, root)
    result = audit([AuditPart("cifar10", "train", "real", train), AuditPart("cifar10", "test", "real", test)])
    assert 5 <= result.summary()["test_images_with_training_twin"]["cifar10[test]"] <= 200


def test_synthgap_train_audits_its_data_first(leaky, tmp_path, capsys):
    real, _ = leaky
    out = tmp_path / "clf"
    code, stdout, err = synthgap(
        capsys,
        "train",
        "--data",
        real,
        "--classes",
        "bird,cat",
        "--size",
        "16",
        "--out",
        str(out),
        "--set",
        "epochs=1",
        "--set",
        "widths=[8,16,16]",
        "--set",
        "batch_size=4",
    )
    assert code == 0, err
    env = json.loads((out / "environment.json").read_text())
    assert env["audit"]["removed"][f"{real}[test]"]["removed"] == 2 and env["data"]["test"]["n"] == 6
    assert "test accuracy" in stdout and (out / "audit" / "audit.html").is_file()


def test_load_parts_takes_every_kind_of_spec(tmp_path):
    """A CIFAKE-style REAL/FAKE root gives one set per domain; a manifest its own source; a generated folder is synthetic."""
    root = tmp_path / "cifake"
    for k, split in enumerate(("train", "test")):
        write_set(root / split, {"REAL": {"x": distinct(3, 300 + 10 * k)}, "FAKE": {"x": distinct(3, 400 + 10 * k)}})
    parts = load_parts(str(root), classes=CLASSES, size=32)
    assert [(p.name.split("/")[-1], p.domain, len(p.data)) for p in parts] == [
        ("REAL[train]", "real", 3),
        ("REAL[test]", "real", 3),
        ("FAKE[train]", "synthetic", 3),
        ("FAKE[test]", "synthetic", 3),
    ]
    manifest = tmp_path / "set.jsonl"
    files = write_set(tmp_path / "m", {"all": {"bird": distinct(4, 500), "cat": distinct(4, 510)}})
    manifest.write_text(
        "".join(
            json.dumps(
                {"path": str(p), "label": p.parent.name, "source": "synthetic", "split": "train" if i % 2 else "test"}
            )
            + "\n"
            for i, p in enumerate(sorted((files / "all").rglob("*.png")))
        )
    )
    assert {p.domain for p in load_parts(str(manifest), classes=CLASSES, size=32)} == {"synthetic"}
    generated = write_set(tmp_path / "gen", {"": {"bird": distinct(5, 600), "cat": distinct(5, 610)}})
    (generated / "manifest.jsonl").write_text("")
    parts = load_parts(str(generated), classes=CLASSES, size=32)
    assert {p.domain for p in parts} == {"synthetic"} and sum(len(p.data) for p in parts) == 10
