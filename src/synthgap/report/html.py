"""The report of a transfer output folder: summary.md, the fraction plot and a self-contained report.html."""

from __future__ import annotations

import html
import json
from pathlib import Path

from synthgap import SynthgapError
from synthgap.experiments.scarcity import curve_rows, headline
from synthgap.io import write_text
from synthgap.report.html_base import img_tag, md_to_html_table, page_head
from synthgap.report.plots import plot_accuracy_vs_fraction, plot_scarcity_curve
from synthgap.report.tables import aggregate, arms_table, markdown_table, scarcity_table

GENERATOR_RECORD = "generator.json"  # written by `synthgap pipeline` beside the study when it trained the generator


def audit_lead(summary: dict | None) -> str:
    """One sentence for a report's lead: on what test images its numbers hold."""
    if not summary:
        return ""
    if summary.get("audited") is False:
        return " <b>The data was not audited</b> (dedupe: off): test images may have twins in the training data."
    leaked = sum((summary.get("test_images_with_training_twin") or {}).values())
    if not leaked:
        return " The audit found no test image with a twin in the training data."
    verb = (
        "removed first" if summary.get("dedupe") == "drop" else "kept (dedupe: warn), so the test figures are inflated"
    )
    return f" {leaked:,} test images with a twin in the training data were {verb}; see the data audit below."


def audit_section(summary: dict | None, page: Path) -> str:
    """The data audit's counts in a report (environment.json's "audit"), linking to its page of pairs."""
    from synthgap.audit import counts_html

    if not summary:
        return ""
    if summary.get("audited") is False:
        return (
            "<h2>Data audit</h2><p class=warn>Not audited (<code>dedupe: off</code>): duplicates and test images "
            "with training twins were neither looked for nor removed.</p>"
        )
    link = (
        f' <a href="{html.escape(page.parent.name)}/{html.escape(page.name)}">The pairs, side by side.</a>'
        if page.exists()
        else ""
    )
    return (
        f"<h2>Data audit</h2><p>Exact twins (the same pixels) and near twins in the data this run used, before "
        f"training (<code>dedupe: {html.escape(str(summary.get('dedupe')))}</code>).{link}</p>" + counts_html(summary)
    )


def audit_markdown(summary: dict | None) -> str:
    from synthgap.audit import summary_lines

    if not summary:
        return ""
    if summary.get("audited") is False:
        return "\n## Data audit\n\nNot audited (dedupe: off).\n"
    return f"\n## Data audit (dedupe: {summary.get('dedupe')})\n\n```\n" + "\n".join(summary_lines(summary)) + "\n```\n"


def _spread_note(rows: list[dict]) -> str:
    seeds = {len(r["seeds"]) for r in rows}
    if seeds == {1}:
        return "one seed per row (no spread: run more seeds to see how much a result varies)"
    return "mean ± standard deviation over seeds" + ("" if min(seeds) > 1 else " (a row of one seed shows no spread)")


def generator_note(out: Path, cas: float, real_to_real: float) -> str:
    """What the synthetic accuracy means when the pipeline trained the generator (its GENERATOR_RECORD): the
    CAS against chance and against as many real images, how long the generator trained, a warning when its
    time limit cut it short, and where the longer recipe's figures are."""
    path = out / GENERATOR_RECORD
    if not path.is_file():
        return ""
    g = json.loads(path.read_text())
    chance = 1 / max(1, g.get("classes", 1))
    note = (
        f"<p>The synthetic images come from synthgap's own diffusion generator ({html.escape(str(g.get('preset')))} "
        f"preset), trained {g.get('steps')} steps ({g.get('minutes')} min here) on the real training images. "
        f"Trained on its images alone, the classifier's accuracy on real photos (the CAS) is "
        f"<b>{100 * (cas - chance):+.1f} points</b> from chance ({100 * chance:.1f}%, {g.get('classes')} classes) and "
        f"<b>{100 * (cas - real_to_real):+.1f}</b> from the same number of real images. A longer-trained generator "
        f"closes more of the gap: the hour-long recipe (<code>configs/pipeline-builtin.yaml</code>) and its figures "
        f"are in docs/benchmarks.md#builtin-generator.</p>"
    )
    if g.get("cut_short"):
        note += (
            f"<p class=warn><b>Cut short:</b> the generator's time limit stopped its training at step "
            f"{g.get('steps')} of {g.get('steps_asked')}. These figures measure a less-trained generator than "
            f"the config asks for, and another machine would stop elsewhere: run the same command again to finish "
            f"it (it resumes).</p>"
        )
    return note


SCARCITY_NOTE = (
    "Accuracy on real test photos in %, mean ± standard deviation over the seeds that learned. A run that "
    '"did not learn" (its validation accuracy never left chance) is shown as such and left out of the means '
    "and of every exchange rate. The exchange rate is how many real images per class the real-only runs need "
    "to match a row's accuracy (interpolated in log k between the two points of the real-only curve that "
    "bracket it, never extrapolated: beyond the curve it is a bound, < or >); in brackets the smallest and "
    "largest of the per-seed estimates (the spread over seeds, not a confidence interval). A rate from a single "
    "seed has no spread and is not reported. Every run trains the same architecture, with a budget fitted to its "
    "own training set."
)
ARMS_NOTE = (
    'Ways to close the gap, each beside the real-only runs at its k; "needs" is what an arm needs beyond the '
    "synthetic set. Transductive arms re-estimate the model's BatchNorm statistics on unlabelled real images before "
    "testing: they adapt to the real domain, so their accuracy is not that of a model trained on synthetic "
    "images alone."
)


def scarcity_section(
    rows: list[dict], out: Path, chance: float | None, real_share: float | None = None
) -> tuple[str, str]:
    """The opening of a study with a scarcity curve (rows of curve_rows): the headline, scarcity_curve.png,
    the curve's table and the gap-closing arms' table, as (html, markdown). real_share: the share of real
    images in every batch of the runs with both kinds (curve_real_share), if any."""
    plot_scarcity_curve(rows, out / "scarcity_curve.png", chance)
    line = headline(rows)
    curve_md, arms_md = scarcity_table(rows), arms_table(rows)
    note = SCARCITY_NOTE + (
        f" In the runs of real and synthetic images, {real_share:.0%} of every batch is real images, drawn with "
        "replacement (curve_real_share)."
        if real_share
        else ""
    )
    md = f"{line}\n\n## Real images per class\n\n{note}\n\n{curve_md}"
    page = (
        f"<p class=lead>{html.escape(line)}</p>\n"
        f'<figure style="max-width:760px">{img_tag(out / "scarcity_curve.png")}<figcaption>Accuracy on real test '
        f"photos against the real training images per class, with and without the synthetic set</figcaption>"
        f"</figure>\n<h2>Real images per class</h2>\n<p>{html.escape(note)}</p>\n{md_to_html_table(curve_md)}\n"
    )
    if arms_md:
        md += f"\n## Gap-closing arms\n\n{ARMS_NOTE}\n\n{arms_md}"
        page += f"<h2>Gap-closing arms</h2>\n<p>{html.escape(ARMS_NOTE)}</p>\n{md_to_html_table(arms_md)}\n"
    return page, md + "\n"


def write_report(out_dir: str | Path) -> Path:
    """(Re)build summary.md, accuracy_vs_fraction.png and report.html from summary.json and the runs; a study
    with a real-data scarcity curve opens with it (scarcity_section)."""
    out = Path(out_dir)
    summary = out / "summary.json"
    if not summary.exists():
        raise SynthgapError(f"{out}: no summary.json (is this a `synthgap transfer` output folder?)")
    records = json.loads(summary.read_text())
    curve = curve_rows(records)
    rows = aggregate([r for r in records if r.get("real_per_class") is None])  # the fixed-size fraction arms
    md = markdown_table(rows)
    env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").exists() else {}
    scarcity, scarcity_md = "", ""
    if curve:
        classes = env.get("data", {}).get("real_test", {}).get("class_counts")
        share = max((r["real_share"] for r in records if r.get("real_share")), default=None)
        scarcity, scarcity_md = scarcity_section(curve, out, 1 / len(classes) if classes else None, share)
    fractions_md = ""
    if rows:
        fractions_md = f"Test accuracy and macro-F1 in %, {_spread_note(rows)}.\n\n" + md
        if curve:
            fractions_md = "## Fixed-size training sets\n\n" + fractions_md
        plot_accuracy_vs_fraction(rows, out / "accuracy_vs_fraction.png")
    write_text(
        out / "summary.md", f"# Transfer study\n\n{scarcity_md}{fractions_md}" + audit_markdown(env.get("audit"))
    )

    cfg = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
    gap = ""
    by = {r["training_set"]: r for r in rows}
    if "real" in by and "synthetic" in by:
        rr, sr = by["real"]["accuracy_real_mean"], by["synthetic"]["accuracy_real_mean"]
        n = f" ({by['real']['n_train']})" if by["real"].get("n_train") else ""
        gap = (
            f"<p class=lead>Trained on synthetic images, the classifier reaches <b>{100 * sr:.1f}%</b> on real test "
            f"photos, against <b>{100 * rr:.1f}%</b> when trained on the same number{n} of real ones: a gap of "
            f"<b>{100 * (rr - sr):.1f} points</b>. The gap is what the generated images fail to teach about real "
            f"ones (their look, their variety), with everything else equal: the same classifier, budget and "
            f"test photos.{audit_lead(env.get('audit'))}</p>"
        )
        gap += generator_note(out, sr, rr)
    baseline = next((r for r in rows if r["train_domain"] == "real-baseline"), None)
    if baseline:
        gap += (
            f"<p>With <b>{baseline['n_train']}</b> real training images (more than the synthetic set holds; that "
            f"run's budget is the epochs times its own size), the same classifier reaches "
            f"<b>{100 * baseline['accuracy_real_mean']:.1f}%</b> on the real test photos: the rows of equal size "
            f"measure the gap, this one what more real data gives.</p>"
        )
    if (out / "samples.png").exists():
        names = [
            html.escape(str(env.get("data", {}).get(f"{d}_train", {}).get("name", d))) for d in ("real", "synthetic")
        ]
        gap += (
            f'<figure style="max-width:760px">{img_tag(out / "samples.png")}<figcaption>The first training images '
            f"of each class, real beside synthetic: {names[0]} (left), {names[1]} (right)</figcaption></figure>"
        )
    confusions = []
    for run in sorted((out / "runs").glob("*/seed*")):
        for png in sorted(run.glob("confusion_*.png")):
            confusions.append(
                f"<figure>{img_tag(png)}<figcaption>{html.escape(str(png.relative_to(out)))}</figcaption></figure>"
            )
    data_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v.get('spec')))}</td><td>{v.get('n')}</td>"
        f"<td>{v.get('skipped')}</td><td><code>{str(v.get('sha256'))[:16]}</code></td></tr>"
        for k, v in env.get("data", {}).items()
    )
    fractions = (
        f"""<h2>{"Fixed-size training sets" if curve else "Summary"}</h2>
<p>Test accuracy and macro-F1 in %, {_spread_note(rows)}. Every row trains the same architecture with the same
budget ({env.get("budget_images_per_run", "?")} images processed) and preprocessing{", except the real-only run on more images" if baseline else ""}.</p>
{md_to_html_table(md)}
<figure style="max-width:700px">{img_tag(out / "accuracy_vs_fraction.png")}</figure>
"""
        if rows
        else ""
    )
    versions = ", ".join(f"{k} {env[k]}" for k in ("synthgap", "python", "torch", "torchvision", "numpy") if k in env)
    audit = audit_section(env.get("audit"), out / "audit" / "audit.html")
    page = (
        page_head("synthgap transfer report")
        + f"""
<h1>Synthetic vs real: transfer study</h1>
{scarcity}{gap}
{fractions}<h2>Data</h2>
<table><thead><tr><th>set</th><th>spec</th><th>images</th><th>skipped files</th><th>sha256</th></tr></thead>
<tbody>{data_rows}</tbody></table>
{audit}
<h2>Confusion matrices</h2>
{"".join(confusions)}
<h2>Reproduce</h2>
<p>{html.escape(versions)}; config hash <code>{html.escape(str(env.get("config_hash", "")))}</code>.</p>
<pre>{html.escape(cfg)}</pre>
</body></html>
"""
    )
    write_text(out / "report.html", page)
    return out / "report.html"
