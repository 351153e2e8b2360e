"""The detector's report, in the core's format: tables in Markdown, plots as PNG, one report.html."""

from __future__ import annotations

import html
import json
from pathlib import Path

from synthgap import SynthgapError
from synthgap.io import write_text
from synthgap.report.html import audit_lead, audit_markdown, audit_section
from synthgap.report.html_base import img_tag, md_to_html_table, page_head
from synthgap.report.plots import plot_confusion, plot_risk_coverage, plot_roc_calibration
from synthgap.report.tables import md_table


def real_bound_lead(bound: dict | None) -> str:
    """The answers' "real" bound (real_quantile), in one sentence; empty without one."""
    if not bound:
        return ""
    return (
        f' It answers "real" only under P {bound["p"]:.3f}, which {bound["quantile"]:.0%} of its '
        f'{bound["n_val_real"]} validation real images stay under, and "unsure" between that and the threshold.'
    )


def robustness_md(rows: list[dict]) -> str:
    return md_table(
        rows,
        ["test set", "accuracy", "auc", "recall_real", "recall_synthetic"],
        percent=("accuracy", "auc", "recall_real", "recall_synthetic"),
    )


def per_source_md(rows: list[dict]) -> str:
    return md_table(rows, ["source", "side", "n", "accuracy", "auc"], percent=("accuracy", "auc"))


def probes_md(meta: dict, test: dict) -> str:
    """The detector beside its shortcut probes: a table and the one line saying what it is credited with."""
    probes = meta.get("probes")
    if not probes:
        return ""
    content, metadata = probes.get("content") or {}, probes.get("metadata") or {}
    rows = [{"model": "this detector", "auc": test["auc"], "accuracy": test["accuracy"]}]
    if "auc" in content:
        rows.append(
            {
                "model": f"content probe ({content['image_size']} px thumbnails)",
                "auc": content["auc"],
                "accuracy": content["accuracy"],
            }
        )
    if metadata.get("balanced_accuracy") is not None:
        rows.append(
            {"model": "metadata probe, files as stored (balanced accuracy)", "accuracy": metadata["balanced_accuracy"]}
        )
    if metadata.get("seen_balanced_accuracy") is not None:
        rows.append(
            {
                "model": "metadata probe, what the model sees (balanced accuracy)",
                "accuracy": metadata["seen_balanced_accuracy"],
            }
        )
    table = md_table(rows, ["model", "auc", "accuracy"], percent=("auc", "accuracy"))
    return f"{probes['credited']}\n\n{table}\n"


def _audit_html(audit: dict) -> str:
    cls = "warn" if audit.get("biased") else "ok"
    text = html.escape(str(audit.get("verdict", "not run")))
    on = html.escape(str(audit.get("on", "")))
    per = audit.get("per_feature") or {}
    table = (
        md_table(
            [{"feature": k, "balanced accuracy": v} for k, v in per.items()],
            ["feature", "balanced accuracy"],
            percent=("balanced accuracy",),
        )
        if per
        else ""
    )
    return f'<p class="{cls}">{text}</p><p>Audited: {on}.</p>' + (md_to_html_table(table) if table else "")


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
    if metrics.get("selective"):
        plot_risk_coverage({"test split": metrics["selective"]}, out / "risk_coverage.png", title=f"{name} test")
    rob = robustness_md(metrics["robustness"]) if metrics.get("robustness") else ""
    probes = probes_md(meta, test)
    sources = per_source_md(metrics.get("per_source") or [])
    headline = (
        f"Test accuracy **{100 * test['accuracy']:.2f}%**, AUC **{test['auc']:.4f}**, average precision "
        f"{test['average_precision']:.4f}, F1 (synthetic) {test['f1_synthetic']:.4f}, at threshold "
        f"{metrics['threshold']:.3f} chosen on validation (accuracy at 0.5: {100 * metrics['test_at_0.5']['accuracy']:.2f}%)."
        + real_bound_lead(meta.get("real_bound"))
        + audit_lead(env.get("audit"))
    )
    chain = meta["preprocessing"].get("input_why", "input: resize")
    rob_on = (
        f"On {metrics.get('robustness_on', 'all test images')}, same threshold."
        if metrics.get("robustness")
        else "Not computed for this run (run_detector(..., robustness=False))."
    )
    write_text(
        out / "summary.md",
        f"# Detector: {name}\n\n{headline}\n\nInput: {chain}.\n\n"
        + (f"## Beside its shortcut probes\n\n{probes}\n" if probes else "")
        + (f"## Per source (test split)\n\n{sources}\n" if sources else "")
        + f"## Robustness (test set)\n\n{rob_on}\n\n{rob}\n"
        f"## Format-bias audit\n\n{audit.get('verdict', 'not run')}\n" + audit_markdown(env.get("audit")),
    )
    stages = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['best_epoch']}</td><td>{v['seconds']:.0f}</td>"
        f"<td>{v['images_per_second']:.0f}</td><td>{100 * (v['best_val_accuracy'] or 0):.2f}</td></tr>"
        for k, v in metrics["history"].items()
    )
    cfg = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
    page = (
        page_head(f"synthgap detector report: {name}")
        + f"""
<h1>Real or AI-generated: {html.escape(name)} detector</h1>
<p class=lead>{html.escape(headline).replace("**", "")}</p>
<p>Input: {html.escape(chain)}.</p>
<figure>{img_tag(out / "roc_calibration.png")}</figure><figure>{img_tag(out / "confusion.png")}</figure>
{_probes_html(probes, sources, out)}
<h2>Robustness</h2><p>The test set re-encoded or degraded. {html.escape(rob_on)}</p>
{md_to_html_table(rob) if rob else ""}
{audit_section(env.get("audit"), out / "audit" / "audit.html")}
<h2>Format-bias audit</h2>{_audit_html(audit)}
<h2>Training</h2>
<table><thead><tr><th>stage</th><th>best epoch</th><th>seconds</th><th>img/s</th><th>best val acc %</th></tr></thead>
<tbody>{stages}</tbody></table>
<h2>Reproduce</h2><p>{html.escape(json.dumps(meta.get("versions", {})))}; config hash <code>{html.escape(str(meta.get("config_hash")))}</code></p>
<pre>{html.escape(cfg)}</pre>
</body></html>
"""
    )
    write_text(out / "report.html", page)
    return out / "report.html"


def _probes_html(probes: str, sources: str, out: Path) -> str:
    parts = []
    if probes:
        line, _, table = probes.partition("\n\n")
        parts.append(f"<h2>Beside its shortcut probes</h2><p>{html.escape(line)}</p>{md_to_html_table(table)}")
    if sources:
        parts.append(
            "<h2>Per source</h2><p>Accuracy of each source's test images at the threshold; a synthetic source's AUC "
            f"is against all the real test images.</p>{md_to_html_table(sources)}"
        )
    if (out / "risk_coverage.png").exists():
        parts.append(
            "<h2>Risk against coverage</h2><p>Accuracy on the images the detector decides, most confident first, "
            "against the share it decides; the dot is the content check's operating point (images it keeps as "
            f"inside its training domain).</p><figure>{img_tag(out / 'risk_coverage.png')}</figure>"
        )
    return "\n".join(parts)


def write_evaluation_report(out: str | Path, result: dict, meta: dict, env: dict) -> Path:
    """report.html and summary.md of `synthgap detector evaluate`."""
    out = Path(out)
    test = result["test"]
    name = meta["architecture"]["backbone"]
    plot_confusion(test, out / "confusion.png", title=f"{name} on new data")
    plot_roc_calibration(result["curves"], test, out / "roc_calibration.png", title=f"{name} on new data")
    dom = result["domain"]
    outside = (
        f" {dom['outside']:,} of {dom['checked']:,} images ({100 * dom['outside_fraction']:.1f}%) lie outside "
        f"the bundle's training domain ({', '.join(f'{k}: {v}' for k, v in dom['reasons'].items()) or '-'}): its "
        "answers on them are not to be trusted."
        if dom.get("outside")
        else ""
    )
    headline = (
        f"Accuracy **{100 * test['accuracy']:.2f}%** at the bundle's own threshold {result['threshold']:.3f} "
        f"(not re-tuned on this data), AUC **{test['auc']:.4f}**, average precision {test['average_precision']:.4f}, "
        f"on {test['n']:,} images.{outside}" + audit_lead(env.get("audit"))
    )
    sources = per_source_md(result["per_source"])
    rob = robustness_md(result["robustness"])
    if result.get("selective"):
        plot_risk_coverage(
            {"evaluated set": result["selective"]}, out / "risk_coverage.png", title=f"{name} on new data"
        )
    write_text(
        out / "summary.md",
        f"# Detector {name} on new data\n\n{headline}\n\n## Per source\n\n{sources}\n"
        f"## Robustness\n\n{rob}\n" + audit_markdown(env.get("audit")),
    )
    trained = meta.get("sources") or {}
    trained_on = "; ".join(f"{side}: {', '.join(v)}" for side, v in trained.items()) or "not recorded"
    chain = meta.get("preprocessing", {}).get("input_why", "input: resize")
    page = (
        page_head(f"synthgap detector evaluation: {name}")
        + f"""
<h1>{html.escape(name)} detector on new data</h1>
<p class=lead>{html.escape(headline).replace("**", "")}</p>
<p>Input: {html.escape(chain)}.</p>
<p>Trained on {html.escape(trained_on)}. Audited against its training data: {html.escape(str(result["audit_against_training_data"]))}.</p>
<figure>{img_tag(out / "roc_calibration.png")}</figure><figure>{img_tag(out / "confusion.png")}</figure>
<h2>Per source</h2><p>Accuracy of each source's images at the bundle's threshold; a synthetic source's AUC is against all the real images.</p>
{md_to_html_table(sources)}
{_probes_html("", "", out)}
<h2>Robustness</h2>{md_to_html_table(rob)}
{audit_section(env.get("audit"), out / "audit" / "audit.html")}
</body></html>
"""
    )
    write_text(out / "report.html", page)
    return out / "report.html"


def write_cross_report(out: str | Path, result: dict) -> Path:
    """cross.md, a heatmap of accuracy and of AUC per backbone, and report.html of `synthgap detector cross`."""
    import numpy as np

    from synthgap.report.plots import plot_matrix

    out = Path(out)
    sources, rows = result["sources"], result["rows"]
    figures, tables = [], []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        detectors = list(dict.fromkeys(r["detector"] for r in mine))
        for metric in ("accuracy", "auc"):
            values = np.full((len(detectors), len(sources)), np.nan)
            seen = np.zeros_like(values, dtype=bool)
            for r in mine:
                i, j = detectors.index(r["detector"]), sources.index(r["test_source"])
                values[i, j], seen[i, j] = r[metric], r["seen"]
            png = out / f"{backbone}_{metric}.png"
            plot_matrix(
                values,
                detectors,
                sources,
                png,
                title=f"{backbone}: {metric} (%); outlined = trained on it",
                marked=seen,
            )
            figures.append(f"<figure>{img_tag(png)}</figure>")
            tables.append(
                f"### {backbone}: {metric} (%)\n\n"
                + md_table(
                    [
                        {"detector": d, **{s: values[i, j] for j, s in enumerate(sources)}}
                        for i, d in enumerate(detectors)
                    ],
                    ["detector", *sources],
                    percent=tuple(sources),
                )
            )
    figures = [
        f"{on}_{m}"
        for on in ("unseen_leave_one_out", "unseen_single_source", "all_sources")
        for m in ("accuracy", "auc")
    ]
    summary = md_table(result["summary"], ["backbone", *figures], percent=tuple(figures))
    sizes = result["sizes"]
    about = (
        f"Real: {', '.join(result['real'])} ({sizes['test_real']:,} test images). Each detector: the same config and "
        f"budget, {sizes['train_per_side'] or 'all'} training images per side (its synthetic sources in equal shares), "
        "its threshold chosen on its own validation split. Each cell: the detector on the real test images and one "
        "source's test images, in %."
    )
    write_text(
        out / "cross.md",
        "# Generalisation matrix\n\n"
        + about
        + "\n\n## Unseen sources (the headline)\n\n"
        + summary
        + "\n"
        + "\n".join(tables),
    )
    page = (
        page_head("synthgap generalisation matrix")
        + f"""
<h1>How far the detectors carry: the generalisation matrix</h1>
<p class=lead>{html.escape(about)}</p>
<h2>Unseen sources</h2><p>Mean over the sources a detector never saw: each leave-one-out detector on its left-out
source, each single-source detector on the others.</p>{md_to_html_table(summary)}
<h2>Matrices</h2>{"".join(figures)}
{audit_section(result.get("audit"), out / "audit" / "audit.html")}
</body></html>
"""
    )
    write_text(out / "report.html", page)
    return out / "report.html"
