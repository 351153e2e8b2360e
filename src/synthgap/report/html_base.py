"""The HTML every synthgap report page shares: one look (STYLE, page_head), images embedded in the page,
and Markdown tables as HTML. Imports nothing of synthgap: every report, the audit's page too, builds on it."""

from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; } img { max-width: 100%; }
figure { display: inline-block; margin: 0.5em; max-width: 520px; } figcaption { font-size: 0.8em; color: #666; }
.lead { font-size: 1.15em; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.6em 1em; } .ok { background: #e8f5e9; padding: 0.6em 1em; }
"""


def page_head(title: str) -> str:
    """The opening of every synthgap report page: one look for all of them."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n"
    )


def img_tag(path: Path) -> str:
    """An <img> of a PNG file, embedded in the page (base64): a report is one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def md_to_html_table(md: str) -> str:
    """A Markdown table (synthgap.report.tables) as an HTML table, every cell escaped."""
    lines = [line for line in md.strip().splitlines() if not set(line) <= set("|-: ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
