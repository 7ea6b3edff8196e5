"""A store of finished (category, config, seed) runs: each trained and tested once, reused by every table.

A run's folder name is a hash of everything that can change its result (the config's identity, i.e.
without its runtime section, minus paths), so the benchmark and every ablation share runs with the same settings, and a finished
run (its ``test/metrics.json`` exists) is never redone. Each run sets the same torch thread count
whatever ``jobs`` is: running several at once does not change any result.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scgan.config import ADDED_LATER, Config
from scgan.utils.atomic import atomic_write_text
from scgan.utils.runinfo import run_info

# Settings that never change a result (where the data lives, how it is loaded, extra checkpoints).
_IGNORED = {("data", "root"), ("train", "checkpoint_every")}


def config_key(cfg: Config) -> str:
    """12 hex digits identifying everything in cfg that can change a run's result."""
    d = copy.deepcopy(cfg.identity())  # runtime settings (devices, precision, workers) never change a key
    for section, key in _IGNORED:
        d[section].pop(key, None)
    for (section, key), value in ADDED_LATER.items():  # at the value older runs had: their keys stay
        if d[section].get(key) == value:
            del d[section][key]
    d.pop("preset", None)
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class RunSpec:
    """One training + test run."""

    config: dict[str, Any]
    run_dir: str
    threads: int
    command: str

    @property
    def metrics_path(self) -> Path:
        return Path(self.run_dir) / "test" / "metrics.json"

    def done(self) -> bool:
        return self.metrics_path.exists()


def make_spec(cfg: Config, store: Path, threads: int, command: str) -> RunSpec:
    d = cfg.data
    name = f"{d.dataset}_{d.category}"
    run_dir = store / name / f"{config_key(cfg)}_seed{cfg.train.seed}"
    return RunSpec(cfg.to_dict(), str(run_dir), threads, command)


def execute(spec: RunSpec, progress: bool = False) -> dict[str, Any]:
    """Train and test one run (in this process); return its metrics. Skips a finished run."""
    if spec.done():
        return json.loads(spec.metrics_path.read_text())
    import torch

    from scgan.evaluate import run_test
    from scgan.training.fit import train

    cfg = Config.from_dict(spec.config)
    run_dir = Path(spec.run_dir)
    start = time.time()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(spec.threads)  # results depend on it: set per run, restored after
    try:
        res = train(cfg, run_dir / "train", resume="auto", progress=progress)
        out = run_test(res.model_path, run_dir / "test", progress=False)
    finally:
        torch.set_num_threads(threads_before)
    info = run_info(
        benchmark_command=spec.command, threads=spec.threads, seed=cfg.train.seed, config_key=config_key(cfg),
        wall_time_s=round(time.time() - start, 1), model="last epoch (no model selection)",
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
            results[s.run_dir] = json.loads(s.metrics_path.read_text())
        elif s.run_dir not in {t.run_dir for t in todo}:
            todo.append(s)
    if todo:
        print(f"{len(specs) - len(todo)} run(s) already finished; {len(todo)} to do", flush=True)
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


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
