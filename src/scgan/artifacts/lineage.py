"""A model's identity and lineage: every version of a model is a file, named by the sha256 of its bytes.

A model file written from another one (``scgan update``, ``scgan calibrate``) records the step that made it: the
parent's hash and file name, what it did, when, which images it added (names and hashes) and what changed. The
steps accumulate, oldest first, so that any version names all its ancestors; :func:`history` finds those still on
disk (beside the file, or in folders named) and :func:`restore` copies one back byte for byte.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scgan import __version__
from scgan.utils.atomic import atomic_write_with
from scgan.utils.manifest import file_sha256

MODEL_SUFFIXES = (".pt",)  # what history searches for earlier versions


class LineageError(ValueError):
    """A version that cannot be found or restored."""


def lineage_step(action: str, parent: str | os.PathLike[str] | None, parent_hash: str | None,
                 changed: dict[str, Any], added: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One step of a lineage: ``action`` ("update", "calibrate") made a file from the one at ``parent`` (sha256
    ``parent_hash``), adding ``added`` images ({"name", "sha256", "role"}) and changing ``changed``."""
    return {"action": action, "parent": parent_hash, "parent_name": None if parent is None else Path(parent).name,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scgan_version": __version__,
            "added": list(added or []), "changed": dict(changed)}


@dataclass(frozen=True)
class Version:
    """One version of a model: its hash, where it lies (None: not found), the step that made it (None: fitted)."""

    sha256: str
    path: Path | None
    step: dict[str, Any] | None
    name: str | None  # the file name it was recorded under (its child's ``parent_name``), or this file's


def _candidates(start: Path, search: list[Path]) -> list[Path]:
    folders = [start.parent] + [Path(s) for s in search]
    found: list[Path] = []
    for i, folder in enumerate(folders):
        if not folder.is_dir():
            raise LineageError(f"--search folder not found: {folder}")
        files = folder.iterdir() if i == 0 else folder.rglob("*")  # beside the file: not below it
        found += sorted(p for p in files if p.suffix in MODEL_SUFFIXES and p.is_file() and not p.is_symlink())
    return list(dict.fromkeys(found))


def locate(hashes: set[str], start: Path, search: list[Path]) -> dict[str, Path]:
    """The first file with each of ``hashes`` among the model files beside ``start`` and under ``search``."""
    out: dict[str, Path] = {}
    for path in _candidates(start, search):
        if len(out) == len(hashes):
            break
        digest = file_sha256(path)
        if digest in hashes and digest not in out:
            out[digest] = path
    return out


def history(path: str | os.PathLike[str], lineage: list[dict[str, Any]],
            search: list[str | os.PathLike[str]] = ()) -> list[Version]:
    """Every version of the model at ``path`` (whose file records ``lineage``), oldest first, the file itself last;
    each with the file found on disk for it, if any."""
    path = Path(path)
    own = file_sha256(path)
    hashes = [step.get("parent") for step in lineage]
    found = locate({h for h in hashes if h} - {own}, path, [Path(s) for s in search])
    versions = []
    for i, h in enumerate(hashes):
        made_by = lineage[i - 1] if i else None
        versions.append(Version(h or "unknown", found.get(h) if h else None, made_by, lineage[i].get("parent_name")))
    versions.append(Version(own, path, lineage[-1] if lineage else None, path.name))
    return versions


def restore(path: str | os.PathLike[str], lineage: list[dict[str, Any]], wanted: str, output: str | os.PathLike[str],
            search: list[str | os.PathLike[str]] = (), overwrite: bool = False) -> Version:
    """Copy the version of ``path``'s model whose hash starts with ``wanted`` to ``output``, byte for byte (its
    sha256 checked); LineageError naming the file and hash when that version is not on disk."""
    wanted = wanted.strip().lower()
    if len(wanted) < 6:
        raise LineageError(f"give at least 6 hex digits of the version's sha256, got {wanted!r}")
    versions = history(path, lineage, search)
    matches = {v.sha256: v for v in versions if v.sha256.startswith(wanted)}
    if not matches:
        raise LineageError(f"no version {wanted} in the history of {path} ({len(versions)} versions; "
                           "'scgan history' lists them)")
    if len(matches) > 1:
        raise LineageError(f"{wanted} matches {len(matches)} versions; give more digits")
    version = next(iter(matches.values()))
    if version.path is None:
        where = ", ".join(str(s) for s in (Path(path).parent, *search))
        raise LineageError(f"version {version.sha256[:12]} (file {version.name or 'unnamed'}) is no longer on disk "
                           f"in {where}; it cannot be restored — name the folder holding it with --search")
    output = Path(output)
    if output.exists() and not overwrite:
        raise LineageError(f"{output} exists; choose another --output or pass --overwrite")

    def copy(f) -> None:
        with open(version.path, "rb") as src:
            shutil.copyfileobj(src, f)

    atomic_write_with(output, copy)
    if file_sha256(output) != version.sha256:
        output.unlink(missing_ok=True)
        raise LineageError(f"{version.path} changed while it was copied; nothing restored")
    return version
