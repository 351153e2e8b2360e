"""Mark the images synthgap makes as AI-generated, machine-readably (EU AI Act Art. 50).

Every generated image carries, beside synthgap's own JSON record, an XMP packet with the IPTC digital
source type `trainedAlgorithmicMedia` and the generator as `xmp:CreatorTool` (~0.6 KB; PNG iTXt chunk
`XML:com.adobe.xmp`, JPEG APP1): unsigned, so a hint that anyone can strip, but read by every major
viewer and platform. With a signing certificate (`SignConfig`) an image also gets a signed C2PA
manifest: action `c2pa.created` with that source type, the model, its revision, the seed and the
prompt or class, bound to the pixels by a hash (any later change reads as "tampered").
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from synthgap import SynthgapError, __version__
from synthgap.provenance.read import IPTC_SOURCE_TYPE

AI_SOURCE_TYPE = IPTC_SOURCE_TYPE + "trainedAlgorithmicMedia"
XMP_PNG_KEY = "XML:com.adobe.xmp"


def ai_xmp(creator_tool: str) -> str:
    """A minimal XMP packet: IPTC digital source type trainedAlgorithmicMedia and the tool that made it."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" Iptc4xmpExt:DigitalSourceType="{AI_SOURCE_TYPE}" '
        f'xmp:CreatorTool={quoteattr(creator_tool[:200])}/></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    )


def creator_tool(model: str) -> str:
    return f"synthgap {__version__} ({model})"


@dataclass
class SignConfig:
    """A signed C2PA manifest in every generated image. Both files are PEM; the chain starts with the
    signing certificate (digitalSignature key usage, an end-entity certificate, not self-signed) and
    ends before the root; the key is that certificate's private key."""

    cert_chain: str | None = None
    key: str | None = None
    alg: str = "es256"  # es256 | es384 | es512 | ps256 | ps384 | ps512 | ed25519: must match the key
    tsa_url: str | None = None  # an RFC 3161 timestamp authority (a network call per image); None: no timestamp

    @property
    def enabled(self) -> bool:
        return bool(self.cert_chain or self.key)

    def check(self, where: str = "sign") -> SignConfig:
        if bool(self.cert_chain) != bool(self.key):
            raise SynthgapError(f"{where}: give both cert_chain and key (PEM files), or neither")
        for name in ("cert_chain", "key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise SynthgapError(f"{where}.{name}: no file {path}")
        return self


MIME = {"png": "image/png", "jpeg": "image/jpeg"}


class ManifestSigner:
    """Signs images with one certificate chain (checked once, on a probe image, when made)."""

    def __init__(self, cfg: SignConfig):
        import c2pa

        cfg.check()
        self.cfg = cfg
        self._chain = Path(cfg.cert_chain).read_bytes()
        self._key = Path(cfg.key).read_bytes()
        if b"BEGIN CERTIFICATE" not in self._chain:
            raise SynthgapError(f"sign.cert_chain: {cfg.cert_chain} is not a PEM certificate chain")
        if b"PRIVATE KEY" not in self._key:
            raise SynthgapError(f"sign.key: {cfg.key} is not a PEM private key")
        self._settings = c2pa.Settings.from_dict(
            {
                "builder": {"thumbnail": {"enabled": False}},
                "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
            }
        )
        self.sign(_probe_png(), "png", {})  # a bad key or chain fails here, not on image 1

    def sign(self, data: bytes, fmt: str, parameters: dict) -> bytes:
        """`data` (an encoded PNG or JPEG) with a signed manifest declaring it made by a trained model."""
        import c2pa

        manifest = {
            "claim_generator_info": [{"name": "synthgap", "version": __version__}],
            "assertions": [
                {
                    "label": "c2pa.actions.v2",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": AI_SOURCE_TYPE,
                                "softwareAgent": {"name": "synthgap", "version": __version__},
                                "parameters": {k: v for k, v in parameters.items() if v not in (None, "")},
                            }
                        ]
                    },
                }
            ],
        }
        try:
            signer = c2pa.Signer.from_info(
                c2pa.C2paSignerInfo(self.cfg.alg.lower().encode(), self._chain, self._key, self.cfg.tsa_url)
            )
            out = io.BytesIO()
            with c2pa.Builder(manifest, context=c2pa.Context(self._settings)) as builder:
                builder.sign(signer, MIME[fmt], io.BytesIO(data), out)
        except c2pa.C2paError as e:
            raise SynthgapError(
                f"signing with {self.cfg.cert_chain} and {self.cfg.key} ({self.cfg.alg}) failed: "
                f"{e}. The chain must start with an end-entity certificate whose key is "
                f"sign.key, with the digitalSignature key usage"
            ) from None
        return out.getvalue()


def _probe_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()
