"""Exceptions as text: the one line a user is shown for an error (the CLI's message, a skipped input's reason)."""
from __future__ import annotations


def one_line(e: BaseException) -> str:
    """An exception as one line: its message's first line (its class name when it has none), with the file name of
    a FileNotFoundError whose message leaves it out."""
    text = str(e).strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    return msg
