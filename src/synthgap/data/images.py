"""Decode image files once into uint8 tensors, with one resampler for every source.

Epochs never touch PIL: a folder is decoded a single time, the result cached on disk keyed by
a hash of its file list (paths, sizes, modification times) and the target size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from synthgap.io import save_torch, user_cache

log = logging.getLogger("synthgap")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# The one resampler for real and synthetic images alike: PIL's bicubic filter antialiases on
# downscaling. Changing it invalidates the cache (it is part of the key).
RESAMPLE = Image.Resampling.BICUBIC
CACHE_VERSION = 2  # 2: the native pixel hash of every image is cached with it
MAX_PIXELS = 64_000_000  # larger is a decompression bomb or a mistake, not a training image
MIN_SIDE = 8
MAX_ASPECT = 8.0
# Formats PIL may parse, for files, data sets' bytes and uploads alike: photo formats only (never e.g. EPS,
# which runs Ghostscript). A phone's MPO (multi-picture JPEG) opens through the JPEG plugin.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


def resize_square(im: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize to size x size with the shared resampler."""
    w, h = im.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    if im.size != (size, size):
        im = im.resize((size, size), RESAMPLE)
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha is composited on white, 16/32-bit is rescaled."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if im.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        elif im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range onto 8-bit (mode 'I' is 32-bit: scaled only when it exceeds 8 bits)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


_QUIET_BOMB = ("ignore", None, Image.DecompressionBombWarning, None, 0)  # as warnings.filterwarnings stores it


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Image.open of a file or its bytes in one of FORMATS: the header only, so its size can be checked before
    any pixel is decoded. Raises as Image.open does (DecompressionBombError from 179 M pixels), but without
    PIL's DecompressionBombWarning from 89 M: every caller refuses from its own, lower limit with a one-line
    reason (MAX_PIXELS, the web app's max_pixels), and the warning would only add two alarming lines."""
    # A filter, not catch_warnings (files are decoded on threads: catch_warnings is not thread-safe), put first
    # again at each call: whoever owns the process (pytest, an application) may reset the filters or put a
    # broader one ("always", "error") in front of it.
    if not warnings.filters or warnings.filters[0] != _QUIET_BOMB:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS)


def upright_rgb(im: Image.Image, min_side: int | None = None) -> Image.Image:
    """The one conversion of an opened file to what every model sees (files, data sets, uploads): its pixels
    loaded (the first frame: a phone's MPO keeps its main photo there, a GIF its first), turned upright by
    its EXIF orientation, in 8-bit RGB (to_rgb).

    min_side: what the caller needs of the shorter side (a thumbnail model's input, with room to spare); the
    image is then decoded no larger than it must be: a JPEG at libjpeg's nearest DCT scale (1/2, 1/4, 1/8)
    that keeps min_side (`decoded_size` says which, before any pixel is decoded), any other format reduced by
    a whole factor right after decoding, before any mode conversion or orientation copy. A 40-megapixel
    photo then costs a thumbnail model about 1/64 of its memory."""
    if min_side:
        im.draft(None, decoded_size(im, min_side))  # a no-op for every format but JPEG
    im.load()
    if min_side and (factor := min(im.size) // min_side) >= 2:
        if im.mode == "1":  # modes Image.reduce does not take: 1 as L (a byte a pixel), P and I;16 as RGB
            im = im.convert("L")
        elif im.mode == "P" or im.mode.startswith("I;16"):
            im = to_rgb(im)
        im = im.reduce(factor)
    return to_rgb(ImageOps.exif_transpose(im))


def decoded_size(im: Image.Image, min_side: int | None) -> tuple[int, int]:
    """The size `upright_rgb(im, min_side)` decodes an opened image at (before any whole-factor reduce): what
    its pixels cost in memory. A JPEG's DCT scaling keeps the shorter side at least min_side."""
    w, h = im.size
    if not min_side or im.format not in ("JPEG", "MPO") or min(w, h) < 2 * min_side:
        return w, h
    scale = 1 << min(3, (min(w, h) // min_side).bit_length() - 1)  # 1, 2, 4 or 8
    return -(-w // scale), -(-h // scale)


ARITHMETIC_SOF = (b"\xff\xc9", b"\xff\xca", b"\xff\xcb")


def short_jpeg(im: Image.Image, data: bytes, nbytes: int | None = None) -> str | None:
    """Why a JPEG cannot hold the pixels its header claims, or None. `data`: the file's bytes (or at least its
    header), `nbytes` its size if `data` is only the start. Every 8x8 block of a Huffman-coded JPEG (baseline
    or progressive) costs at least one bit, so a file of fewer bytes than its luminance blocks / 8 ends early:
    libjpeg would fill in the rest, and a 4 KB file could claim a 40-megapixel decode. (Arithmetic-coded
    JPEGs, which can go below a bit a block, are not judged.)"""
    if im.format not in ("JPEG", "MPO"):
        return None
    header = data[: data.find(b"\xff\xda")]  # up to the first scan
    if any(sof in header for sof in ARITHMETIC_SOF):
        return None
    nbytes = len(data) if nbytes is None else nbytes
    w, h = im.size
    least = -(-w // 8) * -(-h // 8) // 8
    if nbytes < least:
        return (
            f"truncated: {nbytes:,} bytes cannot hold the {w}x{h} pixels its header claims (at least {least:,} bytes)"
        )
    return None


def pixel_hash(rgb: np.ndarray) -> int:
    """64-bit hash of an H x W x 3 uint8 array and its shape: equal for equal pixels, whatever the file
    format or metadata they came in (a JPEG decoded and saved as PNG hashes the same)."""
    h = hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=8, person=b"synthgap")
    h.update(repr(rgb.shape).encode())
    return int.from_bytes(h.digest(), "little")


def decode_image(path: str | os.PathLike | bytes, size: int, with_hash: bool = False):
    """Return (HWC uint8 array, None) or (None, reason) for a file (or its bytes) that cannot be used.

    with_hash: return (array, pixel_hash of the image at its native size, None) instead, the hash
    taken after orientation and RGB conversion and before resizing (what the audit calls exact).
    """
    arr, native, why = _decode(path, size)
    return (arr, native, why) if with_hash else (arr, why)


def decode_native(path: str | os.PathLike | bytes) -> tuple[Image.Image | None, str | None]:
    """(the image upright in 8-bit RGB at its own size, None) or (None, reason): the one decoder every
    thumbnail and every crop starts from."""
    try:
        if (len(path) if isinstance(path, bytes) else os.path.getsize(path)) == 0:
            return None, "empty file (0 bytes)"
        with open_image(path) as im:
            w, h = im.size  # from the header: checked before a single pixel is decoded
            if w * h > MAX_PIXELS:
                return None, (
                    f"{w}x{h} = {w * h:,} pixels, over the limit of {MAX_PIXELS:,} (a decompression bomb, "
                    "or a photo to downscale first)"
                )
            if min(w, h) < MIN_SIDE or max(w, h) / min(w, h) > MAX_ASPECT:
                return None, f"unusable dimensions {w}x{h} (want sides >= {MIN_SIDE} and aspect <= {MAX_ASPECT:g})"
            if im.format in ("JPEG", "MPO") and (why := short_jpeg(im, *_head(path))):
                return None, why
            return upright_rgb(im), None
    except UnidentifiedImageError:
        return None, f"not an image PIL can read in a supported format ({', '.join(FORMATS)})"
    except Image.DecompressionBombError as e:
        return None, f"decompression bomb: {e}"
    except (OSError, ValueError, SyntaxError) as e:
        return None, f"corrupt or truncated: {e}"


def _head(path: str | os.PathLike | bytes, n: int = 65536) -> tuple[bytes, int]:
    """The first n bytes of a file (or bytes) and its size."""
    if isinstance(path, bytes):
        return path[:n], len(path)
    with open(path, "rb") as f:
        return f.read(n), os.fstat(f.fileno()).st_size


def _decode(path, size: int) -> tuple[np.ndarray | None, int | None, str | None]:
    im, why = decode_native(path)
    if im is None:
        return None, None, why
    native = pixel_hash(np.asarray(im, dtype=np.uint8))
    return np.asarray(resize_square(im, size), dtype=np.uint8).copy(), native, None


@dataclass
class Decoded:
    images: torch.Tensor  # N x 3 x H x W, uint8
    kept: list[int]  # indices into the input file list
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    pixel_hashes: np.ndarray | None = None  # uint64 per kept image: pixel_hash at its native size


def cache_dir() -> Path:
    if d := os.environ.get("SYNTHGAP_CACHE"):
        return Path(d)
    return user_cache()


def file_list_key(paths: list[str], size: int) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "size": size, "resample": RESAMPLE.name}).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def decode_files(paths: list[str], size: int, *, use_cache: bool = True, progress: bool = True) -> Decoded:
    """Decode `paths` to a uint8 tensor; bad files are skipped with one warning line each."""
    cache_file = cache_dir() / "decoded" / f"{file_list_key(paths, size)}.pt"
    if use_cache and (out := read_decoded(cache_file)) is not None:
        return out
    out = decode_many(paths, [str(p) for p in paths], size, progress=progress)
    if use_cache:
        write_decoded(cache_file, out)
    return out


def read_decoded(cache_file: Path) -> Decoded | None:
    """A cached decode (its skipped files warned about again), or None when absent or unreadable."""
    if not cache_file.exists():
        return None
    try:
        d = torch.load(cache_file, weights_only=True)
        out = Decoded(
            d["images"], d["kept"], [tuple(s) for s in d["skipped"]], d["pixel_hashes"].numpy().view(np.uint64)
        )
    except Exception:  # a stale or foreign cache file is rebuilt, never trusted
        log.warning("cache file %s unreadable; decoding again", cache_file)
        return None
    _warn_skipped(out.skipped)
    return out


def write_decoded(cache_file: Path, out: Decoded) -> None:
    save_torch(
        cache_file,
        {
            "images": out.images,
            "kept": out.kept,
            "skipped": [list(s) for s in out.skipped],
            "pixel_hashes": torch.from_numpy(out.pixel_hashes.view(np.int64)),
        },
    )


def decode_many(items: list, names: list[str], size: int, *, progress: bool = True) -> Decoded:
    """Decode paths or encoded bytes (`names`: what a skipped one is called in the warning) with the
    shared decoder, on threads (PIL releases the GIL)."""
    from synthgap.io import progress_bar

    arrays: list[np.ndarray] = []
    hashes: list[int] = []
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: decode_image(p, size, with_hash=True), items, chunksize=64)
        for i, (arr, native, reason) in enumerate(
            progress_bar(
                results, total=len(items), desc="decoding", unit="img", enabled=progress and len(items) >= 2000
            )
        ):
            if arr is None:
                skipped.append((names[i], reason))
            else:
                arrays.append(arr)
                hashes.append(native)
                kept.append(i)
    images = (
        torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        if arrays
        else torch.empty(0, 3, size, size, dtype=torch.uint8)
    )
    _warn_skipped(skipped)
    return Decoded(images, kept, skipped, np.array(hashes, dtype=np.uint64))


def _warn_skipped(skipped: list[tuple[str, str]]) -> None:
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
