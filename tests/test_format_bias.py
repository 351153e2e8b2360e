"""Format-bias audit: planted metadata shortcuts are caught, identical encodings are not flagged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthgap import SynthgapError
from synthgap.detect.audit import FEATURES, audit_files, audit_format_bias, file_metadata, metadata_of_bytes

N = 40


def _noise(rng: np.random.Generator, size: int = 32) -> Image.Image:
    # A smooth gradient plus noise: compresses like a photo-ish image, not like pure noise or flat colour.
    ramp = np.linspace(0, 160, size)[None, :, None] + np.linspace(0, 60, size)[:, None, None]
    return Image.fromarray(np.clip(ramp + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8))


def _write(folder: Path, images: list[Image.Image], fmt: str, **kw) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"{i:03d}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        im.save(p, fmt, **kw)
        paths.append(str(p))
    return paths


def test_format_shortcut_is_caught(tmp_path):
    rng = np.random.default_rng(0)
    real = _write(tmp_path / "real", [_noise(rng) for _ in range(N)], "JPEG", quality=75)
    synth = _write(tmp_path / "synth", [_noise(rng) for _ in range(N)], "PNG")
    out = audit_files(real, synth)
    json.dumps(out)  # the CLI writes it as JSON
    assert out["biased"] is True
    assert out["balanced_accuracy"] > 0.95
    assert {"format", "jpeg_quality"} <= set(out["leaking_features"])
    assert not {"width", "height", "mode"} & set(out["leaking_features"])
    accs = [out["per_feature"][f] for f in out["leaking_features"]]
    assert accs == sorted(accs, reverse=True)
    assert out["verdict"].startswith("WARNING") and "format" in out["verdict"]
    assert out["real"]["formats"] == {"JPEG": N} and out["synthetic"]["formats"] == {"PNG": N}
    assert out["real"]["jpeg_quality_median"] == 75 and out["synthetic"]["jpeg_quality_median"] is None


def test_identical_encoding_is_not_flagged():
    # The very same pictures on both sides: metadata carries no signal by construction, so the
    # outcome does not hinge on a lucky draw (with independent draws of 40 a side, chance alone
    # exceeds 0.55 about one time in five).
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(N):
        buf = io.BytesIO()
        _noise(rng).save(buf, "JPEG", quality=75)
        rows.append(metadata_of_bytes(buf.getvalue()))
    out = audit_format_bias(rows, [dict(r) for r in rows])
    assert out["biased"] is False
    assert out["leaking_features"] == []
    assert out["verdict"].startswith("OK")
    for f in ("format", "width", "height", "mode", "jpeg_quality"):
        assert out["per_feature"][f] == 0.5  # a constant feature cannot beat chance


def test_size_shortcut_is_caught(tmp_path):
    rng = np.random.default_rng(2)
    real = _write(tmp_path / "real", [_noise(rng, 32) for _ in range(N)], "PNG")
    synth = _write(tmp_path / "synth", [_noise(rng, 64) for _ in range(N)], "PNG")
    out = audit_files(real, synth, max_files=25)
    assert out["n_real"] == out["n_synthetic"] == 25
    assert out["biased"] is True
    assert {"width", "height"} <= set(out["leaking_features"])
    assert "format" not in out["leaking_features"] and "jpeg_quality" not in out["leaking_features"]
    assert out["real"]["top_sizes"] == {"32x32": 25} and out["synthetic"]["top_sizes"] == {"64x64": 25}


@pytest.mark.parametrize("quality", [20, 50, 75, 95])
def test_jpeg_quality_estimate(tmp_path, quality):
    path = tmp_path / "x.jpg"
    _noise(np.random.default_rng(quality)).save(path, "JPEG", quality=quality)
    # Exact, not +-2: Pillow scales the IJG table with libjpeg's own formula, and a table compared in
    # the wrong coefficient order still lands within +-2 of these qualities.
    assert file_metadata(path)["jpeg_quality"] == quality


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_bytes_match_file(tmp_path, fmt):
    (path,) = _write(tmp_path, [_noise(np.random.default_rng(3))], fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    meta = file_metadata(path)
    assert meta == metadata_of_bytes(Path(path).read_bytes())
    assert set(meta) == set(FEATURES)
    assert meta["format"] == fmt and (meta["jpeg_quality"] > 0) == (fmt == "JPEG")


@pytest.mark.parametrize("content", [b"definitely not an image", None])
def test_unreadable_file_names_it(tmp_path, content):
    path = tmp_path / "broken_0042.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SynthgapError, match="broken_0042.png"):
        file_metadata(path)


def test_too_few_files(tmp_path):
    rows = [metadata_of_bytes(_encode_png(np.random.default_rng(i))) for i in range(4)]
    with pytest.raises(SynthgapError, match="at least 2"):
        audit_format_bias(rows[:1], rows[1:])
    out = audit_format_bias(rows[:2], rows[2:], folds=5)  # folds shrink to what 2 per side allows
    assert out["folds"] == 2 and out["n_real"] == 2


def _encode_png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    _noise(rng).save(buf, "PNG")
    return buf.getvalue()


def test_file_size_alone_is_a_note_not_a_warning(tmp_path):
    # Same format, size and quality; the synthetic pictures are smoother, so their files are smaller.
    rng = np.random.default_rng(4)
    real = _write(tmp_path / "real", [_noise(rng) for _ in range(N)], "JPEG", quality=75)
    smooth = [Image.fromarray(np.full((32, 32, 3), 100 + i, np.uint8)) for i in range(N)]
    synth = _write(tmp_path / "synth", smooth, "JPEG", quality=75)
    out = audit_files(real, synth)
    assert out["leaking_features"] == ["file_bytes"]
    assert out["biased"] is False and out["verdict"].startswith("NOTE")
