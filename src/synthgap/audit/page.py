"""What an audit shows a person: a few lines on the terminal, and audit.html with the pairs side by side."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from synthgap.audit.result import KIND_ABOUT, KINDS, Audit
from synthgap.io import write_text
from synthgap.report.html import page_head

PER_GROUP = 40  # pairs with thumbnails per kind and match on the page (all are in audit.json)
THUMB = 96  # CSS pixels per thumbnail; 32 px images are scaled up without smoothing


def kinds_table(summary: dict) -> list[tuple[str, int, int]]:
    """(kind, exact, near) for every kind that occurs, worst first."""
    counts = summary["counts"]
    return [
        (k, counts["exact"].get(k, 0), counts["near"].get(k, 0))
        for k in KINDS
        if counts["exact"].get(k, 0) or counts["near"].get(k, 0)
    ]


def summary_lines(summary: dict) -> list[str]:
    """The audit in a few lines, for the terminal and the logs."""
    n_parts = len(summary["parts"])
    took = "from the cache" if summary["from_cache"] else f"{summary['seconds']:.0f} s"
    lines = [
        f"audited {summary['images']:,} images in {n_parts} part{'s' * (n_parts != 1)} ({took}): "
        f"{summary['pairs']['exact']:,} exact and {summary['pairs']['near']:,} near twin pairs, "
        f"{summary['label_conflicts']:,} with two labels"
    ]
    for kind, exact, near in kinds_table(summary):
        lines.append(f"  {kind:<15} {exact:>7,} exact {near:>7,} near   ({KIND_ABOUT[kind]})")
    sizes = {p["name"]: p["n"] for p in summary["parts"]}
    for name, n in summary["test_images_with_training_twin"].items():
        if n:
            lines.append(
                f"  {n:,} of {sizes[name]:,} test images of {name} ({100 * n / max(sizes[name], 1):.1f}%) "
                "have a twin in a training split"
            )
    for name, r in summary.get("removed", {}).items():
        lines.append(f"  removed {r['removed']:,} from {name} ({r['why']}); {r['kept']:,} kept")
    return lines


def _thumb(x) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" width="{THUMB}" height="{THUMB}" alt="">'


def _side(audit: Audit, part: int, index: int) -> str:
    p = audit.parts[part]
    where = audit.path(part, index) or f"#{index}"
    return (
        f'<td class="pic">{_thumb(p.data.images[index])}</td>'
        f'<td class="who"><b>{html.escape(p.name)}</b><br>{html.escape(audit.label(part, index))}'
        f'<br><span class="path">{html.escape(where)}</span></td>'
    )


def counts_html(summary: dict) -> str:
    """The counts table and the leakage lines: also embedded in the experiments' reports."""
    rows = "".join(
        f'<tr><td>{k}</td><td>{e:,}</td><td>{n:,}</td><td style="text-align:left">{html.escape(KIND_ABOUT[k])}</td></tr>'
        for k, e, n in kinds_table(summary)
    )
    table = (
        (
            f"<table><thead><tr><th>kind</th><th>exact</th><th>near</th><th>what it is</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        if rows
        else "<p class=ok>No twins found.</p>"
    )
    sizes = {p["name"]: p["n"] for p in summary["parts"]}
    leaks = "".join(
        f"<li>{n:,} of {sizes[k]:,} test images of <b>{html.escape(k)}</b> ({100 * n / max(sizes[k], 1):.1f}%) "
        "have a twin in a training split</li>"
        for k, n in summary["test_images_with_training_twin"].items()
        if n
    )
    removed = "".join(
        f"<li>removed {r['removed']:,} from <b>{html.escape(k)}</b> ({html.escape(r['why'])}); {r['kept']:,} kept</li>"
        for k, r in summary.get("removed", {}).items()
    )
    out = table
    if leaks:
        out += f'<div class="warn"><ul>{leaks}</ul></div>'
    if summary["label_conflicts"]:
        out += f'<p class="warn">{summary["label_conflicts"]:,} twin pairs carry two different labels.</p>'
    if removed:
        out += f"<p>With <code>dedupe: drop</code>:</p><ul>{removed}</ul>"
    return out


def write_page(audit: Audit, path: str | Path) -> Path:
    """audit.html: the counts, the parts, and the pairs in a section per kind and match (worst first),
    at most PER_GROUP each, with the two images side by side."""
    path = Path(path)
    summary = audit.summary()
    kinds, same, leaks = audit.kinds(), audit.same_labels(), audit.leaks()
    groups: dict[tuple[str, bool], list[int]] = {}
    for k in audit.order().tolist():
        groups.setdefault((kinds[k], bool(audit.exact[k])), []).append(k)
    sections = []
    for (kind, exact), members in groups.items():
        rows = []
        for k in members[:PER_GROUP]:
            flags = ("leak " if leaks[k] else "") + ("" if same[k] else "conflict")
            match = "exact" if audit.exact[k] else f"{audit.hamming[k]} bits, r = {audit.correlation[k]:.3f}"
            rows.append(
                f'<tr class="{flags.strip()}">{_side(audit, int(audit.a_part[k]), int(audit.a_index[k]))}'
                f"{_side(audit, int(audit.b_part[k]), int(audit.b_index[k]))}"
                f'<td class="who">{match}{"<br><b>labels differ</b>" if not same[k] else ""}</td></tr>'
            )
        shown = f"the first {PER_GROUP} of {len(members):,}" if len(members) > PER_GROUP else f"{len(members):,}"
        sections.append(
            f"<h3>{kind}, {'exact' if exact else 'near'}: {shown}</h3><p>{html.escape(KIND_ABOUT[kind])}.</p>"
            f"<table><tbody>{''.join(rows)}</tbody></table>"
        )
    parts = "".join(
        f"<tr><td>{html.escape(p['name'])}</td><td>{p['domain']}</td><td>{p['n']:,}</td><td>{p['skipped']}</td>"
        f"<td>{'reference' if p['reference'] else ''}</td></tr>"
        for p in summary["parts"]
    )
    style = (
        "<style>td.pic { padding: 2px; } td.pic img { image-rendering: pixelated; display: block; }"
        " td.who, td.text { text-align: left; font-size: 0.85em; max-width: 18em; overflow-wrap: anywhere; }"
        " .path { color: #666; } tr.leak td { background: #fff3cd; } tr.conflict td { background: #fde2e1; }</style>"
    )
    page = (
        page_head("synthgap data audit")
        + style
        + f"""
<h1>Data audit</h1>
<p class=lead>{summary["images"]:,} images: {summary["pairs"]["exact"]:,} exact twin pairs (the same pixels at their
native size) and {summary["pairs"]["near"]:,} near ones (perceptual hashes within {audit.settings.radius} bits, confirmed
by a pixel correlation of at least {audit.settings.min_correlation:g} at the best small shift).</p>
{counts_html(summary)}
<h2>Parts</h2>
<table><thead><tr><th>part</th><th>domain</th><th>images</th><th>skipped files</th><th></th></tr></thead><tbody>{parts}</tbody></table>
<h2>Pairs</h2>
<p>By kind, worst first: test images with a twin in a training split (yellow), twins with two labels (red), exact
before near, the closest first. audit.json lists every pair with its paths and distances.</p>
{"".join(sections) or "<p class=ok>None.</p>"}
</body></html>
"""
    )
    write_text(path, page)
    return path
