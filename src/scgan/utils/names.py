"""Text from file names made safe where it goes: output file names, CSV cells, UTF-8 text.

File names on Linux are bytes: they can be longer than an output name may be once affixes are added,
and need not be UTF-8 (Python keeps such bytes as surrogates, which cannot be written as UTF-8).
"""
from __future__ import annotations

import hashlib
import os
import re

# Room left in a 255-byte name for the affixes scgan adds (index, extension, atomic-write temp affixes).
MAX_STEM_BYTES = 120
_UNSAFE = re.compile(r"[^\w.\-]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str | os.PathLike[str]) -> str:
    """``text`` as valid UTF-8: bytes that are not (surrogates from the file system) become \\xNN escapes."""
    return os.fspath(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def safe_stem(text: str | os.PathLike[str], max_bytes: int = MAX_STEM_BYTES) -> str:
    """A file-name stem from ``text``: letters, digits, '.', '-' and '_' only, at most ``max_bytes`` bytes.

    A stem that had to be shortened keeps its start and gets a short hash of the whole, so that two long
    names that share a start still map to different stems.
    """
    raw = os.fspath(text).encode("utf-8", "surrogateescape")
    stem = _UNSAFE.sub("_", printable(text)).strip("._") or "image"
    if len(stem.encode()) <= max_bytes:
        return stem
    digest = hashlib.sha1(raw).hexdigest()[:10]
    head = stem.encode()[: max_bytes - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}_{digest}"


def csv_cell(text: str | os.PathLike[str]) -> str:
    """A CSV cell that no spreadsheet runs as a formula (a leading ' where it starts like one), valid UTF-8."""
    s = printable(text)
    return "'" + s if s.startswith(_FORMULA_START) else s


def mpl_text(text: str | os.PathLike[str]) -> str:
    """Text for a matplotlib title or label, shown as it is: '$' escaped (two would start mathtext), valid UTF-8."""
    return printable(text).replace("$", r"\$")
