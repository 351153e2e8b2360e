"""The detector's report, in the core's format: tables in Markdown, plots as PNG, one report.html."""
from __future__ import annotations

import html
import json
from pathlib import Path

from synthgap import SynthgapError
from synthgap.io import write_text
from synthgap.report.html import _img, _md_to_html_table, audit_lead, audit_markdown, audit_section, page_head
from synthgap.report.plots import plot_confusion, plot_roc_calibration


def md_table(rows: list[dict], columns: list[str], percent: tuple[str, ...] = ()) -> str:
    """A Markdown table of `rows`; columns in `percent` are shown in % with 2 decimals."""
    def cell(r, c):
        v = r.get(c)
        if isinstance(v, float):
            return f"{100 * v:.2f}" if c in percent else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def robustness_md(rows: list[dict]) -> str:
    return md_table(rows, ["test set", "accuracy", "auc", "recall_real", "recall_synthetic"],
                    percent=("accuracy", "auc", "recall_real", "recall_synthetic"))


def _audit_html(audit: dict) -> str:
    cls = "warn" if audit.get("biased") else "ok"
    text = html.escape(str(audit.get("verdict", "not run")))
    on = html.escape(str(audit.get("on", "")))
    per = audit.get("per_feature") or {}
    table = md_table([{"feature": k, "balanced accuracy": v} for k, v in per.items()], ["feature", "balanced accuracy"],
                     percent=("balanced accuracy",)) if per else ""
    return f'<p class="{cls}">{text}</p><p>Audited: {on}.</p>' + (_md_to_html_table(table) if table else "")


def write_detector_report(out: str | Path) -> Path:
    out = Path(out)
    if not (out / "metrics.json").exists() or not (out / "detector.json").exists():
        raise SynthgapError(f"{out}: no metrics.json / detector.json (is this a `synthgap detector train` folder?)")
    metrics = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "detector.json").read_text())
    audit = json.loads((out / "format_bias.json").read_text()) if (out / "format_bias.json").exists() else {}
    env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").exists() else {}
    test = metrics["test"]
    name = meta["architecture"]["backbone"]
    plot_confusion(test, out / "confusion.png", title=f"{name} test")
    plot_roc_calibration(metrics["curves"], test, out / "roc_calibration.png", title=f"{name} test")
    rob = robustness_md(metrics["robustness"])
    headline = (f"Test accuracy **{100 * test['accuracy']:.2f}%**, AUC **{test['auc']:.4f}**, average precision "
                f"{test['average_precision']:.4f}, F1 (synthetic) {test['f1_synthetic']:.4f}, at threshold "
                f"{metrics['threshold']:.3f} chosen on validation (accuracy at 0.5: {100 * metrics['test_at_0.5']['accuracy']:.2f}%)."
                + audit_lead(env.get("audit")))
    write_text(out / "summary.md", f"# Detector: {name}\n\n{headline}\n\n## Robustness (test set)\n\n{rob}\n"
                                   f"## Format-bias audit\n\n{audit.get('verdict', 'not run')}\n"
                                   + audit_markdown(env.get("audit")))
    stages = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['best_epoch']}</td><td>{v['seconds']:.0f}</td>"
                     f"<td>{v['images_per_second']:.0f}</td><td>{100 * (v['best_val_accuracy'] or 0):.2f}</td></tr>"
                     for k, v in metrics["history"].items())
    cfg = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
    page = page_head(f"synthgap detector report: {name}") + f"""
<h1>Real or AI-generated: {html.escape(name)} detector</h1>
<p class=lead>{html.escape(headline).replace('**', '')}</p>
<figure>{_img(out / 'roc_calibration.png')}</figure><figure>{_img(out / 'confusion.png')}</figure>
<h2>Robustness</h2><p>The test set re-encoded or degraded, same threshold.</p>
{_md_to_html_table(rob)}
{audit_section(env.get("audit"), out / "audit" / "audit.html")}
<h2>Format-bias audit</h2>{_audit_html(audit)}
<h2>Training</h2>
<table><thead><tr><th>stage</th><th>best epoch</th><th>seconds</th><th>img/s</th><th>best val acc %</th></tr></thead>
<tbody>{stages}</tbody></table>
<h2>Reproduce</h2><p>{html.escape(json.dumps(meta.get('versions', {})))}; config hash <code>{html.escape(str(meta.get('config_hash')))}</code></p>
<pre>{html.escape(cfg)}</pre>
</body></html>
"""
    write_text(out / "report.html", page)
    return out / "report.html"
