"""The report as a document: typed blocks that render themselves as Markdown and as HTML, and value formats.

A report is a title and a list of blocks; ``render_markdown`` links the PNGs beside the file, ``render_html`` makes
one self-contained page (inline CSS, PNGs as base64 data URIs).
"""
from __future__ import annotations

import base64
import dataclasses
import numbers
import re
from dataclasses import dataclass
from html import escape
from typing import Any, Protocol

import numpy as np
import yaml

from scgan.utils.tables import is_missing, markdown_table, pct

_NUMBER = re.compile(r"n/a|[-+]?[\d.]+(e[-+]?\d+)?")  # cells right-aligned in the HTML tables

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; margin-bottom: .4em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #eee; }
h3 { margin-top: 1.3em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.default td, tr.total td { font-weight: 600; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 4px; }
img { max-width: 100%; }
.note { color: #666; font-style: italic; }
p.lead { font-size: 1.1em; }
li.warning { color: #a33; }
"""


def _class_attr(css: str) -> str:
    """An HTML class attribute (with its leading space), or nothing for no class."""
    return f' class="{css}"' if css else ""


class Block(Protocol):
    """One piece of the report that renders itself as Markdown and as HTML."""

    def markdown(self) -> str:
        """The block as Markdown, without surrounding blank lines."""

    def html(self) -> str:
        """The block as HTML lines ("" renders nothing)."""


@dataclass(frozen=True)
class Heading:
    """A section heading of level 2 or 3 (the title is level 1)."""

    level: int
    text: str

    def markdown(self) -> str:
        """``## text``."""
        return f"{'#' * self.level} {self.text}"

    def html(self) -> str:
        """``<h2>text</h2>``."""
        return f"<h{self.level}>{escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of text; ``css`` styles it in HTML ("lead": the opening sentence, "note": a footnote)."""

    text: str
    css: str = ""

    def markdown(self) -> str:
        """The text as it is."""
        return self.text

    def html(self) -> str:
        """``<p>text</p>``, with its class."""
        return f"<p{_class_attr(self.css)}>{escape(self.text)}</p>"


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``row_classes`` style the body rows in HTML ("default", "total"), in order."""

    header: list[str]
    body: list[list[str]]
    row_classes: tuple[str, ...] = ()

    def markdown(self) -> str:
        """A GitHub Markdown table."""
        return markdown_table(self.header, self.body)

    def html(self) -> str:
        """An HTML table: the first column is the row's name, numbers and n/a are right-aligned."""
        lines = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in self.header) + "</tr>"]
        classes = list(self.row_classes) + [""] * (len(self.body) - len(self.row_classes))
        for row, css in zip(self.body, classes):
            cells = "".join(f'<td class="num">{escape(c)}</td>' if _NUMBER.fullmatch(c) else f"<td>{escape(c)}</td>"
                            for c in row[1:])
            lines.append(f"<tr{_class_attr(css)}><td>{escape(row[0])}</td>{cells}</tr>")
        lines.append("</table>")
        return "\n".join(lines)


def _md_cell(text: str) -> str:
    """Text on one line with '|' escaped, safe inside a Markdown list item or table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class BulletList:
    """A bullet list of (key, text) items; in HTML the key is also the item's class (e.g. "warning")."""

    items: list[tuple[str, str]]

    def markdown(self) -> str:
        """``- **key**: text`` per item."""
        return "\n".join(f"- **{_md_cell(k)}**: {_md_cell(v)}" for k, v in self.items)

    def html(self) -> str:
        """``<ul>`` with one ``<li>`` per item."""
        items = [f'<li class="{escape(k)}"><b>{escape(k)}</b>: {escape(v)}</li>' for k, v in self.items]
        return "\n".join(["<ul>", *items, "</ul>"])


@dataclass(frozen=True)
class FigureBlock:
    """One PNG of the report: its file name beside the report, heading, bytes (None when not drawn) and a note."""

    file: str
    heading: str
    png: bytes | None
    note: str = ""

    def markdown(self) -> str:
        """A link to the PNG file and the note in italics; only the note when nothing was drawn."""
        if self.png is None:
            return f"_{self.note}_"
        return f"![{self.heading}]({self.file})" + (f"\n\n_{self.note}_" if self.note else "")

    def html(self) -> str:
        """The PNG inline as a base64 data URI, then the note."""
        lines = []
        if self.png is not None:
            data = base64.b64encode(self.png).decode("ascii")
            lines.append(f'<img alt="{escape(self.heading)}" src="data:image/png;base64,{data}">')
        if self.note:
            lines.append(f'<p class="note">{escape(self.note)}</p>')
        return "\n".join(lines)


@dataclass(frozen=True)
class CodeBlock:
    """Preformatted text, e.g. the config as YAML."""

    text: str
    language: str = "yaml"

    def markdown(self) -> str:
        """A fenced code block."""
        return "\n".join([f"```{self.language}", self.text.rstrip("\n"), "```"])

    def html(self) -> str:
        """``<pre>text</pre>``."""
        return f"<pre>{escape(self.text)}</pre>"


def render_markdown(title: str, blocks: list[Block]) -> str:
    """The report as Markdown: the title, then the blocks separated by blank lines."""
    return "\n\n".join([f"# {title}", *(b.markdown() for b in blocks)]) + "\n"


def render_html(title: str, blocks: list[Block]) -> str:
    """The report as one self-contained HTML page: inline CSS, PNGs as base64 data URIs."""
    head = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
            f"<style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    body = [part for part in (b.html() for b in blocks) if part]
    return "\n".join([*head, *body, "</body></html>", ""])


def format_metric(value: Any) -> str:
    """A metric in [0, 1] as a percentage with one decimal ("97.3"); nan/None as "n/a"."""
    if is_missing(value) or isinstance(value, numbers.Real):
        return pct(value)
    return str(value)


def format_value(value: Any) -> str:
    """Any free-form value in one line: floats with 4 significant digits, nan as "n/a"."""
    if is_missing(value):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _plain(value: Any) -> Any:
    """Turn a config (dicts, dataclasses, paths, numpy scalars) into YAML-safe builtins."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def yaml_text(config: Any) -> str:
    """A config (dicts, dataclasses, paths, numpy scalars) as block-style YAML, keys in their order."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
