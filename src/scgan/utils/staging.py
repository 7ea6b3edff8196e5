"""A set of output files replaced as a whole: written into a temporary folder beside them, swapped in at the end.

A run that fails while writing (a full disk, an exception, Ctrl-C) leaves the folder's previous set as it was;
one that succeeds moves its files in by renames, which need no space, then writes its manifest last. Only a crash
between the first and the last rename leaves a mix, and then no manifest (:mod:`scgan.utils.manifest`): a folder
whose manifest is present holds exactly one run's files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from scgan.utils.manifest import MANIFEST, begin_outputs

STAGING_PREFIX = ".scgan-staging-"


def clean_stale_staging(folder: Path) -> None:
    """Remove the staging folders that runs killed before their swap left in ``folder`` (call it under the
    folder's lock: a live run's staging folder looks the same)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(folder: Path, outputs: Iterable[str]) -> Iterator[Path]:
    """A temporary folder inside ``folder`` to write a run's files into (its manifest among them); when the block
    ends without an error, they replace the previous run's, and those of ``outputs`` (every file name the command
    may write) that this run did not write are deleted. On an error the temporary folder is removed and
    ``folder`` is untouched."""
    clean_stale_staging(folder)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        yield staging
        written = sorted(e.name for e in os.scandir(staging) if e.is_file(follow_symlinks=False))
        begin_outputs(folder)  # the old manifest goes first: a crash from here on leaves a folder without one
        for name in written:
            if name != MANIFEST:
                os.replace(staging / name, folder / name)
        for name in set(outputs) - set(written):
            (folder / name).unlink(missing_ok=True)  # an earlier run's file would describe another run
        if MANIFEST in written:
            os.replace(staging / MANIFEST, folder / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
