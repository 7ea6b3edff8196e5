"""Every setting as YAML with the schema's own comments: what ``scgan config`` prints and what the files in
``scgan/configs/`` hold (generated from the schema, never edited by hand: ``make configs`` writes them, and a
test checks that the shipped files match).
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from functools import cache
from pathlib import Path

import yaml

from scgan.config.presets import PRESETS, get_preset
from scgan.config.schema import Config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@cache
def field_comments(cls: type) -> dict[str, list[str]]:
    """The comment lines of each field of a dataclass: those just above it, then the one at the end of its line."""
    source = inspect.getsource(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    pending: list[str] = []
    line_start = True
    current = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if line_start:
                pending.append(text)
            elif current is not None:
                out[current].append(text)
        elif tok.type == tokenize.NAME and line_start and tok.string in names and tok.start[1] == 4:
            current = tok.string
            out[current] = pending
            pending = []
            line_start = False
        elif tok.type in (tokenize.NEWLINE, tokenize.NL):
            line_start = True
            if tok.type == tokenize.NEWLINE:
                current = None
        elif tok.type not in (tokenize.INDENT, tokenize.DEDENT):
            if line_start and tok.type != tokenize.NAME:
                pending = []  # a comment above a non-field line (a method, a decorator) belongs to it
            line_start = False
    return out


def _value(v: object) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def commented_yaml(cfg: Config, header: bool = True) -> str:
    """``cfg`` as YAML, each setting under the schema's comment for it; ``yaml.safe_load`` reads back
    ``cfg.to_dict()``."""
    lines: list[str] = []
    if header:
        doc = (inspect.getdoc(PRESETS[cfg.preset]) or "") if cfg.preset in PRESETS else ""
        doc = doc.split("\n\n")[0].replace("\n", " ")
        lines += [f"# The {cfg.preset} preset. {doc}".rstrip(),
                  f"# Every setting with its value in this preset (what `scgan config --preset {cfg.preset}` prints), "
                  "commented.",
                  "# Copy, edit, and use with: scgan train --config my.yaml ... (key=value on the command line still "
                  "wins).",
                  "# Keys may be left out: a missing key keeps the preset's value.", ""]
    top = field_comments(Config)
    for name in ("preset", "kind", "seed"):
        lines += [f"# {c}" for c in top.get(name, [])]
        lines.append(f"{name}: {_value(getattr(cfg, name))}")
    lines.append("")
    for section in cfg.section_names():
        obj = getattr(cfg, section)
        lines.append(f"{section}:")
        doc = type(obj).__doc__  # a section's own docstring, where it has one (dataclass makes one otherwise)
        if doc and not doc.startswith(type(obj).__name__ + "("):
            lines += [f"  # {line}" if line else "  #" for line in inspect.cleandoc(doc).splitlines()]
        comments = field_comments(type(obj))
        for f in dataclasses.fields(obj):
            lines += [f"  # {c}" for c in comments.get(f.name, [])]
            lines.append(f"  {f.name}: {_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def preset_file(name: str) -> Path:
    """Where the commented YAML of preset ``name`` ships."""
    return CONFIGS / f"{name}.yaml"


def write_preset_files() -> list[Path]:
    """Write every preset's commented YAML into ``scgan/configs/`` (after the schema or a preset changed)."""
    CONFIGS.mkdir(exist_ok=True)
    written = []
    for name in PRESETS:
        path = preset_file(name)
        path.write_text(commented_yaml(get_preset(name)), encoding="utf-8")
        written.append(path)
    return written
