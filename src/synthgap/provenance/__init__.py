"""Provenance as evidence: read Content Credentials (C2PA) and generator metadata in every check
(`read_provenance`, `combine`), and mark the images synthgap generates (`ai_xmp`, `ManifestSigner`)."""

from synthgap.provenance.read import VERDICTS, ProvenanceOptions, combine, read_provenance, scan_metadata

__all__ = ["VERDICTS", "ProvenanceOptions", "combine", "read_provenance", "scan_metadata"]
