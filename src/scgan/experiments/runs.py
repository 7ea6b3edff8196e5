"""A store of finished (data, config, seed) runs: each trained and tested once, reused by every table.

A run's folder is ``STORE/<dataset>_<category>/<run key>_seed<k>``. The run key (:func:`run_key`)
hashes two things:

- :func:`config_key`: every setting that can change the result, i.e. the config's identity (without
  its ``runtime`` section: accelerator, devices, strategy, precision, channels_last,
  num_workers, eval_batch_size, which say how a run is executed, not what it is), minus the data's
  path and extra checkpoints;
- :func:`data_identity`: what identifies the data: the resolved category folder and a fingerprint of
  its file list (every non-hidden file's relative name and size), so the same category name under
  another root, or a folder whose files changed, is a new run.

The benchmark and every ablation share runs with the same key, and a finished run (its
``test/metrics.json`` exists) is never redone: it is reported as reused, on stdout and in the
study's ``summary.json`` and ``table.md``. Each run sets the same torch thread count whatever ``jobs``
is: running several at once does not change any result.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scgan.config import Config, config_from_dict, legacy_layout
from scgan.data.datasets import DATASETS
from scgan.data.io import is_hidden
from scgan.models.registry import get_kind
from scgan.utils.atomic import atomic_write_text
from scgan.utils.runinfo import run_info

# Settings left out of config_key besides the runtime section: where the data lives (data_identity
# stands for it) and extra checkpoints.
_IGNORED = {("data", "root"), ("train", "checkpoint_every")}  # (sync_batchnorm: legacy_layout drops it)


def config_key(cfg: Config) -> str:
    """12 hex digits identifying the settings of cfg that can change a run's result (not the data)."""
    # Runtime settings (devices, precision, workers) never change a key; the settings are hashed in the layout keys
    # were first hashed in (settings added later left out at the value older runs had): their keys stay.
    d = legacy_layout(cfg.identity())
    for section, key in _IGNORED:
        d.get(section, {}).pop(key, None)
    d = {k: v for k, v in d.items() if v != {}}  # a section that holds nothing but what was left out
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _data_folder(cfg: Config) -> Path:
    """The folder that holds the run's images: the category folder (the root itself for 'folder' data)."""
    root = Path(cfg.data.root)
    if cfg.data.dataset == "folder":
        return root.resolve()
    return (root / DATASETS[cfg.data.dataset].category_name(cfg.data.category)).resolve()


def data_identity(cfg: Config) -> dict[str, Any]:
    """What identifies cfg's data: the resolved data folder, the category, a fingerprint of its file list."""
    folder = _data_folder(cfg)
    h = hashlib.sha256()
    n = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(f for f in filenames if not is_hidden(f)):
            path = Path(dirpath) / name
            try:
                size = path.stat().st_size
            except OSError:
                size = -1  # a dangling link is part of the identity too
            rel = os.fsencode(path.relative_to(folder))
            h.update(rel + b"\0" + str(size).encode() + b"\n")
            n += 1
    return {"dataset": cfg.data.dataset, "folder": os.fsdecode(folder), "category": cfg.data.category,
            "n_files": n, "files_sha256": h.hexdigest()}


def run_key(cfg: Config, identity: dict[str, Any] | None = None) -> str:
    """12 hex digits of config_key and data_identity together: the run store's key (module docstring)."""
    identity = data_identity(cfg) if identity is None else identity
    blob = json.dumps({"config": config_key(cfg), "data": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass
class RunSpec:
    """One training + test run."""

    config: dict[str, Any]
    run_dir: str
    threads: int
    command: str
    data: dict[str, Any] | None = None  # data_identity of the run's data

    @property
    def metrics_path(self) -> Path:
        return Path(self.run_dir) / "test" / "metrics.json"

    def done(self) -> bool:
        return self.metrics_path.exists()


def make_spec(cfg: Config, store: Path, threads: int, command: str) -> RunSpec:
    d = cfg.data
    name = f"{d.dataset}_{d.category}"
    identity = data_identity(cfg)
    run_dir = store / name / f"{run_key(cfg, identity)}_seed{cfg.seed}"
    return RunSpec(cfg.to_dict(), str(run_dir), threads, command, identity)


def _reuse_note(spec: RunSpec) -> str:
    """One line saying a finished run is reused, with when and by which command it was made."""
    try:
        info = json.loads((Path(spec.run_dir) / "run.json").read_text())
        made = f"finished {info.get('time', '?')} by: {info.get('benchmark_command') or info.get('command', '?')}"
    except (OSError, ValueError):
        made = "no run.json"
    return f"reused (not retrained): {spec.run_dir} ({made})"


def execute(spec: RunSpec, progress: bool = False) -> dict[str, Any]:
    """Train and test one run (in this process); return its metrics. Skips a finished run."""
    if spec.done():
        return json.loads(spec.metrics_path.read_text())
    import torch

    from scgan.inference.evaluate import run_test
    from scgan.training.fit import train

    cfg = config_from_dict(spec.config)
    run_dir = Path(spec.run_dir)
    start = time.time()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(spec.threads)  # results depend on it: set per run, restored after
    try:
        # A kind that resumes (an SCGAN) continues an interrupted run; another is fitted again from the start.
        resumable = get_kind(cfg.kind).resumable
        res = train(cfg, run_dir / "train", resume="auto" if resumable else None, overwrite=not resumable,
                    progress=progress)
        out = run_test(res.model_path, run_dir / "test", progress=False)
    finally:
        torch.set_num_threads(threads_before)
    info = run_info(
        benchmark_command=spec.command, threads=spec.threads, seed=cfg.seed, config_key=config_key(cfg),
        data=spec.data, wall_time_s=round(time.time() - start, 1), model="last epoch (no model selection)",
    )
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))
    return out.metrics


def _worker(spec: RunSpec) -> tuple[str, dict[str, Any]]:
    return spec.run_dir, execute(spec)


def execute_all(specs: list[RunSpec], jobs: int = 1, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Run every unfinished spec (``jobs`` at a time, each in its own process when jobs > 1)."""
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for s in specs:
        if s.done():
            if s.run_dir not in results:
                print(_reuse_note(s), flush=True)
            results[s.run_dir] = json.loads(s.metrics_path.read_text())
        elif s.run_dir not in {t.run_dir for t in todo}:
            todo.append(s)
    print(f"{len(results)} run(s) reused from earlier invocations; {len(todo)} to train", flush=True)
    if jobs <= 1:
        for i, s in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {s.run_dir}", flush=True)
            results[s.run_dir] = execute(s, progress=progress)
        return results
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_worker, s): s for s in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            run_dir, metrics = fut.result()
            print(f"[{i}/{len(todo)}] done {run_dir}", flush=True)
            results[run_dir] = metrics
    return results

