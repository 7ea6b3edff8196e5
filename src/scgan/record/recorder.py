"""Recording the decisions of ``scgan predict --db`` and ``scgan serve --db``: one row per scored image.

The commands call :meth:`Recorder.add` once per result (``run_predict``'s ``on_result``); a store that cannot take a
decision stops the run with one line (what was scored before stays in predictions.csv and in the store).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from scgan.record.store import UNAVAILABLE, Decision, ModelVersion, Store, error_line, sha256_bytes
from scgan.utils.names import printable

log = logging.getLogger(__name__)


class Recorder:
    """Adds each decision of one detector to a store, marked with its source ("predict", "serve")."""

    def __init__(self, store: Store, detector, source: str) -> None:
        self.store = store
        self.source = source
        self.version = ModelVersion.of_detector(detector)
        self.added = 0
        self._call(self.store.model_id, self.version)

    @classmethod
    def open(cls, db: str, detector, source: str, folder: str | os.PathLike[str] | None = None) -> Recorder:
        """A recorder on the store ``db`` names (a URL, a SQLite file, or a folder holding results.db)."""
        return cls(Store.open(db, folder), detector, source)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except UNAVAILABLE as e:
            raise ConnectionError(f"cannot record in the results store {self.store.name}: {error_line(e)}") from None

    def add(self, path: str | os.PathLike[str], result, overlay: str | None = None) -> None:
        """Record the decision on the file at ``path`` (its content hashed as it is now; a file gone since it was
        scored is left out with a warning: its content cannot be named). The file's and the overlay's paths are
        recorded absolute: the store is read, and its overlays pruned, from other working folders."""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            log.warning("not recorded: %s could not be read again to hash it (%s)", printable(path), e.strerror or e)
            return
        self.add_bytes(data, str(Path(path).absolute()), result, overlay and str(Path(overlay).absolute()))

    def add_bytes(self, data: bytes, name: str, result, overlay: str | None = None) -> None:
        """Record the decision on ``data``, an image known as ``name`` (a file name, an upload's name)."""
        d = Decision.of_result(result, path=name, content_sha256=sha256_bytes(data), size=len(data),
                               source=self.source, overlay=overlay)
        self._call(self.store.add, d, self.version)
        self.added += 1

    def close(self) -> None:
        self.store.close()
