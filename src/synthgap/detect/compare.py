"""Every chosen backbone under the same head, data and budget: one table and one bar plot."""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

from synthgap.audit import audit_record
from synthgap.detect.config import DetectorConfig
from synthgap.detect.data import DetectorData
from synthgap.detect.train import check_detector_config, data_record, run_detector, run_folder
from synthgap.io import write_json, write_text
from synthgap.report.html import audit_section
from synthgap.report.html_base import img_tag, md_to_html_table, page_head
from synthgap.report.plots import plot_bars
from synthgap.report.tables import md_table

COLUMNS = ["backbone", "accuracy", "auc", "f1_synthetic", "average_precision", "jpeg q50 accuracy", "train_seconds"]


def compare_backbones(
    data: DetectorData, cfg: DetectorConfig, backbones: list[str], out: str | Path, *, progress: bool = True
) -> list[dict]:
    """Train and evaluate each backbone into out/<backbone>/ (a finished one with the same config is
    kept, so a re-run resumes); write comparison.md/.json, comparison.png and report.html."""
    out = Path(out)
    rows = []
    for name in backbones:
        bcfg = dataclasses.replace(cfg, backbone=name)
        check_detector_config(bcfg)
    for name in backbones:
        bcfg = dataclasses.replace(cfg, backbone=name)
        sub = out / name
        if (sub / "detector.json").exists() and run_folder(sub).matches(bcfg, data=data_record(data)):
            meta = json.loads((sub / "detector.json").read_text())
        else:
            meta = run_detector(data, bcfg, sub, progress=progress, audit_page=False)
        m = meta["metrics"]
        jpeg50 = next((r["accuracy"] for r in meta["robustness"] if r["test set"] == "jpeg q50"), None)
        rows.append(
            {
                "backbone": name,
                "accuracy": m["accuracy"],
                "auc": m["auc"],
                "f1_synthetic": m["f1_synthetic"],
                "average_precision": m["average_precision"],
                "jpeg q50 accuracy": jpeg50,
                "train_seconds": meta["training"]["seconds"],
                "pretrained": meta["architecture"]["pretrained"],
            }
        )
    table = md_table(
        rows, COLUMNS, percent=("accuracy", "auc", "f1_synthetic", "average_precision", "jpeg q50 accuracy")
    )
    write_json(out / "comparison.json", rows)
    write_text(
        out / "comparison.md", "# Backbone comparison\n\nTest split, in %, same head, data and budget.\n\n" + table
    )
    plot_bars(
        rows, "backbone", ["accuracy", "auc", "f1_synthetic"], out / "comparison.png", title="real vs synthetic: test"
    )
    audit = audit_record(data.audit, cfg.dedupe)
    if data.audit:
        data.audit.write(out / "audit")
    links = "".join(
        f'<li><a href="{html.escape(r["backbone"])}/report.html">{html.escape(r["backbone"])}</a></li>' for r in rows
    )
    write_text(
        out / "report.html",
        page_head("synthgap backbone comparison")
        + f"""
<h1>Backbone comparison</h1><p>Test split, in %, same head, data and training budget; threshold chosen on validation.</p>
{md_to_html_table(table)}<figure style="max-width:700px">{img_tag(out / "comparison.png")}</figure>
<h2>Per backbone</h2><ul>{links}</ul>
{audit_section(audit, out / "audit" / "audit.html")}</body></html>
""",
    )
    return rows
