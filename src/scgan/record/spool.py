"""Decisions kept on disk while the database cannot be reached: one JSON line each, fsynced, written to the store
when it is back.

The spool is a file in the output folder. A torn last line (a crash in the middle of a write) is ignored: its
image was not counted as done and is scored again. Writing the spool to the store is one transaction that skips
images already there, so a crash between that commit and the spool's removal writes nothing twice.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from scgan.record.store import Decision, ModelVersion

log = logging.getLogger(__name__)

SPOOL_NAME = ".results-spool.jsonl"


class Spool:
    """The spool file ``folder/.results-spool.jsonl``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / SPOOL_NAME

    def append(self, decision: Decision, version: ModelVersion) -> None:
        """Add one decision and its model's version, on disk (fsynced) before this returns; OSError (a full disk)
        leaves the file as it was apart from a torn last line."""
        line = (json.dumps({"decision": decision.to_json(), "model": asdict(version)}, allow_nan=False)
                + "\n").encode("utf-8")
        with open(self.path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end and os.pread(f.fileno(), 1, end - 1) != b"\n":  # a torn last line: this one starts a new line
                line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[tuple[Decision, ModelVersion]]:
        """The spooled decisions and their models, in order (a torn line left out)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            try:
                item = json.loads(line)
                out.append((Decision.from_json(item["decision"]), ModelVersion(**item["model"])))
            except (ValueError, TypeError, KeyError):
                log.warning("%s line %d is incomplete (written when the process stopped); left out", self.path, n)
        return out

    def clear(self) -> None:
        """Remove the spool (after its decisions are in the store)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
