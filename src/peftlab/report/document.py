"""A report as a list of blocks, rendered to Markdown (plots as files beside it) or to one
self-contained HTML page (plots inlined as base64 PNG, no external resource). Pure: blocks in, text out.

Text may contain **bold** and `code`; everything else is literal (escaped in HTML).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    left: int = 1  # the first `left` columns are text (left-aligned); the rest numbers (right-aligned)


@dataclass(frozen=True)
class Figure:
    name: str  # file name stem, e.g. "accuracy-vs-trainable"
    title: str
    png: bytes = field(repr=False)
    caption: str = ""


Block = Heading | Para | Bullets | Table | Figure


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], figure_dir: str) -> str:
    """Markdown; figures refer to '<figure_dir>/<name>.png' (written by the caller)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            align = ["---"] * b.left + ["---:"] * (len(b.header) - b.left)
            lines = ["| " + " | ".join(map(_md_cell, b.header)) + " |", "|" + "|".join(align) + "|"]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.title}]({figure_dir}/{b.name}.png)\n\n**{b.title}.** {b.caption}".rstrip())
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2em auto;
max-width:1240px;padding:0 1.5em;color:#1b1f24;line-height:1.45;background:#fff}
h1{font-size:1.7em;border-bottom:2px solid #d0d7de;padding-bottom:.25em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.08em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.88em}
th,td{border:1px solid #d0d7de;padding:.3em .5em}
td{white-space:nowrap}
th{background:#f3f5f7;vertical-align:bottom}
tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
.figures{display:flex;flex-wrap:wrap;gap:1em 1.5em}
figure{flex:1 1 520px;max-width:640px;margin:.4em 0 .8em}
figure img{width:100%;height:auto;border:1px solid #e1e4e8}
figcaption{font-size:.85em;color:#57606a}
code{background:#f3f5f7;padding:0 .25em;border-radius:3px}
li{margin:.15em 0}
"""


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page with everything inlined: opens with no network."""
    body: list[str] = []
    for i, b in enumerate(blocks):
        if isinstance(b, Figure) and (i == 0 or not isinstance(blocks[i - 1], Figure)):
            body.append('<div class="figures">')
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            num = ' class="num"'
            rows = "".join(
                "<tr>"
                + "".join(f"<td{num if i >= b.left else ''}>{_inline(c)}</td>" for i, c in enumerate(r))
                + "</tr>"
                for r in b.rows
            )
            body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption><strong>{_inline(b.title)}.</strong> {_inline(b.caption)}</figcaption>"
            body.append(
                f'<figure id="{b.name}"><img alt="{html.escape(b.title)}" '
                f'src="data:image/png;base64,{data}">{cap}</figure>'
            )
            if i + 1 == len(blocks) or not isinstance(blocks[i + 1], Figure):
                body.append("</div>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
