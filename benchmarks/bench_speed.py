"""Training and scoring speed of the PatchCore detector and of SCGAN through the package's own code paths, in one run.

Every measurement runs in a fresh subprocess (so peak memory of one configuration never pollutes another).

The PatchCore detector (model kind ``patchcore``, what preset ``default`` fits), at each working resolution R
(``--resolutions``, default the preset's):

- fitting: :func:`scgan.training.fit.train` (what ``scgan train`` runs) on the demo images' training split:
  features, greedy coreset, calibration, writing the model file; the whole call is timed, and its three parts
  come from the run's train_summary.json. Scoring needs the fitted bank, so the fit runs whatever ``--phases``.
- scoring: the model file loaded as ``scgan test`` loads it, then :func:`scgan.models.scoring.score_loader` over
  the test split, after one warm-up batch; FLOPs of one batch as below.

SCGAN, for each image size S (``--sizes``), and the same network with MS-CAM off:

- training: the module, data module and Trainer of ``scgan.training.gan.prepare_run`` (what ``scgan
  train`` fits) on demo images (decoded cache, DataLoader, collate); data loading, the augmentation, both
  optimiser steps and logging are inside the timed region, which starts after ``--warmup`` batches.
- scoring: :func:`scgan.models.scoring.score_loader` (``torch.inference_mode``) over the test split, as
  ``scgan test`` does, after one warm-up batch.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one training step (the first warm-up
  batch) and one scoring batch; achieved GFLOP/s is compared with this machine's fp32 matrix-multiply
  peak (a large ``torch.mm``) measured at the start of the same run.
- peak memory: ``ru_maxrss`` of the subprocess (includes the interpreter, torch and the image cache).

The script prints figures and sets no pass/fail targets: docs/performance.md compares them with its own.
Timings mean something only on an otherwise idle machine (docs/performance.md); the script warns when
the load average says otherwise.

    python benchmarks/bench_speed.py --output results/speed/all.json                  # both models, 2 idle cores
    python benchmarks/bench_speed.py --models patchcore --resolutions 256,320 --output ...
    python benchmarks/bench_speed.py --models scgan --output results/speed/fp32.json  # ~10 min on 2 idle cores
    python benchmarks/bench_speed.py --models scgan --channels-last --output results/speed/fp32_cl.json
    python benchmarks/bench_speed.py --models scgan --precision bf16-mixed --channels-last --output ...
    python benchmarks/bench_speed.py --models scgan --phases score --compile --sizes 256 --output ...
    python benchmarks/bench_speed.py --profile --sizes 64,128                  # top operators of an SCGAN step
    python benchmarks/bench_speed.py --quick --threads 1                       # checks the script (~1-3 min)
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scgan.utils.runinfo import available_cores, cpu_model
from scgan.utils.tables import markdown_table, num, pct

# What a throw-away prototype of the same SCGAN networks measured on 2 CPU cores (torch 2.13, eager, fp32,
# batch 16 / 32, base 64, channels capped at 512): a reference for the ratio columns, not a target.
PROTOTYPE = {64: {"train": 27.7, "score": 138.0, "rss_gb": 0.7, "gflop": 3.8},
             128: {"train": 6.6, "score": 27.0, "rss_gb": 1.4, "gflop": 17.6},
             256: {"train": 1.5, "score": 7.2, "rss_gb": 3.3, "gflop": 72.8}}
MODELS = ("patchcore", "scgan")


@dataclass
class Job:
    """One measurement, run in its own process."""

    phase: str  # train | score | profile (an SCGAN); fit | score (the PatchCore detector)
    size: int  # S for an SCGAN, the working resolution R for the PatchCore detector
    attention: bool
    batch: int
    score_batch: int
    steps: int
    warmup: int
    precision: str
    channels_last: bool
    compile: bool
    base_channels: int
    max_channels: int | None
    threads: int
    accelerator: str
    root: str
    dataset: str
    category: str
    seed: int = 0
    result_path: str = ""
    top_ops: int = 20
    model: str = "scgan"  # scgan | patchcore
    model_dir: str = ""  # the PatchCore detector's run folder: the fit writes it, scoring reads its model.pt


# ---- helpers shared by both sides ------------------------------------------------------------
def _gb(n_bytes: float) -> float:
    return n_bytes / 1024**3


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def environment(threads: int) -> dict[str, Any]:
    import lightning
    import torch

    env: dict[str, Any] = {
        "cpu": cpu_model(), "cores": available_cores(), "threads": threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        env["mkldnn_bf16_native"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        env["mkldnn_bf16_native"] = None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def matmul_peak_gflops(n: int, dtype_name: str = "float32", device: str = "cpu", reps: int = 5) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n torch.mm: the machine's own matrix-multiply peak."""
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ---- the worker: one configuration, one phase, in a fresh process -----------------------------
def _scgan_config(job: Job):
    from scgan.config import load_config

    overrides = {
        "data.dataset": job.dataset, "data.root": job.root, "data.category": job.category,
        "model.image_size": job.size, "model.base_channels": job.base_channels,
        "model.max_channels": job.max_channels, "model.attention": job.attention,
        "train.batch_size": job.batch, "runtime.eval_batch_size": job.score_batch, "train.epochs": 1,
        "runtime.precision": job.precision, "runtime.channels_last": job.channels_last,
        "runtime.accelerator": job.accelerator, "seed": job.seed,
    }
    return load_config("paper", overrides=overrides)


class _TimedAugment:
    """Stands in for the module's augmentation (``inner``, set once the module exists) and adds up the seconds
    spent in its ``apply`` (same calls, same RNG draws)."""

    def __init__(self, device: str) -> None:
        self.inner, self.device, self.seconds = None, device, 0.0

    def apply(self, *args, **kwargs):
        _sync(self.device)
        t = time.perf_counter()
        out = self.inner.apply(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - t
        return out

    def __getattr__(self, name: str):  # everything else (its name, its settings) is the augmentation's own
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _step_timer(warmup: int, steps: int, aug: _TimedAugment, device: str, profile: bool, top_ops: int):
    """A Lightning callback timing batches [warmup, warmup + steps) and counting FLOPs on batch 0."""
    import lightning as L
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.starts: dict[int, float] = {}
            self.ends: dict[int, float] = {}
            self.flops = 0
            self.aug_s = 0.0
            self._counter: FlopCounterMode | None = None
            self._prof = None
            self.profile_table = ""
            self.profile_ops: list[dict[str, Any]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                self._counter = FlopCounterMode(display=False)
                self._counter.__enter__()
            if profile and batch_idx == warmup:
                self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self._prof.__enter__()
            _sync(device)
            self.starts[batch_idx] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            _sync(device)
            self.ends[batch_idx] = time.perf_counter()
            if batch_idx == 0 and self._counter is not None:
                self._counter.__exit__(None, None, None)
                self.flops = self._counter.get_total_flops()
            if batch_idx == warmup - 1:
                aug.seconds = 0.0
            if batch_idx == warmup + steps - 1:
                self.aug_s = aug.seconds
                if self._prof is not None:
                    self._prof.__exit__(None, None, None)
                    self._summarise_profile()
                trainer.should_stop = True

        def _summarise_profile(self) -> None:
            avgs = self._prof.key_averages()
            self.profile_table = avgs.table(sort_by="self_cpu_time_total", row_limit=top_ops)
            rows = sorted(avgs, key=lambda e: e.self_cpu_time_total, reverse=True)
            self.profile_ops = [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6 / steps,
                                 "calls": e.count // steps} for e in rows if e.self_cpu_time_total > 0]

    return StepTimer()


def _quiet() -> None:
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*(LeafSpec|TreeSpec).*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _train_job(job: Job, cfg, device: str) -> dict[str, Any]:
    import torch

    from scgan.training.gan import prepare_run

    aug = _TimedAugment(device)
    timer = _step_timer(job.warmup, job.steps, aug, device, job.phase == "profile", job.top_ops)
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        # The package's own set-up, as 'scgan train' makes it: seed, data splits, module, Trainer.
        run = prepare_run(cfg, Path(tmp), progress=False, callbacks=[timer], enable_logging=False)
        module, train_ds = run.module, run.train_set
        batches = len(train_ds) // job.batch
        if batches < job.warmup + job.steps:
            raise SystemExit(f"{len(train_ds)} training images give {batches} batches of {job.batch}, fewer than "
                             f"warmup + steps = {job.warmup + job.steps}: lower --steps or use more images")
        aug.inner, module.augment = module.augment, aug
        rss_setup = peak_rss_bytes()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        run.trainer.limit_val_batches = 0  # the calibration pass after the timed steps is not measured here
        run.trainer.fit(module, datamodule=run.datamodule)
    last = job.warmup + job.steps - 1
    total = timer.ends[last] - timer.ends[job.warmup - 1]
    inside = sum(timer.ends[i] - timer.starts[i] for i in range(job.warmup, last + 1))
    out: dict[str, Any] = {
        "img_per_s": job.steps * job.batch / total,
        "step_s": total / job.steps,
        "augment_share": timer.aug_s / total,  # augmentation inside the step
        "data_share": (total - inside) / total,  # fetching + collating the next batch, loop overhead
        "flop_per_img": timer.flops / job.batch,
        "peak_rss_gb": _gb(peak_rss_bytes()),
        "setup_rss_gb": _gb(rss_setup),
        "n_train": len(train_ds),
        "augmentation": aug.inner.name,
    }
    if device.startswith("cuda"):
        out["peak_gpu_gb"] = _gb(torch.cuda.max_memory_allocated())
    if job.phase == "profile":
        out["profile_table"] = timer.profile_table
        out["profile_ops"] = timer.profile_ops
    return out


def _time_scoring(scorer, loader, n_images: int, device: str, compile_fn=None) -> dict[str, Any]:
    """Images/s of ``score_loader`` over ``loader`` after one warm-up batch (FLOPs counted on it); ``compile_fn``
    compiles the scorer's network first (its time reported apart)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from scgan.models.scoring import score_loader

    first = next(iter(loader))
    x = first["image"].to(device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        scorer.run(x)
    flops = counter.get_total_flops() / x.shape[0]
    compile_s = None
    if compile_fn is not None:
        compile_fn()
        t = time.perf_counter()
        score_loader(scorer, [first], device)
        compile_s = time.perf_counter() - t
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    score_loader(scorer, [first], device)  # warm-up: oneDNN primitives, allocator
    _sync(device)
    t = time.perf_counter()
    res = score_loader(scorer, loader, device)
    _sync(device)
    dt = time.perf_counter() - t
    out: dict[str, Any] = {
        "img_per_s": n_images / dt, "n_images": n_images, "flop_per_img": flops,
        "peak_rss_gb": _gb(peak_rss_bytes()), "compile_s": compile_s,
        "finite": bool(torch.isfinite(torch.from_numpy(res.scores)).all()),
    }
    if device.startswith("cuda"):
        out["peak_gpu_gb"] = _gb(torch.cuda.max_memory_allocated())
    return out


def _score_job(job: Job, cfg, device: str) -> dict[str, Any]:
    import torch

    from scgan.data.datasets import eval_loader
    from scgan.models.scgan.networks import build_generator, init_weights
    from scgan.models.scgan.scorer import build_scorer
    from scgan.training.datamodule import SCGANDataModule

    ds = SCGANDataModule(cfg).dataset("test")
    generator = build_generator(cfg.model)
    init_weights(generator, torch.Generator().manual_seed(job.seed))  # speed does not depend on the weights
    precision = job.precision if job.precision != "32-true" else None
    scorer = build_scorer(cfg, generator, precision=precision).to(device).eval()
    compile_fn = scorer.generator.compile if job.compile else None
    return _time_scoring(scorer, eval_loader(ds, job.score_batch), len(ds), device, compile_fn)


def _patchcore_config(job: Job):
    from scgan.config import load_config

    overrides = {
        "data.dataset": job.dataset, "data.root": job.root, "data.category": job.category,
        "patchcore.resolution": job.size, "runtime.eval_batch_size": job.score_batch,
        "runtime.channels_last": job.channels_last, "seed": job.seed,
    }
    return load_config("default", overrides=overrides)


def _fit_job(job: Job, cfg) -> dict[str, Any]:
    from scgan.training.fit import train

    t = time.perf_counter()
    train(cfg, job.model_dir, progress=False)
    wall = time.perf_counter() - t
    summary = json.loads((Path(job.model_dir) / "train_summary.json").read_text())
    return {
        "fit_s": wall, "features_s": summary["features_s"], "coreset_s": summary["coreset_s"],
        "calibration_s": summary["calibration_s"], "features_img_per_s": summary["n_train"] / summary["features_s"],
        "n_train": summary["n_train"], "n_val": summary["n_val"], "n_patches": summary["n_patches"],
        "bank_size": summary["bank_size"], "peak_rss_gb": _gb(peak_rss_bytes()),
    }


def _patchcore_score_job(job: Job, device: str) -> dict[str, Any]:
    from scgan.artifacts.model_file import load_model
    from scgan.data.datasets import dataset_for, eval_loader

    loaded = load_model(Path(job.model_dir) / "model.pt")
    ds = dataset_for(loaded.config.data, "test", loaded.input_spec)
    precision = job.precision if job.precision != "32-true" else None
    scorer = loaded.scorer(precision=precision, channels_last=job.channels_last).to(device)
    return _time_scoring(scorer, eval_loader(ds, job.score_batch), len(ds), device)  # --compile: SCGAN only


def run_worker(job: Job) -> dict[str, Any]:
    """Measure one phase of one configuration in this process; return the numbers."""
    import torch

    _quiet()
    torch.set_num_threads(job.threads)  # intra-op threads; the DataLoader runs in-process (num_workers=0)
    device = "cuda" if job.accelerator in ("gpu", "cuda") else "cpu"
    if job.model == "patchcore":
        if job.phase == "fit":  # on the CPU, as scgan train fits it
            return _fit_job(job, _patchcore_config(job))
        if job.phase == "score":
            return _patchcore_score_job(job, device)
        raise ValueError(f"unknown phase {job.phase!r} for the PatchCore detector")
    cfg = _scgan_config(job)
    if job.phase in ("train", "profile"):
        return _train_job(job, cfg, device)
    if job.phase == "score":
        return _score_job(job, cfg, device)
    raise ValueError(f"unknown phase {job.phase!r}")


def _worker_main(spec: str) -> int:
    job = Job(**json.loads(spec))
    result = run_worker(job)
    Path(job.result_path).write_text(json.dumps(result))
    return 0


# ---- the parent: data, subprocesses, table ---------------------------------------------------
def spawn(job: Job, workdir: Path, index: int) -> dict[str, Any]:
    """Run ``job`` in a fresh Python process; return its result (or {'error': ...})."""
    job.result_path = str(workdir / f"result_{index}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(job))]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not Path(job.result_path).exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return {"error": "\n".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(Path(job.result_path).read_text())


def _n_train_for(batches: int, batch: int, val_fraction: float = 0.1) -> int:
    """Smallest number of normal images whose training split (after the validation split) gives ``batches``."""
    from scgan.data.datasets import validation_size

    n = 2
    while (n - validation_size(n, val_fraction)) // batch < batches:
        n += 1
    return n


def prepare_data(args: argparse.Namespace, workdir: Path) -> tuple[str, str, str]:
    """(dataset, root, category): the user's data, or a demo set just large enough for the run."""
    if args.root:
        return args.dataset, args.root, args.category
    from scgan.data.demo import make_demo_dataset

    n_train = _n_train_for(args.warmup + args.steps, args.batch)
    n_test = args.score_batch * args.score_batches
    size = max(args.sizes)
    t = time.perf_counter()
    root = make_demo_dataset(workdir / "demo", n_train=n_train, n_test=n_test, image_size=size, seed=0,
                             categories=[args.category])
    print(f"demo data: {n_train} normal + {n_test} test images of {args.category} at {size} px "
          f"({time.perf_counter() - t:.0f} s, not timed)", file=sys.stderr, flush=True)
    return "mvtec", str(root), args.category


def _prototype_applies(args: argparse.Namespace) -> bool:
    return (args.base_channels == 64 and args.max_channels == 512 and args.batch == 16 and args.score_batch == 32)


def derive(rows: list[dict[str, Any]], peak: float, args: argparse.Namespace) -> None:
    """Add achieved GFLOP/s, shares of the matmul peak, MS-CAM overhead and prototype ratios in place."""
    by_key = {(r["size"], r["attention"]): r for r in rows}
    for r in rows:
        for phase in ("train", "score"):
            m = r.get(phase) or {}
            if "img_per_s" in m:
                m["gflop_per_s"] = m["img_per_s"] * m["flop_per_img"] / 1e9
                m["share_of_mm_peak"] = m["gflop_per_s"] / peak
        proto = PROTOTYPE.get(r["size"]) if _prototype_applies(args) else None
        if proto:
            for phase in ("train", "score"):
                m = r.get(phase) or {}
                if "img_per_s" in m:
                    m["vs_prototype"] = m["img_per_s"] / proto[phase]
        off = by_key.get((r["size"], False))
        if r["attention"] and off and "step_s" in (r.get("train") or {}) and "step_s" in (off.get("train") or {}):
            r["mscam_overhead"] = r["train"]["step_s"] / off["train"]["step_s"] - 1


def speed_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = ["S", "MS-CAM", "train img/s", "score img/s", "train peak RSS GB", "score peak RSS GB",
            "train GFLOP/img", "train GFLOP/s (% mm peak)", "score GFLOP/s (% mm peak)", "augment % of step",
            "data % of step", "MS-CAM adds"]
    if _prototype_applies(args):
        head += ["train / prototype", "score / prototype"]

    def rate(m: dict) -> str:
        if "gflop_per_s" not in m:
            return "-"
        return f"{num(m['gflop_per_s'], 0)} ({pct(m['share_of_mm_peak'], 0, unit='%')})"

    def ratio(m: dict) -> str:
        return f"{num(m['vs_prototype'], 2)}x" if "vs_prototype" in m else "-"

    body, failures = [], []
    for r in rows:
        t, s = r.get("train") or {}, r.get("score") or {}
        cells = [str(r["size"]), "on" if r["attention"] else "off", num(t.get("img_per_s"), 2, missing="-"),
                 num(s.get("img_per_s"), 1, missing="-"), num(t.get("peak_rss_gb"), 2, missing="-"),
                 num(s.get("peak_rss_gb"), 2, missing="-"),
                 num(t.get("flop_per_img", float("nan")) / 1e9, 2, missing="-"), rate(t), rate(s),
                 pct(t.get("augment_share"), missing="-"), pct(t.get("data_share"), missing="-"),
                 pct(r.get("mscam_overhead"), sign=True, unit="%", missing="-")]
        if _prototype_applies(args):
            cells += [ratio(t), ratio(s)]
        body.append(cells)
        for phase in ("train", "score"):
            if "error" in (r.get(phase) or {}):
                failures.append(f"\n{phase} at S={r['size']} MS-CAM {'on' if r['attention'] else 'off'} failed:\n"
                                f"```\n{r[phase]['error']}\n```")
    return "\n".join([markdown_table(head, body), *failures])


def patchcore_table(rows: list[dict[str, Any]], peak: float) -> str:
    """The PatchCore detector's fitting and scoring figures, one row per working resolution."""
    head = ["R", "fit s (features / coreset / calibration)", "features img/s", "score img/s", "fit peak RSS GB",
            "score peak RSS GB", "score GFLOP/img", "score GFLOP/s (% mm peak)", "patches -> bank"]
    body, failures = [], []
    for r in rows:
        f, s = r.get("fit") or {}, r.get("score") or {}
        if "img_per_s" in s:
            s["gflop_per_s"] = s["img_per_s"] * s["flop_per_img"] / 1e9
            s["share_of_mm_peak"] = s["gflop_per_s"] / peak
        fit = (f"{num(f['fit_s'], 1)} ({num(f['features_s'], 1)} / {num(f['coreset_s'], 1)} / "
               f"{num(f['calibration_s'], 1)})" if "fit_s" in f else "-")
        rate = (f"{num(s['gflop_per_s'], 0)} ({pct(s['share_of_mm_peak'], 0, unit='%')})"
                if "gflop_per_s" in s else "-")
        body.append([str(r["size"]), fit, num(f.get("features_img_per_s"), 1, missing="-"),
                     num(s.get("img_per_s"), 1, missing="-"), num(f.get("peak_rss_gb"), 2, missing="-"),
                     num(s.get("peak_rss_gb"), 2, missing="-"),
                     num(s.get("flop_per_img", float("nan")) / 1e9, 2, missing="-"), rate,
                     f"{f['n_patches']} -> {f['bank_size']}" if "bank_size" in f else "-"])
        for phase in ("fit", "score"):
            if "error" in (r.get(phase) or {}):
                failures.append(f"\n{phase} at R={r['size']} failed:\n```\n{r[phase]['error']}\n```")
    return "\n".join([markdown_table(head, body), *failures])


_OP_GROUPS = (("convolution (fwd + bwd)", ("conv", "mkldnn_convolution")),
              ("batch norm", ("batch_norm",)),
              ("optimizer (Adam)", ("_foreach", "adam", "addcdiv", "lerp")),
              ("augmentation indexing", ("index", "gather", "scatter")))


def profile_summary(result: dict[str, Any], peak: float) -> str:
    """Where a training step's self CPU time goes, by operator group, and the convolutions' GFLOP/s."""
    ops = result.get("profile_ops") or []
    total = sum(o["self_cpu_s"] for o in ops) or float("nan")
    groups: dict[str, float] = {}
    for o in ops:
        name = o["op"].lower()
        group = next((g for g, keys in _OP_GROUPS if any(k in name for k in keys)), "other")
        groups[group] = groups.get(group, 0.0) + o["self_cpu_s"]
    lines = [f"{g}: {pct(s / total, unit='%')} of self CPU time ({s:.3f} s/step)"
             for g, s in sorted(groups.items(), key=lambda kv: -kv[1])]
    conv = groups.get("convolution (fwd + bwd)")
    if conv:
        flops_step = result["flop_per_img"] * result.get("batch", 1)
        rate = flops_step / conv / 1e9
        share = pct(rate / peak, 0, unit='%')
        lines.append(f"convolutions run at ~{rate:.0f} GFLOP/s = {share} of the fp32 matmul peak "
                     f"({peak:.0f} GFLOP/s); FLOPs counted by FlopCounterMode are convolutions and matmuls only")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="patchcore and/or scgan, comma-separated")
    p.add_argument("--resolutions", default=None, help="the PatchCore detector's working resolutions R, "
                                                       "comma-separated (default: preset default's)")
    p.add_argument("--sizes", default="64,128,256", help="SCGAN's image sizes S, comma-separated; the demo images "
                                                         "are made at the largest")
    p.add_argument("--batch", type=int, default=16, help="SCGAN's training batch size")
    p.add_argument("--score-batch", type=int, default=32, help="scoring batch size (both models)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first (FLOPs counted on the first)")
    p.add_argument("--score-batches", type=int, default=3, help="timed scoring batches (the test split's size)")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"],
                   help="Lightning precision for SCGAN's training; scoring runs its network (SCGAN's generator, "
                        "the PatchCore detector's backbone) under the same autocast")
    p.add_argument("--channels-last", action="store_true", help="train.channels_last=true (training and scoring)")
    p.add_argument("--compile", action="store_true", help="torch.compile SCGAN's generator for scoring "
                                                          "(compile time reported apart)")
    p.add_argument("--base-channels", type=int, default=64)
    p.add_argument("--max-channels", type=int, default=512, help="channel cap (default 512 = the prototype's)")
    p.add_argument("--attention", default="both", choices=["both", "on", "off"], help="MS-CAM on, off or both")
    p.add_argument("--phases", default="train,score", help="train (SCGAN's training, the PatchCore detector's "
                                                           "fit) and/or score")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all available cores)")
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--root", default="", help="an MVTec-layout root to use instead of generated demo images")
    p.add_argument("--dataset", default="mvtec", help="with --root: mvtec | btad | folder")
    p.add_argument("--category", default="washer", help="category (demo: washer = object/copypaste, weave = "
                                                         "texture/copypaste_color)")
    p.add_argument("--mm-size", type=int, default=4096, help="side of the torch.mm measuring the fp32 peak")
    p.add_argument("--profile", action="store_true", help="instead of the tables: torch.profiler's top operators "
                                                          "of SCGAN's training steps (MS-CAM on) at each size")
    p.add_argument("--top-ops", type=int, default=20, help="operators listed by --profile")
    p.add_argument("--quick", action="store_true", help="tiny sizes and network, to check the script works")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    if p.parse_args(argv).quick:  # tiny defaults; flags given explicitly still win
        p.set_defaults(sizes="32,64", resolutions="64", batch=4, score_batch=4, steps=2, warmup=1, score_batches=2,
                       base_channels=8, max_channels=32, mm_size=512)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or not set(args.models) <= set(MODELS):
        p.error(f"--models takes {' and/or '.join(MODELS)}")
    if args.profile:
        args.models = ["scgan"]
    if args.resolutions is None:
        from scgan.config import load_config

        args.resolutions = str(load_config("default").patchcore.resolution)
    args.resolutions = [int(s) for s in str(args.resolutions).split(",") if s.strip()]
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    args.phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    if not set(args.phases) <= {"train", "score"}:
        p.error("--phases takes train and/or score")
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1 (FLOPs are counted on the first, untimed, step)")
    args.threads = args.threads or available_cores()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args.threads)
    load = env["load_average_at_start"]
    if load and load[0] > 0.5:
        print(f"WARNING: load average {load[0]:.2f} at start: the machine is not idle, timings are not results",
              file=sys.stderr)
    if args.precision != "32-true" and args.accelerator == "cpu" and env.get("mkldnn_bf16_native") is False:
        print(f"WARNING: this CPU ({env['cpu_capability']}) has no native bf16: oneDNN emulates it and "
              "bf16 runs many times slower than fp32 here", file=sys.stderr)
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    import torch

    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops(args.mm_size, "float32", device)
    peaks = {"float32": peak}
    if args.precision.startswith("bf16"):
        peaks["bfloat16"] = matmul_peak_gflops(min(args.mm_size, 2048), "bfloat16", device, reps=2)
    print(f"fp32 torch.mm peak ({args.mm_size}^3, {args.threads} threads): {peak:.0f} GFLOP/s", file=sys.stderr)

    t_start = time.time()
    rows: list[dict[str, Any]] = []
    patchcore_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        workdir = Path(tmp)
        dataset, root, category = prepare_data(args, workdir)
        index = itertools.count()

        def measure(label: str, model: str, phase: str, size: int, attention: bool = True) -> dict[str, Any]:
            job = Job(phase=phase, size=size, attention=attention, batch=args.batch, score_batch=args.score_batch,
                      steps=args.steps, warmup=args.warmup, precision=args.precision,
                      channels_last=args.channels_last, compile=args.compile, base_channels=args.base_channels,
                      max_channels=args.max_channels, threads=args.threads, accelerator=args.accelerator,
                      root=root, dataset=dataset, category=category, top_ops=args.top_ops, model=model,
                      model_dir=str(workdir / f"patchcore_{size}"))
            t = time.perf_counter()
            result = spawn(job, workdir, next(index))
            rate = result.get("img_per_s", result.get("features_img_per_s"))
            print(f"{label} {phase:7s} {time.perf_counter() - t:6.0f} s  "
                  + ("FAILED" if "error" in result else f"{rate:.2f} img/s"), file=sys.stderr, flush=True)
            return result

        if "patchcore" in args.models:
            for size in args.resolutions:
                row: dict[str, Any] = {"size": size}
                row["fit"] = measure(f"patchcore R={size}", "patchcore", "fit", size)  # scoring needs the bank
                if "score" in args.phases and "error" not in row["fit"]:
                    row["score"] = measure(f"patchcore R={size}", "patchcore", "score", size)
                patchcore_rows.append(row)
        if "scgan" in args.models:
            attn = [True] if args.profile else {"both": [True, False], "on": [True], "off": [False]}[args.attention]
            for size in args.sizes:
                for attention in attn:
                    row = {"size": size, "attention": attention}
                    for phase in ["profile"] if args.profile else args.phases:
                        label = f"scgan S={size} MS-CAM {'on ' if attention else 'off'}"
                        row["train" if phase == "profile" else phase] = measure(label, "scgan", phase, size,
                                                                                attention)
                    rows.append(row)

    env["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    derive(rows, peak, args)
    settings = (f"precision {args.precision}, channels_last {args.channels_last}, compile (scoring) {args.compile}, "
                f"batch {args.batch} / score batch {args.score_batch}, base {args.base_channels}, cap "
                f"{args.max_channels}, {args.steps} timed steps after {args.warmup}, {args.threads} threads")
    print(f"\n{env['cpu']} ({env['cpu_capability']}, native bf16: {env.get('mkldnn_bf16_native')}), "
          f"torch {env['torch']}; fp32 mm peak {peak:.0f} GFLOP/s; {settings}\n")
    report: dict[str, Any] = {"environment": env, "settings": {k: v for k, v in vars(args).items()},
                              "matmul_peak_gflops": peaks, "results": rows, "patchcore": patchcore_rows,
                              "wall_time_s": time.time() - t_start}
    if args.profile:
        for r in rows:
            t = r["train"]
            print(f"### S={r['size']}: training step {t.get('step_s', float('nan')):.3f} s, "
                  f"{t.get('flop_per_img', float('nan')) / 1e9:.2f} GFLOP/img\n")
            if "error" in t:
                print(f"```\n{t['error']}\n```\n")
                continue
            t["batch"] = args.batch
            print("```\n" + t["profile_table"] + "\n```\n")
            summary = profile_summary(t, peak)
            t["summary"] = summary
            print(summary + "\n")
    else:
        if patchcore_rows:
            print("The PatchCore detector (preset default), R = working resolution:\n")
            print(patchcore_table(patchcore_rows, peak) + "\n")
        if rows:
            print("SCGAN (preset paper's networks), S = image size:\n")
            print(speed_table(rows, args))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {out}", file=sys.stderr)
    failed = any("error" in m for r in rows + patchcore_rows for m in r.values() if isinstance(m, dict))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    sys.exit(main())
