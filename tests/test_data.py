"""The data layer: image folders, manifests, CIFAR-10 location, decoding of odd files, the decode cache."""

from __future__ import annotations

import json
import logging
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import class_colour, make_image_folder
from PIL import Image

import synthgap.data.images as images_module
from synthgap import ANIMALS, CIFAR10_CLASSES, SynthgapError
from synthgap.data import (
    ImageSet,
    decode_image,
    holdout_split,
    load_cifar10,
    load_class_folders,
    load_manifest,
    load_spec,
    parse_classes,
    prepare_cifar10,
)
from synthgap.data.images import cache_dir
from synthgap.data.sets import CIFAR10_TARBALL, HOLDOUT_FRACTION, find_cifar10

CLASSES = ["bird", "cat", "frog"]


# ---------------------------------------------------------------- helpers and fixtures


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test here may download anything: the CIFAR-10 download always fails as if offline."""
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)


@pytest.fixture
def synthgap_log(caplog, monkeypatch):
    """caplog for the 'synthgap' logger, even if a CLI test earlier turned its propagation off."""
    monkeypatch.setattr(logging.getLogger("synthgap"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="synthgap")
    return caplog


def median_rgb(img: torch.Tensor) -> tuple[int, ...]:
    """Per-channel median of one 3 x H x W image: the class colour for make_image_folder images."""
    return tuple(int(v) for v in img.flatten(1).median(dim=1).values)


def near(rgb, target, tol=30) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(rgb, target))


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)
    return path


def noise_image(size=64, seed=0) -> Image.Image:
    """Incompressible content, so that half a file's bytes cut into the pixel data, not the header."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def image_keys(s: ImageSet) -> set[bytes]:
    """Each image's bytes: make_image_folder images are all distinct (random noise)."""
    keys = {img.numpy().tobytes() for img in s.images}
    assert len(keys) == len(s), "test images are expected to be pairwise distinct"
    return keys


# ---------------------------------------------------------------- image folders with train/ and test/


def test_split_folder_counts_labels_shape_and_domain(tmp_path):
    """load_spec on train/ + test/: per-class counts, labels in the *requested* class order, N x 3 x S x S uint8."""
    root = make_image_folder(tmp_path / "f", CLASSES, 4, size=20)
    (root / "train" / "cat" / "0003.png").unlink()  # unequal counts, to see they are counted, not assumed
    order = ["frog", "bird", "cat"]  # not alphabetical, not the folder order
    train = load_spec(str(root), "train", order, size=12, domain="synthetic")
    test = load_spec(str(root), "test", order, size=12)

    assert train.images.dtype == torch.uint8 and tuple(train.images.shape) == (11, 3, 12, 12)
    assert tuple(test.images.shape) == (12, 3, 12, 12)
    assert train.class_counts() == {"frog": 4, "bird": 4, "cat": 3}
    assert test.class_counts() == {"frog": 4, "bird": 4, "cat": 4}
    assert train.classes == order and train.labels.dtype == torch.long
    assert train.domain == "synthetic" and test.domain == "real"
    assert "train" in train.name and "test" in test.name and train.skipped == []
    # label k must hold the pictures of order[k]: check by the class colour the folder was drawn with
    for img, y in zip(train.images, train.labels):
        assert near(median_rgb(img), class_colour(CLASSES.index(order[int(y)]))), (order[int(y)], median_rgb(img))


def test_requesting_a_class_subset_loads_only_those_classes(tmp_path):
    """Asking for 2 of 3 classes loads exactly those two folders, labelled 0 and 1."""
    root = make_image_folder(tmp_path / "f", CLASSES, 3)
    s = load_spec(str(root), "train", ["frog", "bird"], size=16)
    assert len(s) == 6 and s.classes == ["frog", "bird"]
    assert sorted(s.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    colours = {class_colour(CLASSES.index(c)) for c in ("frog", "bird")}
    assert all(any(near(median_rgb(img), c) for c in colours) for img in s.images)
    assert not any(near(median_rgb(img), class_colour(CLASSES.index("cat"))) for img in s.images)


def test_parse_classes_defaults_all_and_lists():
    """None / 'animals' give the six animals, 'all' the ten CIFAR-10 classes, a comma list is split and stripped."""
    assert parse_classes(None) == list(ANIMALS) == ["bird", "cat", "deer", "dog", "frog", "horse"]
    assert parse_classes("animals") == list(ANIMALS)
    assert parse_classes("all") == list(CIFAR10_CLASSES) and len(parse_classes("ALL")) == 10
    assert parse_classes(" cat , bird ") == ["cat", "bird"]
    assert parse_classes(["dog", "cat"]) == ["dog", "cat"]


@pytest.mark.parametrize("bad", ["cat,cat", ["dog", "dog"], "", " , ", []])
def test_parse_classes_rejects_repeats_and_empty(bad):
    """Repeated or missing class names are a user error, not a silent fix."""
    with pytest.raises(SynthgapError):
        parse_classes(bad)


# ---------------------------------------------------------------- unusable files are skipped, with a reason


def _zero_byte(p: Path) -> Path:
    p = p.with_suffix(".png")
    p.write_bytes(b"")
    return p


def _truncated_png(p: Path) -> Path:
    return truncate(save(noise_image(), p.with_suffix(".png")))


def _truncated_jpeg(p: Path) -> Path:
    return truncate(save(noise_image(), p.with_suffix(".jpg"), "JPEG", quality=95))


def _text_as_jpeg(p: Path) -> Path:
    p = p.with_suffix(".jpg")
    p.write_text("this is not a picture\n" * 20)
    return p


def _thin(w: int, h: int):
    def make(p: Path) -> Path:
        return save(Image.new("RGB", (w, h), (10, 20, 30)), p.with_suffix(".png"))

    return make


BAD_FILES = {
    "zero-byte": (_zero_byte, "empty"),
    "truncated-png": (_truncated_png, "truncated"),
    "truncated-jpeg": (_truncated_jpeg, "truncated"),
    "text-named-jpg": (_text_as_jpeg, "not an image"),
    "1x400": (_thin(1, 400), "dimensions"),
    "400x2": (_thin(400, 2), "dimensions"),
    "aspect-12": (_thin(120, 10), "dimensions"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_skipped_with_reason_and_warning(kind, tmp_path, synthgap_log):
    """A broken file beside good ones is skipped (not fatal), listed in .skipped and logged 'skipped <path>: <reason>'."""
    make_bad, reason_word = BAD_FILES[kind]
    root = make_image_folder(tmp_path / "f", ["cat", "dog"], 2, splits=())
    bad = make_bad(root / "cat" / "zz_bad")
    s = load_class_folders(root, ["cat", "dog"], size=16)

    assert len(s) == 4 and s.class_counts() == {"cat": 2, "dog": 2}
    assert len(s.skipped) == 1
    path, reason = s.skipped[0]
    assert path == str(bad) and reason_word in reason.lower(), reason
    warnings = [r.getMessage() for r in synthgap_log.records if r.levelno == logging.WARNING]
    assert f"skipped {bad}: {reason}" in warnings


def test_decode_image_reports_rather_than_raises(tmp_path):
    """decode_image returns (None, reason) for a bad file, (HWC uint8, None) for a good one."""
    arr, reason = decode_image(_truncated_png(tmp_path / "x"), 8)
    assert arr is None and reason
    arr, reason = decode_image(save(Image.new("RGB", (10, 10), (1, 2, 3)), tmp_path / "ok.png"), 8)
    assert reason is None and arr.shape == (8, 8, 3) and arr.dtype == np.uint8


def test_hidden_and_non_image_extensions_are_ignored(tmp_path):
    """Only image extensions count; dot-files (e.g. macOS ._ files) and .txt are not even tried."""
    root = make_image_folder(tmp_path / "f", ["cat"], 2, splits=())
    (root / "cat" / "notes.txt").write_text("hello")
    (root / "cat" / "._0000.png").write_bytes(b"\x00\x05\x16\x07")
    s = load_class_folders(root, ["cat"], size=16)
    assert len(s) == 2 and s.skipped == []


def _decode_one(tmp_path: Path, im: Image.Image, name: str, fmt: str | None = None, size=None, **kw) -> np.ndarray:
    path = save(im, tmp_path / name, fmt, **kw)
    arr, reason = decode_image(path, size or im.size[0])
    assert reason is None, reason
    return arr


def test_grayscale_becomes_grey_rgb(tmp_path):
    """Mode L: every channel gets the grey value."""
    arr = _decode_one(tmp_path, Image.new("L", (16, 16), 100), "g.png")
    assert arr.shape == (16, 16, 3) and (arr == 100).all()


def test_rgba_is_composited_on_white(tmp_path):
    """RGBA: a fully transparent pixel becomes white (not black), an opaque one keeps its colour."""
    im = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, 8, 16))  # left half: transparent *black*
    arr = _decode_one(tmp_path, im, "a.png")
    assert (arr[:, :8] == 255).all()
    assert (arr[:, 8:] == [255, 0, 0]).all()


def test_half_transparent_pixel_is_blended_with_white(tmp_path):
    """Alpha 128 over white: black becomes mid grey."""
    arr = _decode_one(tmp_path, Image.new("RGBA", (16, 16), (0, 0, 0, 128)), "h.png")
    assert np.all(np.abs(arr.astype(int) - 127) <= 2)


def test_palette_image_keeps_its_colours(tmp_path):
    """Mode P: palette indices are looked up, not used as grey values."""
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 16, 8))  # top half: index 1 = green
    arr = _decode_one(tmp_path, im, "p.png")
    assert (arr[:8] == [0, 255, 0]).all() and (arr[8:] == [0, 0, 255]).all()


def test_palette_transparency_is_composited_on_white(tmp_path):
    """Mode P with a transparent index: those pixels become white."""
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.paste(1, (0, 0, 16, 8))
    im.info["transparency"] = 0
    path = tmp_path / "pt.png"
    im.save(path, transparency=0)
    arr, reason = decode_image(path, 16)
    assert reason is None
    assert (arr[8:] == 255).all() and (arr[:8] == [200, 10, 10]).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    """A CMYK JPEG decodes to the right RGB colour (C=0, M=Y=full -> red)."""
    arr = _decode_one(tmp_path, Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "c.jpg", "JPEG", quality=95)
    assert arr.shape == (16, 16, 3)
    assert near(arr.reshape(-1, 3).mean(0), (255, 0, 0), tol=20), arr.reshape(-1, 3).mean(0)


def test_16bit_grayscale_png_is_rescaled_to_8bit(tmp_path):
    """16-bit grey (mode I;16): 65535 -> 255, 257*k -> k, 0 -> 0; not clipped to white."""
    a = np.zeros((16, 16), dtype=np.uint16)
    a[:, :8] = 65535
    a[:4, 8:] = 257 * 100
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    path = save(im, tmp_path / "i16.png")
    with Image.open(path) as reread:
        assert reread.mode.startswith("I")  # the file really is 16-bit
    arr, reason = decode_image(path, 16)
    assert reason is None
    assert (arr[:, :8] == 255).all()
    assert (arr[:4, 8:] == 100).all()
    assert (arr[4:, 8:] == 0).all()


# ---------------------------------------------------------------- odd files a photo checker meets
# Each kind goes through the one decoder (data.images.decode_native, and upright_rgb for uploads) and must come
# out upright 8-bit RGB at its upright size with its colours.

RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 20), (20, 20, 220), (255, 255, 255)


def _halves(size: tuple[int, int], left, right, mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, size, right)
    im.paste(left, (0, 0, size[0] // 2, size[1]))
    return im


def _mean(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 3).mean(0)


def _odd_files(folder: Path) -> dict:
    """name -> (file, the upright size (w, h) it must decode to, a check of its decoded H x W x 3 pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    # A phone held upright: stored landscape 60x40, left red and right blue, with EXIF orientation 6 (turn 90
    # degrees clockwise to view): upright it is 40x60 with red on top.
    im = _halves((60, 40), RED, BLUE)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(folder / "rotated.jpg", quality=95, exif=exif)
    out["exif-orientation-6"] = (
        folder / "rotated.jpg",
        (40, 60),
        lambda a: near(_mean(a[:25]), RED) and near(_mean(a[-25:]), BLUE),
    )
    # A phone's MPO (multi-picture JPEG, named .jpg): the main photo first, a second picture after it; the
    # orientation is the first frame's.
    main = Image.new("RGB", (48, 32), RED)
    exif = main.getexif()
    exif[0x0112] = 6
    main.save(folder / "phone.jpg", "MPO", save_all=True, append_images=[Image.new("RGB", (48, 32), BLUE)], exif=exif)
    out["mpo"] = (folder / "phone.jpg", (32, 48), lambda a: near(_mean(a), RED, tol=10))
    # 16-bit grey gradient 0..65535 across 64 px: an 8-bit gradient 0..255, not clipped to white.
    Image.fromarray(np.linspace(0, 65535, 64).round().astype(np.uint16)[None].repeat(16, 0)).save(folder / "g16.png")
    out["png-16-bit"] = (
        folder / "g16.png",
        (64, 16),
        lambda a: (
            (a == a[..., :1]).all()
            and (np.diff(a[0, :, 0].astype(int)) >= 0).all()
            and a[0, 0, 0] <= 2
            and a[0, -1, 0] >= 253
            and 120 < a.mean() < 135
        ),
    )
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # C 0, M Y full: red
    out["cmyk-jpeg"] = (folder / "cmyk.jpg", (32, 32), lambda a: near(_mean(a), (255, 0, 0), tol=20))
    Image.new("L", (32, 32), 100).save(folder / "grey.png")
    out["grey"] = (folder / "grey.png", (32, 32), lambda a: (a == 100).all())
    _halves((32, 32), (100, 255), (0, 0), "LA").save(folder / "grey-alpha.png")  # right half: transparent black
    out["grey-alpha"] = (
        folder / "grey-alpha.png",
        (32, 32),
        lambda a: (a[:, :16] == 100).all() and (a[:, 16:] == 255).all(),
    )
    for ext in ("png", "gif"):
        im = _halves((32, 32), 1, 0, "P")
        im.putpalette([0, 0, 0, *GREEN] + [0] * 762)
        im.save(folder / f"palette.{ext}", transparency=0)  # index 0 (the right half) transparent
        out[f"palette-transparent-{ext}"] = (
            folder / f"palette.{ext}",
            (32, 32),
            lambda a: (a[:, :16] == GREEN).all() and (a[:, 16:] == 255).all(),
        )
    return out


ODD_KINDS = ["exif-orientation-6", "mpo", "png-16-bit", "cmyk-jpeg", "grey", "grey-alpha"]
ODD_KINDS += ["palette-transparent-png", "palette-transparent-gif"]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict:
    return _odd_files(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_an_odd_file_decodes_upright_rgb_with_its_colours_for_files_thumbnails_and_uploads(kind, odd_files):
    from synthgap.data.images import MAX_PIXELS, decode_native, resize_square
    from synthgap.serve.inputs import decode_image as decode_upload

    path, size, colours_ok = odd_files[kind]
    if kind == "mpo":
        with Image.open(path) as im:
            assert (im.format, im.n_frames) == ("MPO", 2)  # the file really holds two pictures
    im, reason = decode_native(path)
    assert reason is None, reason
    a = np.asarray(im)
    assert (im.mode, im.size, a.dtype, a.shape) == ("RGB", size, np.uint8, (size[1], size[0], 3))
    assert colours_ok(a), _mean(a)
    thumb, reason = decode_image(path, 16)  # the thumbnail of training and `input: resize`: the same pixels
    assert reason is None and np.array_equal(thumb, np.asarray(resize_square(im, 16)))
    upload, _ = decode_upload(path.read_bytes(), MAX_PIXELS)  # the web app: the same conversion
    assert np.array_equal(np.asarray(upload), a)


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height, with nothing to decode behind it: a decompression bomb's shape."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    "side, reason",
    [
        (9000, "9000x9000 = 81,000,000 pixels, over the limit of 64,000,000"),  # synthgap's own limit
        (10000, "10000x10000 = 100,000,000 pixels, over the limit"),  # where PIL would also warn
        (20000, "decompression bomb: Image size (400000000 pixels) exceeds limit"),  # PIL refuses at the header
    ],
)
def test_a_huge_image_is_refused_from_its_header_with_one_line_and_no_warning(side, reason, tmp_path):
    import warnings

    from synthgap.data.images import decode_native

    path = _png_claiming(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # PIL's DecompressionBombWarning would be recorded here
        im, why = decode_native(path)
    assert im is None and why.startswith(reason) and "\n" not in why
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def _random_detector(mode: str):
    """A randomly initialised detector bundle (never trained, nothing downloaded) with the input chain `mode`."""
    from synthgap.detect.config import DetectorConfig
    from synthgap.detect.crops import InputChain
    from synthgap.detect.model import DetectorBundle, build_detector
    from synthgap.detect.train import bundle_meta

    torch.manual_seed(0)
    if mode == "resize":
        return DetectorBundle(
            build_detector("airnet", pretrained=False).eval(), bundle_meta(DetectorConfig(backbone="airnet"), 0.5)
        )
    chain = InputChain("crop", image_size=32, crop_size=64, crop_grid=2)
    cfg = DetectorConfig(backbone="npr", input="crop", crop_size=64, crop_grid=2, image_size=32)
    model = build_detector("npr", pretrained=False, input_size=64).eval()
    return DetectorBundle(model, bundle_meta(cfg, 0.5, model, (chain, "input: crop")))


@pytest.mark.parametrize("mode", ["resize", "crop"])
def test_a_detector_gives_every_odd_file_a_verdict_and_a_huge_one_a_reason(mode, odd_files, tmp_path):
    from synthgap.detect.domain import VERDICT_OUTSIDE

    bundle = _random_detector(mode)
    huge = _png_claiming(tmp_path / "huge.png", 10000, 10000)
    records = bundle.assess_files([str(odd_files[k][0]) for k in ODD_KINDS] + [str(huge)])
    for kind, rec in zip(ODD_KINDS, records):
        assert "error" not in rec and 0 <= rec["p_synthetic"] <= 1, (kind, rec)
        assert rec["verdict"] in ("real", "synthetic", "unsure", VERDICT_OUTSIDE), (kind, rec)
        assert rec.get("views", {}).get("n", 1) == (4 if mode == "crop" else 1)
    assert records[-1]["verdict"] is None and "over the limit" in records[-1]["error"]


def test_non_square_image_is_centre_cropped_then_resized(tmp_path):
    """40x20 (and 20x40) with a red centre square and blue sides: the crop keeps the centre, so it decodes red."""
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    wide.paste((255, 0, 0), (10, 0, 30, 20))
    arr = _decode_one(tmp_path, wide, "wide.png", size=8)
    assert arr.shape == (8, 8, 3)
    assert near(arr.reshape(-1, 3).mean(0), (255, 0, 0), tol=15)
    tall = wide.transpose(Image.Transpose.ROTATE_90)
    arr = _decode_one(tmp_path, tall, "tall.png", size=12)
    assert arr.shape == (12, 12, 3)
    assert near(arr.reshape(-1, 3).mean(0), (255, 0, 0), tol=15)


def test_resize_changes_size_but_keeps_colour(tmp_path):
    """Upscaling and downscaling produce size x size with the same flat colour."""
    im = Image.new("RGB", (24, 24), (10, 120, 240))
    for size in (8, 48):
        arr = _decode_one(tmp_path, im, f"r{size}.png", size=size)
        assert arr.shape == (size, size, 3) and near(arr.reshape(-1, 3).mean(0), (10, 120, 240), tol=2)


# ---------------------------------------------------------------- clear errors


def test_folder_without_any_usable_image_is_an_error_naming_it(tmp_path):
    """Only broken / non-image files: a SynthgapError naming the folder, not an empty set."""
    root = tmp_path / "junk"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        (root / c / "a.jpg").write_text("nope")
        (root / c / "b.txt").write_text("nope")
    with pytest.raises(SynthgapError, match="no usable image") as e:
        load_class_folders(root, ["cat", "dog"], size=16)
    assert str(root) in str(e.value)


def test_one_class_without_usable_image_is_an_error_naming_the_class(tmp_path):
    """A class whose folder holds only broken files would silently vanish from training: refuse, name it."""
    root = make_image_folder(tmp_path / "f", ["cat", "dog"], 2, splits=())
    for p in (root / "dog").iterdir():
        p.write_bytes(b"")
    with pytest.raises(SynthgapError, match="no usable image for class.*dog"):
        load_class_folders(root, ["cat", "dog"], size=16)


def test_missing_class_subfolder_is_an_error_naming_folder_and_class(tmp_path):
    """Asking for a class the folder does not have lists what was found."""
    root = make_image_folder(tmp_path / "f", ["cat", "dog"], 1)
    with pytest.raises(SynthgapError, match="horse") as e:
        load_spec(str(root), "train", ["cat", "horse"], size=16)
    msg = str(e.value)
    assert str(root / "train") in msg and "cat" in msg and "dog" in msg  # "found: cat, dog"


@pytest.mark.parametrize("via_spec", [False, True])
def test_unknown_cifar10_class_is_an_error_before_any_download(via_spec, tmp_path):
    """'dragon' is not a CIFAR-10 class: the error names it (and nothing is looked for on disk or the net)."""
    with pytest.raises(SynthgapError, match="dragon"):
        if via_spec:
            load_spec("cifar10", "train", ["cat", "dragon"], root=tmp_path)
        else:
            load_cifar10("train", ["cat", "dragon"], root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_nonexistent_spec_is_an_error(tmp_path):
    """A typo in a path gives a SynthgapError naming it."""
    missing = tmp_path / "no" / "such"
    with pytest.raises(SynthgapError, match="no such file or folder") as e:
        load_spec(str(missing), "train", CLASSES)
    assert str(missing) in str(e.value)


def test_file_spec_must_be_a_manifest(tmp_path):
    """A single file that is not .jsonl is refused with a hint."""
    f = tmp_path / "list.txt"
    f.write_text("x")
    with pytest.raises(SynthgapError, match="jsonl"):
        load_spec(str(f), "train", CLASSES)


def test_bad_split_name_is_refused(tmp_path):
    """Only 'train' and 'test' exist: 'val' is a programming error."""
    root = make_image_folder(tmp_path / "f", CLASSES, 1)
    with pytest.raises(ValueError):
        load_spec(str(root), "val", CLASSES)


# ---------------------------------------------------------------- the decode cache


def _count_decodes(monkeypatch) -> list:
    calls = []
    real = images_module.decode_image

    def counting(path, size, **kw):
        calls.append(path)
        return real(path, size, **kw)

    monkeypatch.setattr(images_module, "decode_image", counting)
    return calls


def test_autouse_fixture_isolates_the_cache(isolated_cache):
    """The conftest fixture points SYNTHGAP_CACHE at a per-test folder."""
    assert cache_dir() == isolated_cache and os.environ["SYNTHGAP_CACHE"] == str(isolated_cache)


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch, isolated_cache):
    """After one load the folder is never decoded again: same tensors, same labels, no decode_image call."""
    root = make_image_folder(tmp_path / "f", CLASSES, 3)
    first = load_spec(str(root), "train", CLASSES, size=16)
    assert list((isolated_cache / "decoded").glob("*.pt"))

    def boom(path, size, **kw):
        raise AssertionError(f"decode_image called for {path} despite the cache")

    monkeypatch.setattr(images_module, "decode_image", boom)
    second = load_spec(str(root), "train", CLASSES, size=16)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.sha256() == second.sha256()


def test_cache_replays_skip_warnings(tmp_path, synthgap_log):
    """A cached load still reports the skipped files (and warns again), so the user keeps seeing them."""
    root = make_image_folder(tmp_path / "f", ["cat"], 2, splits=())
    bad = _zero_byte(root / "cat" / "zz")
    load_class_folders(root, ["cat"], size=16)
    synthgap_log.clear()
    again = load_class_folders(root, ["cat"], size=16)
    assert [p for p, _ in again.skipped] == [str(bad)]
    assert any(f"skipped {bad}" in r.getMessage() for r in synthgap_log.records)


def test_cache_key_depends_on_size(tmp_path, monkeypatch):
    """Another target size is another cache entry (decoded afresh, right shape)."""
    root = make_image_folder(tmp_path / "f", ["cat"], 2, splits=())
    load_class_folders(root, ["cat"], size=16)
    calls = _count_decodes(monkeypatch)
    s = load_class_folders(root, ["cat"], size=8)
    assert len(calls) == 2 and s.images.shape[-1] == 8


def test_touching_a_file_invalidates_the_cache(tmp_path, monkeypatch):
    """A changed modification time means the file may have changed: decode again."""
    root = make_image_folder(tmp_path / "f", ["cat"], 3, splits=())
    load_class_folders(root, ["cat"], size=16)
    target = root / "cat" / "0001.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    calls = _count_decodes(monkeypatch)
    load_class_folders(root, ["cat"], size=16)
    assert len(calls) == 3


def test_rewriting_a_file_gives_the_new_pixels(tmp_path):
    """A file replaced by a different image (other size) is decoded afresh, not served stale from the cache."""
    root = make_image_folder(tmp_path / "f", ["cat"], 2, splits=())
    before = load_class_folders(root, ["cat"], size=16)
    target = root / "cat" / "0000.png"
    st = target.stat()
    Image.new("RGB", (32, 32), (0, 255, 0)).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the size differs
    assert target.stat().st_size != st.st_size
    after = load_class_folders(root, ["cat"], size=16)
    assert (after.images[0] == torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1)).all()
    assert torch.equal(before.images[1], after.images[1])


def test_unreadable_cache_file_is_rebuilt(tmp_path, isolated_cache, synthgap_log):
    """A corrupt cache entry is never trusted: a warning, then a fresh decode with correct results."""
    root = make_image_folder(tmp_path / "f", ["cat"], 2, splits=())
    first = load_class_folders(root, ["cat"], size=16)
    (entry,) = (isolated_cache / "decoded").glob("*.pt")
    entry.write_bytes(b"garbage")
    again = load_class_folders(root, ["cat"], size=16)
    assert torch.equal(first.images, again.images)
    assert any("unreadable" in r.getMessage() for r in synthgap_log.records)


# ---------------------------------------------------------------- manifests


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows_for(root: Path, base: Path, classes, split_field: str | None = None, source: str | None = None):
    rows = []
    for c in classes:
        for p in sorted((root / c).iterdir()):
            r = {"path": os.path.relpath(p, base), "label": c}
            if split_field:
                r["split"] = split_field
            if source:
                r["source"] = source
            rows.append(r)
    return rows


def test_manifest_with_split_field_loads_only_that_split(tmp_path):
    """Rows are filtered by 'split'; paths are relative to the manifest; labels follow the requested order."""
    root = make_image_folder(tmp_path / "imgs", CLASSES, 3, splits=("train", "test"))
    rows = _rows_for(root / "train", tmp_path, CLASSES, "train") + _rows_for(
        root / "test", tmp_path, CLASSES[:2], "test"
    )
    m = _write_manifest(tmp_path / "m.jsonl", rows)
    train = load_spec(str(m), "train", ["frog", "cat", "bird"], size=16)
    assert len(train) == 9 and train.class_counts() == {"frog": 3, "cat": 3, "bird": 3}
    for img, y in zip(train.images, train.labels):
        assert near(median_rgb(img), class_colour(CLASSES.index(["frog", "cat", "bird"][int(y)])))
    test = load_manifest(m, ["bird", "cat"], "test", size=16)
    assert len(test) == 6 and test.class_counts() == {"bird": 3, "cat": 3}
    assert image_keys(train).isdisjoint(image_keys(test))


def test_manifest_without_split_is_a_deterministic_stratified_holdout(tmp_path):
    """No 'split' field: train and test are disjoint, cover everything, are stratified and identical across calls."""
    n = 10
    root = make_image_folder(tmp_path / "imgs", CLASSES, n, splits=())
    m = _write_manifest(tmp_path / "m.jsonl", _rows_for(root, tmp_path, CLASSES))
    train = load_manifest(m, CLASSES, "train", size=16)
    test = load_manifest(m, CLASSES, "test", size=16)
    everything = load_class_folders(root, CLASSES, size=16)

    assert image_keys(train).isdisjoint(image_keys(test))
    assert image_keys(train) | image_keys(test) == image_keys(everything)
    n_test = round(n * HOLDOUT_FRACTION)
    assert test.class_counts() == {c: n_test for c in CLASSES}
    assert train.class_counts() == {c: n - n_test for c in CLASSES}
    again = load_manifest(m, CLASSES, "test", size=16)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_manifest_domain_from_source_field(tmp_path):
    """load_manifest(domain=None) takes the domain from the rows' 'source' (one value, else 'mixed')."""
    root = make_image_folder(tmp_path / "imgs", ["cat", "dog"], 2, splits=())
    rows = _rows_for(root, tmp_path, ["cat", "dog"], "train", source="synthetic")
    m = _write_manifest(tmp_path / "m.jsonl", rows)
    assert load_manifest(m, ["cat", "dog"], "train", size=16).domain == "synthetic"
    rows[0]["source"] = "real"
    _write_manifest(m, rows)
    assert load_manifest(m, ["cat", "dog"], "train", size=16).domain == "mixed"


def test_manifest_labels_outside_the_classes_are_ignored_and_noted(tmp_path):
    """Rows of other classes are dropped, and the drop is recorded in .skipped."""
    root = make_image_folder(tmp_path / "imgs", CLASSES, 2, splits=())
    m = _write_manifest(tmp_path / "m.jsonl", _rows_for(root, tmp_path, CLASSES, "train"))
    s = load_manifest(m, ["bird", "cat"], "train", size=16)
    assert len(s) == 4
    assert any(p == str(m) and "frog" in reason for p, reason in s.skipped)


def test_manifest_without_split_keeps_skipped_files(tmp_path):
    """Bad files listed in a split-less manifest must still show up in .skipped of the loaded (train) set.

    Guards load_manifest's holdout branch: ImageSet.subset() drops `skipped`, so describe() could say 0 skipped.
    """
    root = make_image_folder(tmp_path / "imgs", ["cat", "dog"], 5, splits=())
    bad = _zero_byte(root / "cat" / "zz_bad")
    m = _write_manifest(tmp_path / "m.jsonl", _rows_for(root, tmp_path, ["cat", "dog"]))
    train = load_manifest(m, ["cat", "dog"], "train", size=16)
    assert str(bad.resolve()) in [p for p, _ in train.skipped]


def test_manifest_bad_json_names_file_and_line(tmp_path):
    """A malformed line is reported as <file>:<line>."""
    root = make_image_folder(tmp_path / "imgs", ["cat"], 2, splits=())
    rows = _rows_for(root, tmp_path, ["cat"])
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps(rows[0]) + "\n\n" + '{"path": "x.png", "label": \n' + json.dumps(rows[1]) + "\n")
    with pytest.raises(SynthgapError, match="not valid JSON") as e:
        load_manifest(m, ["cat"], "train", size=16)
    assert f"{m}:3" in str(e.value)


@pytest.mark.parametrize("field", ["label", "path"])
def test_manifest_missing_field_is_an_error(field, tmp_path):
    """Every row needs 'path' and 'label'; the error names the missing field and the line."""
    root = make_image_folder(tmp_path / "imgs", ["cat"], 2, splits=())
    rows = _rows_for(root, tmp_path, ["cat"])
    del rows[1][field]
    m = _write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(SynthgapError, match=f"missing field '{field}'") as e:
        load_spec(str(m), "train", ["cat"], size=16)
    assert f"{m}:2" in str(e.value)


def test_manifest_listing_a_missing_file_is_an_error(tmp_path):
    """A listed image that does not exist is an error naming it (not a silently smaller set)."""
    root = make_image_folder(tmp_path / "imgs", ["cat"], 2, splits=())
    rows = _rows_for(root, tmp_path, ["cat"]) + [{"path": "imgs/cat/gone.png", "label": "cat"}]
    m = _write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(SynthgapError, match="gone.png"):
        load_manifest(m, ["cat"], "train", size=16)


# ---------------------------------------------------------------- class folders without train/test


def test_folder_without_splits_is_held_out_deterministically(tmp_path):
    """root/<class>/* only: 'train' and 'test' are disjoint, stratified, together everything, same every call."""
    n = 10
    root = make_image_folder(tmp_path / "f", CLASSES, n, splits=())
    train = load_spec(str(root), "train", CLASSES, size=16)
    test = load_spec(str(root), "test", CLASSES, size=16)
    assert image_keys(train).isdisjoint(image_keys(test))
    assert len(image_keys(train) | image_keys(test)) == 3 * n
    n_test = round(n * HOLDOUT_FRACTION)
    assert test.class_counts() == {c: n_test for c in CLASSES}
    assert train.class_counts() == {c: n - n_test for c in CLASSES}
    assert "held out" in test.name
    again_train = load_spec(str(root), "train", CLASSES, size=16)
    again_test = load_spec(str(root), "test", CLASSES, size=16)
    assert train.sha256() == again_train.sha256() and test.sha256() == again_test.sha256()


def test_folder_without_splits_reports_skipped_once(tmp_path):
    """Skipped files are reported with the train part only, so they are not counted twice."""
    root = make_image_folder(tmp_path / "f", ["cat", "dog"], 5, splits=())
    bad = _zero_byte(root / "dog" / "zz")
    train = load_spec(str(root), "train", ["cat", "dog"], size=16)
    test = load_spec(str(root), "test", ["cat", "dog"], size=16)
    assert [p for p, _ in train.skipped] == [str(bad)] and test.skipped == []


def test_holdout_split_is_stratified_and_keeps_one_of_each_class():
    """Every class keeps >= 1 training and >= 1 held-out example when it has two or more."""
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 1)
    keep, held = holdout_split(labels, 0.2, 0)
    assert set(keep).isdisjoint(held) and sorted([*keep, *held]) == list(range(13))
    assert np.bincount(labels[held].numpy(), minlength=3).tolist() == [2, 1, 0]
    k2, h2 = holdout_split(labels, 0.2, 0)
    assert np.array_equal(keep, k2) and np.array_equal(held, h2)


# ---------------------------------------------------------------- CIFAR-10 location (never the network)


def test_cifar10_image_folder_copy_is_found_and_loaded(tmp_path):
    """root/cifar10-jpeg/{train,test}/<class>/ is used as is, with labels in the requested order."""
    make_image_folder(tmp_path / "cifar10-jpeg", ["cat", "dog", "ship"], 3, ext="jpg")
    assert find_cifar10(tmp_path) == ("folder", tmp_path / "cifar10-jpeg")
    assert prepare_cifar10(tmp_path) == ("folder", tmp_path / "cifar10-jpeg")
    s = load_spec("cifar10", "test", ["dog", "cat"], size=16, root=tmp_path)
    assert s.name == "cifar10[test]" and s.domain == "real"
    assert s.class_counts() == {"dog": 3, "cat": 3}


def test_cifar10_found_through_the_data_root_env(tmp_path, monkeypatch):
    """With no --root, SYNTHGAP_DATA names the data root."""
    make_image_folder(tmp_path / "cifar10", ["airplane", "cat"], 1)
    monkeypatch.setenv("SYNTHGAP_DATA", str(tmp_path))
    assert prepare_cifar10() == ("folder", tmp_path / "cifar10")


def test_cifar10_root_that_is_itself_a_split_folder(tmp_path):
    """A root holding train/airplane ... directly is taken as the image-folder copy."""
    make_image_folder(tmp_path, ["airplane", "cat"], 1)
    assert find_cifar10(tmp_path) == ("folder", tmp_path)


def test_cifar10_missing_and_offline_is_a_clear_error(tmp_path):
    """Nothing under the root and no network: the message names the root and the command to fetch the data."""
    root = tmp_path / "data"
    with pytest.raises(SynthgapError) as e:
        load_spec("cifar10", "train", ["cat", "dog"], root=root)
    msg = str(e.value)
    assert str(root) in msg and "synthgap data cifar10" in msg and "download failed" in msg
    assert "URLError" in msg
    assert not (root / CIFAR10_TARBALL).exists()  # no partial download left behind


def test_cifar10_missing_with_download_disabled(tmp_path):
    """download=False never tries the network and says why it gave up."""
    with pytest.raises(SynthgapError, match="download disabled") as e:
        prepare_cifar10(tmp_path, download=False)
    assert str(tmp_path) in str(e.value)


def test_cifar10_tarball_with_wrong_md5_is_refused(tmp_path):
    """A corrupt or foreign tarball is not extracted: the error mentions the MD5 mismatch."""
    (tmp_path / CIFAR10_TARBALL).write_bytes(b"not the real thing")
    assert find_cifar10(tmp_path) == ("tarball", tmp_path)
    with pytest.raises(SynthgapError, match="MD5") as e:
        prepare_cifar10(tmp_path)
    assert str(tmp_path / CIFAR10_TARBALL) in str(e.value)


def _fake_cifar_batches(root: Path, per_batch: int = 20) -> Path:
    """A tiny cifar-10-batches-py: image i of label y is filled with value 10*y + 1 (rows in CHW order)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [(b + i) % 10 for i in range(per_batch)]
        data = np.stack([np.full(3072, 10 * y + 1, dtype=np.uint8) for y in labels])
        with open(d / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, f)
    return d


def test_cifar10_extracted_batches(tmp_path, monkeypatch):
    """The official pickled batches: only the requested classes, labels remapped to their order, resized if asked.

    torchvision checks each batch file's MD5, which a fake cannot match, so its check is patched to pass.
    """
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    _fake_cifar_batches(tmp_path)
    assert find_cifar10(tmp_path) == ("batches", tmp_path)

    classes = ["ship", "cat"]  # CIFAR ids 8 and 3
    train = load_spec("cifar10", "train", classes, size=32, root=tmp_path)
    assert train.name == "cifar10[train]" and train.classes == classes
    assert tuple(train.images.shape[1:]) == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.class_counts() == {"ship": 10, "cat": 10}  # 5 batches x 20 images, 2 of each class per batch
    for img, y in zip(train.images, train.labels):
        cifar_id = CIFAR10_CLASSES.index(classes[int(y)])
        assert (img == 10 * cifar_id + 1).all()

    test = load_cifar10("test", classes, size=16, root=tmp_path)
    assert tuple(test.images.shape) == (4, 3, 16, 16)
    for img, y in zip(test.images, test.labels):
        assert (img == 10 * CIFAR10_CLASSES.index(classes[int(y)]) + 1).all()


def test_cifar10_incomplete_batches_folder_is_a_clear_error(tmp_path):
    """An interrupted extraction (test_batch present, a data batch missing) must be a SynthgapError naming the folder."""
    d = _fake_cifar_batches(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(SynthgapError) as e:
        load_cifar10("train", ["cat", "dog"], root=tmp_path)
    assert str(d) in str(e.value) or str(tmp_path) in str(e.value)


# ---------------------------------------------------------------- content hash


def test_sha256_is_content_based(tmp_path):
    """Equal content hashes equal (wherever it came from); one changed pixel, label or class name changes it."""
    root = make_image_folder(tmp_path / "f", CLASSES, 2)
    a = load_spec(str(root), "train", CLASSES, size=16)
    copy = make_image_folder(tmp_path / "g", CLASSES, 2)  # same seed, other place: same pixels
    b = load_spec(str(copy), "train", CLASSES, size=16)
    assert a.sha256() == b.sha256() and len(a.sha256()) == 64

    pixel = ImageSet(a.images.clone(), a.labels.clone(), list(a.classes))
    pixel.images[0, 0, 0, 0] ^= 1
    label = ImageSet(a.images.clone(), a.labels.clone(), list(a.classes))
    label.labels[0] = (label.labels[0] + 1) % 3
    names = ImageSet(a.images, a.labels, ["bird", "cat", "toad"])
    hashes = {a.sha256(), pixel.sha256(), label.sha256(), names.sha256()}
    assert len(hashes) == 4


def test_write_bytes_is_atomic_makes_its_folder_and_leaves_no_temp_file(tmp_path, monkeypatch):

    from synthgap.io import write_bytes

    target = tmp_path / "new" / "deeper" / "a.png"
    write_bytes(target, b"first")
    write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # permissions as open() gives, not mkstemp's 0600

    def full_disk(self, data):  # the disk fills halfway through the temp file
        with open(self, "wb") as f:
            f.write(data[:2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_bytes(target, b"third")
    monkeypatch.undo()
    assert target.read_bytes() == b"second, longer"  # the old content stands
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
