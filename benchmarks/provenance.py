"""What provenance costs per image: the AI-generated mark, a signed C2PA manifest, and reading them.

Per image size and format (32x32 PNG, as the CIFAR-scale sets; 512x512 PNG, as sd-turbo makes; 512x512
JPEG q90), the median over --n images of drawn content:

- synthgap's encoded file (`encode_image`: the generation record and the XMP mark), its encoding time,
  and the bytes of the XMP mark in it;
- bytes and milliseconds a signed manifest adds (`ManifestSigner.sign`), for two development chains:
  ES256 with one certificate, and PS256 (RSA-2048) with an intermediate, nearer a commercial chain;
- milliseconds `read_provenance` takes on a stripped file, a marked one and a signed one (validated).

No timestamp authority (that is a network call per image) and no thumbnail in the manifest.

    .venv/bin/python benchmarks/provenance.py [--n 50]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from synthgap.generate.generator import encode_image
from synthgap.provenance import read_provenance
from synthgap.provenance.devcert import make_dev_pki
from synthgap.provenance.mark import ManifestSigner, SignConfig

CASES = [("32x32 PNG", 32, "png"), ("512x512 PNG", 512, "png"), ("512x512 JPEG q90", 512, "jpeg")]
META = {
    "prompt": "a photo of a cat, on a windowsill, soft light",
    "seed": 12345,
    "model": "stabilityai/sd-turbo",
    "steps": 1,
    "guidance_scale": 0.0,
    "class": "cat",
    "synthgap": "0.1.0",
}


def drawn(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 180, size)[None, :, None] + np.linspace(0, 60, size)[:, None, None]
    return Image.fromarray(np.clip(ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8))


def plain(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG" if fmt == "png" else "JPEG", **({"quality": 90} if fmt == "jpeg" else {}))
    return buf.getvalue()


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, 1000 * (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="images per case")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        chains = {
            "ES256, 1 cert": ("es256", make_dev_pki(f"{tmp}/es", "es256")),
            "PS256, 2 certs": ("ps256", make_dev_pki(f"{tmp}/ps", "ps256", intermediate=True)),
        }
        signers = {
            k: ManifestSigner(SignConfig(str(p["chain"]), str(p["key"]), alg=alg)) for k, (alg, p) in chains.items()
        }
        print(f"{args.n} images per case; medians\n")
        print(
            "| image | synthgap's file (record + mark), encode time | of which the XMP mark | "
            "+ signed manifest, ES256 1 cert | + signed manifest, PS256 2 certs | read: stripped / marked / signed |"
        )
        print("|---|---|---|---|---|---|")
        for label, size, fmt in CASES:
            rows: dict[str, list[float]] = {}
            for i in range(args.n):
                image = drawn(size, i)
                bare = plain(image, fmt)
                marked, ms = timed(encode_image, image, {**META, "seed": i}, fmt, 90)
                rows.setdefault("file", []).append(len(marked))
                rows.setdefault("encode_ms", []).append(ms)
                rows.setdefault("mark_bytes", []).append(xmp_bytes(marked))
                for k, signer in signers.items():
                    signed, ms = timed(signer.sign, marked, fmt, {"model": META["model"], "seed": i, "class": "cat"})
                    rows.setdefault(f"{k} bytes", []).append(len(signed) - len(marked))
                    rows.setdefault(f"{k} ms", []).append(ms)
                for what, data in (("stripped", bare), ("marked", marked), ("signed", signed)):
                    rec, ms = timed(read_provenance, data)
                    assert rec["code"] == {"stripped": "none", "marked": "unsigned_ai", "signed": "signed_ai"}[what], (
                        rec
                    )
                    rows.setdefault(f"read {what}", []).append(ms)
            m = {k: statistics.median(v) for k, v in rows.items()}
            sig = [
                f"+{m[f'{k} bytes'] / 1024:.1f} KB ({100 * m[f'{k} bytes'] / m['file']:.0f}%), {m[f'{k} ms']:.1f} ms"
                for k in signers
            ]
            print(
                f"| {label} | {m['file'] / 1024:.1f} KB, {m['encode_ms']:.2f} ms | {m['mark_bytes']:.0f} B "
                f"({100 * m['mark_bytes'] / m['file']:.1f}%) | {sig[0]} | {sig[1]} | "
                f"{m['read stripped']:.2f} / {m['read marked']:.2f} / {m['read signed']:.1f} ms |"
            )


def xmp_bytes(data: bytes) -> int:
    """Bytes of the XMP packet's container in the file: a PNG iTXt chunk, a JPEG APP1 segment."""
    from synthgap.provenance.mark import XMP_PNG_KEY

    with Image.open(io.BytesIO(data)) as im:
        if im.format == "PNG":
            packet = im.info[XMP_PNG_KEY].encode()
            return (
                len(packet) + len(XMP_PNG_KEY) + 5 + 12
            )  # key, NUL, flags, language and keyword NULs; length, type, CRC
        (segment,) = [d for m, d in im.applist if m == "APP1" and d.startswith(b"http://ns.adobe.com/xap/1.0/")]
        return len(segment) + 4  # marker and length


if __name__ == "__main__":
    main()
