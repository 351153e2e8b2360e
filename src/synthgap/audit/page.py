"""audit.html: what an audit shows a person, the pairs side by side (its summary in text: audit.summary)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from synthgap.audit.summary import KIND_ABOUT, counts_html
from synthgap.io import write_text
from synthgap.report.html_base import page_head

PER_GROUP = 40  # pairs with thumbnails per kind and match on the page (all are in audit.json)
THUMB = 96  # CSS pixels per thumbnail; 32 px images are scaled up without smoothing


def _thumb(x) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" width="{THUMB}" height="{THUMB}" alt="">'


def _side(audit, part: int, index: int) -> str:
    p = audit.parts[part]
    where = audit.path(part, index) or f"#{index}"
    return (
        f'<td class="pic">{_thumb(p.data.images[index])}</td>'
        f'<td class="who"><b>{html.escape(p.name)}</b><br>{html.escape(audit.label(part, index))}'
        f'<br><span class="path">{html.escape(where)}</span></td>'
    )


def write_page(audit, path: str | Path) -> Path:
    """audit.html of an Audit (audit.result): the counts, the parts, and the pairs in a section per kind and
    match (worst first), at most PER_GROUP each, with the two images side by side."""
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
