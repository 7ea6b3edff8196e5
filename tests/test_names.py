"""Names from the file system made safe for output files, CSV cells and UTF-8 text."""
import os

import pytest

from scgan.utils.names import MAX_STEM_BYTES, csv_cell, printable, safe_stem

pytestmark = pytest.mark.unit


def test_printable_escapes_non_utf8_bytes():
    name = os.fsdecode(b"caf\xe9.png")  # how Python keeps a Latin-1 file name on Linux
    assert printable(name) == "caf\\xe9.png"
    printable(name).encode("utf-8")  # does not raise


def test_safe_stem_limits_bytes_and_keeps_long_names_apart():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    sa, sb = safe_stem(a), safe_stem(b)
    assert len(sa.encode()) <= MAX_STEM_BYTES and len(sb.encode()) <= MAX_STEM_BYTES
    assert sa != sb and sa.startswith("xxxx")
    assert safe_stem("crack/000") == "crack_000"
    assert safe_stem("ü" * 200).encode().__len__() <= MAX_STEM_BYTES
    assert safe_stem("...") == "image"


def test_csv_cell_defuses_formulas():
    assert csv_cell("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert csv_cell("+1") == "'+1" and csv_cell("@x") == "'@x"
    assert csv_cell("good/000.png") == "good/000.png"
