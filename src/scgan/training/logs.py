"""Lightning's CSV logger with atomic writes and resumable rows (``logs/metrics.csv``, ``logs/hparams.yaml``).

Lightning's writer appends to ``metrics.csv`` and writes ``hparams.yaml`` in place, so a symbolic link
planted at either name would have its target overwritten, and a crash mid-write would leave a torn
file; on resume it deletes ``metrics.csv``, losing the earlier epochs. This writer keeps every row in
memory and rewrites each file through ``scgan.utils.atomic`` (a temporary file renamed over the name,
which replaces a link instead of following it).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from scgan.utils.atomic import atomic_write_text


def _read_rows(path: Path, keep_through: int) -> tuple[list[dict[str, str]], list[str]]:
    """metrics.csv's rows of epochs up to ``keep_through`` and its header; nothing for no (regular) file."""
    if not path.is_file() or path.is_symlink():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = sorted(reader.fieldnames or [])
        rows = [r for r in reader if r.get("epoch") and int(float(r["epoch"])) <= keep_through]
    return rows, header


class AtomicExperimentWriter(ExperimentWriter):
    """Rewrites metrics.csv and hparams.yaml atomically; on resume starts from the rows through ``keep_through``."""

    def __init__(self, log_dir: str, keep_through: int | None = None) -> None:
        self._keep_through = keep_through
        self._rows: list[dict[str, Any]] = []
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        # Called by Lightning's constructor, which would delete metrics.csv here (a fresh run's old file
        # is removed by --overwrite; a refused folder never gets this far).
        if self._keep_through is not None:
            self._rows, self.metrics_keys = _read_rows(Path(self.metrics_file_path), self._keep_through)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        atomic_write_text(Path(self.log_dir) / self.NAME_HPARAMS_FILE,
                          yaml.safe_dump(self.hparams, sort_keys=False, default_flow_style=False))

    def save(self) -> None:
        if not self.metrics:
            return
        self._record_new_keys()
        self._rows += self.metrics
        self.metrics = []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self.metrics_file_path, buf.getvalue())


class AtomicCSVLogger(CSVLogger):
    """CSVLogger writing through :class:`AtomicExperimentWriter`; ``keep_through`` = the resumed epoch (or None)."""

    def __init__(self, *args: Any, keep_through: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_through = keep_through

    @property
    @rank_zero_experiment
    def experiment(self) -> AtomicExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AtomicExperimentWriter(self.log_dir, self._keep_through)
        return self._experiment
