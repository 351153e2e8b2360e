"""Development certificates for C2PA signing: a throw-away certificate authority and a signer it issued.

For trying `synthgap generate --sign` and for the tests and benchmarks, offline. A manifest signed
with them validates ("untrusted signer" unless root.pem is given as trust anchors) but identifies no
one: real signing needs a certificate from a CA on the C2PA trust list.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def make_dev_pki(folder: str | Path, alg: str = "es256", intermediate: bool = False, days: int = 1) -> dict[str, Path]:
    """Write root.pem, chain.pem (the signer's certificate, then the intermediate's if any) and key.pem
    into `folder`; alg es256 (P-256 keys) or ps256 (RSA-2048). Valid from a day ago for `days` days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def new_key():
        return ec.generate_private_key(ec.SECP256R1()) if alg == "es256" else rsa.generate_private_key(65537, 2048)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "synthgap tests"),
            ]
        )

    def usage(**on) -> x509.KeyUsage:
        fields = (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        )
        return x509.KeyUsage(**{f: on.get(f, False) for f in fields})

    if alg not in ("es256", "ps256"):
        raise ValueError(f"alg: expected es256 or ps256, got {alg!r}")
    now = dt.datetime.now(dt.UTC)

    def cert(subject, public, issuer, issuer_key, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer else subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                usage(key_cert_sign=True, crl_sign=True) if ca else usage(digital_signature=True), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        if issuer:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        if not ca:  # C2PA wants an end-entity certificate with a signing extended key usage
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        pad = None if alg == "es256" else padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        return b.sign(issuer_key, hashes.SHA256(), rsa_padding=pad)

    root_key = new_key()
    root = cert(name("synthgap test root"), root_key.public_key(), None, root_key, ca=True)
    issuer, issuer_key, chain = root, root_key, []
    if intermediate:
        mid_key = new_key()
        mid = cert(name("synthgap test intermediate"), mid_key.public_key(), root, root_key, ca=True)
        issuer, issuer_key, chain = mid, mid_key, [mid]
    key = new_key()
    leaf = cert(name("synthgap test signer"), key.public_key(), issuer, issuer_key, ca=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    paths = {"root": folder / "root.pem", "chain": folder / "chain.pem", "key": folder / "key.pem"}
    paths["root"].write_bytes(root.public_bytes(pem))
    paths["chain"].write_bytes(b"".join(c.public_bytes(pem) for c in [leaf, *chain]))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths
