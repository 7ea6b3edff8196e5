"""An output folder's manifest: which run wrote it, from which model, and which of its files belong together.

``manifest.json`` is deleted before a command writes its first result and written after its last,
so a folder whose manifest is missing holds an interrupted or failed run's mix of files, and the
files a manifest lists are exactly one run's.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from scgan.utils.atomic import atomic_write_text
from scgan.utils.names import printable
from scgan.utils.runinfo import run_info

MANIFEST = "manifest.json"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks: a model version's identity."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A file's resolved path, size and sha256: which model (or data file) a result came from."""
    path = Path(path)
    return {"path": printable(path.resolve()), "size": path.stat().st_size, "sha256": file_sha256(path)}


def begin_outputs(folder: Path) -> None:
    """Mark ``folder`` as being rewritten: its manifest goes first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / MANIFEST)


def read_manifest_files(folder: Path) -> list[str]:
    """The files an earlier run's manifest in ``folder`` lists ([] when there is none or it is damaged)."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def write_manifest(folder: Path, files: list[str], **source: Any) -> Path:
    """Write ``folder/manifest.json``: provenance, ``source`` (e.g. model=file_identity(...)) and the files."""
    record = {"info": run_info(), **source, "files": sorted(files)}
    atomic_write_text(folder / MANIFEST, json.dumps(record, indent=2))
    return folder / MANIFEST
