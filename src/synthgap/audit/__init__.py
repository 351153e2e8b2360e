"""The data audit: exact and near twins within and across splits, sets and domains, before any
number is reported (`synthgap audit`, and every experiment's `dedupe` step).

    from synthgap.audit import AuditPart, audit
    result = audit([AuditPart("cifar10", "train", "real", train), AuditPart("cifar10", "test", "real", test)])
    result.summary()["test_images_with_training_twin"]; result.write("runs/audit")
"""

from synthgap.audit.find import AuditSettings, aligned_correlation, hamming_pairs, phashes
from synthgap.audit.result import (
    DEDUPE_MODES,
    Audit,
    AuditPart,
    apply_dedupe,
    audit,
    audit_record,
    check_dedupe,
    dedupe,
    pair_kind,
)
from synthgap.audit.sources import load_parts
from synthgap.audit.summary import KINDS, counts_html, summary_lines

__all__ = [
    "DEDUPE_MODES",
    "KINDS",
    "Audit",
    "AuditPart",
    "AuditSettings",
    "aligned_correlation",
    "apply_dedupe",
    "audit",
    "audit_record",
    "check_dedupe",
    "counts_html",
    "dedupe",
    "hamming_pairs",
    "load_parts",
    "pair_kind",
    "phashes",
    "summary_lines",
]
