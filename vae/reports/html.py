"""A small HTML page builder shared by run and sweep reports.

A report is a folder: ``index.html`` plus the PNG and WAV files it references by
relative paths, so the folder can be copied, zipped or served from S3 as it is.
Text is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urlparse

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1240px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em;margin:1em 0 .4em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #d6d6d6;padding:3px 8px}
th{background:#f2f2f2;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.hl{background:#e8f6e8}img{max-width:100%;height:auto}figure{margin:.6em 0}figcaption{color:#555;font-size:12px}
.headline{font-size:1.1em;background:#eef5fb;border-left:4px solid #3a7bbf;padding:.5em .8em;margin:.6em 0}
details.prov{color:#555;font-size:13px;margin:.3em 0}details.prov dd{margin:0 0 .3em 1em;overflow-wrap:anywhere}
.gridwrap{overflow-x:auto;max-width:100%}.grid{display:grid;gap:6px;align-items:start}
.cell{border:1px solid #e2e2e2;border-radius:4px;padding:4px;text-align:center;font-size:12px;background:#fafafa}
.cell img{display:block;margin:0 auto 2px auto;image-rendering:pixelated;width:100%;height:auto}.cell audio{width:100%;height:40px}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}pre{overflow-x:auto}table{display:block;overflow-x:auto;max-width:100%}
.rowlabel{font-weight:600;align-self:center;font-size:12px}.bad{color:#b00}.note{color:#8a6d00}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
"""


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers to ``digits`` significant figures; None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


@dataclass(frozen=True)
class Cell:
    """One clip in a grid: its spectrogram image, its audio and a caption (all optional)."""

    image: str | None = None
    audio: str | None = None
    caption: str = ""
    bad: bool = False


class Page:
    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f"<p class='sub'>{html.escape(subtitle)}</p>")

    def headline(self, text: str) -> Page:
        """One sentence in a box under the title."""
        self.parts.append(f"<p class='headline' id='headline'>{html.escape(text)}</p>")
        return self

    def details(self, summary: str, items: Sequence[tuple[str, str]]) -> Page:
        """A collapsed block of ``(term, value)`` pairs under ``summary``."""
        body = "".join(f"<dt>{html.escape(k)}</dt><dd><code>{html.escape(v)}</code></dd>" for k, v in items)
        self.parts.append(f"<details class='prov'><summary>{html.escape(summary)}</summary><dl>{body}</dl></details>")
        return self

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> Page:
        ident = f" id='{html.escape(anchor)}'" if anchor else ""
        self.parts.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
        return self

    def text(self, text: str, cls: str | None = None) -> Page:
        c = f" class='{cls}'" if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> Page:
        self.parts.append(f"<p><code>{html.escape(text)}</code></p>")
        return self

    def bullets(self, items: Iterable[str], cls: str | None = None) -> Page:
        c = f" class='{cls}'" if cls else ""
        self.parts.append(f"<ul{c}>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
        return self

    def pre(self, text: str) -> Page:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def image(self, src: str, alt: str, caption: str = "", width: int | None = None) -> Page:
        w = f" style='max-width:{int(width)}px'" if width else ""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f"<figure><img src='{_attr(src)}' alt='{_attr(alt)}'{w}>{cap}</figure>")
        return self

    def audio(self, src: str, label: str = "") -> Page:
        self.parts.append(f"<p>{html.escape(label)} <audio controls preload='none' src='{_attr(src)}'></audio></p>")
        return self

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]], highlight: Iterable[int] = ()) -> Page:
        hl = set(highlight)
        out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
        for i, row in enumerate(rows):
            cells = "".join(
                f"<td class='num'>{html.escape(fmt(v))}</td>"
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                else f"<td>{html.escape(fmt(v))}</td>"
                for v in row
            )
            cls = " class='hl'" if i in hl else ""
            out.append(f"<tr{cls}>{cells}</tr>")
        self.parts.append("".join(out) + "</table>")
        return self

    def grid(
        self,
        row_labels: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        col_labels: Sequence[str] = (),
        cell_px: int = 180,
    ) -> Page:
        """Clips in a labelled grid: one row per label, each cell an image over an audio player; a grid wider
        than the page scrolls inside its own box."""
        n = max((len(r) for r in rows), default=0)
        style = f"grid-template-columns:64px repeat({n},minmax({cell_px}px,1fr))"
        out = [f"<div class='gridwrap'><div class='grid' style='{style}'>"]
        if col_labels:
            out.append("<div></div>" + "".join(f"<div class='rowlabel'>{html.escape(c)}</div>" for c in col_labels))
        for label, cells in zip(row_labels, rows):
            out.append(f"<div class='rowlabel'>{html.escape(label)}</div>")
            for c in cells:
                img = f"<img src='{_attr(c.image)}' alt='{_attr(c.caption or c.image)}'>" if c.image else ""
                aud = f"<audio controls preload='none' src='{_attr(c.audio)}'></audio>" if c.audio else ""
                cap = f"<div class='{'bad' if c.bad else ''}'>{html.escape(c.caption)}</div>" if c.caption else ""
                out.append(f"<div class='cell'>{img}{aud}{cap}</div>")
        self.parts.append("".join(out) + "</div></div>")
        return self

    def row(self, *images: tuple[str, str]) -> Page:
        """Images ``(src, alt)`` side by side."""
        self.parts.append(
            "<div class='plots'>"
            + "".join(
                f"<img src='{_attr(s)}' alt='{_attr(a)}' style='max-width:{100 // max(1, len(images)) - 1}%'>"
                for s, a in images
            )
            + "</div>"
        )
        return self

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(self.title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
        )

    def write(self, folder: str, name: str = "index.html") -> str:
        path = os.path.join(folder, name)
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.render())
        return path


def _attr(value: str) -> str:
    return html.escape(str(value), quote=True)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.links.append(value)


def links(html_text: str) -> list[str]:
    """Every ``src`` and ``href`` value in a page, in order."""
    parser = _Links()
    parser.feed(html_text)
    return parser.links


def broken_links(folder: str, name: str = "index.html") -> list[str]:
    """Links of ``folder/name`` that are absolute (would break when the folder moves) or name a missing file."""
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        found = links(f.read())
    bad = []
    for link in found:
        parsed = urlparse(link)
        if parsed.scheme or parsed.netloc or link.startswith("/"):
            bad.append(f"{link} (not relative)")
        elif parsed.path and not os.path.isfile(os.path.join(folder, unquote(parsed.path))):
            bad.append(f"{link} (missing)")
    return bad
