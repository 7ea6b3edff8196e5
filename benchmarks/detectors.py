"""The product's detectors side by side: the `default` preset (the PatchCore detector) against the `scgan` preset
(SCGAN + learned head), or any preset with settings of its own (``NAME=PRESET:key=value,...``), on the shared
bottle, metal_nut, magnetic_tile and magnetic_tile_native data, seeds 0-2, each as a user runs it.

Every run is two fresh processes, `scgan train` then `scgan test`, so that their CPU time (user + system) and
peak memory are the process's own. The reported model is the last state (no selection); its test metrics come
from `scgan test` (pixel metrics at the masks' 256 px). Scoring speed is `benchmarks/scoring_speed.py`'s.

    python benchmarks/detectors.py --presets default,scgan --seeds 0,1,2 --threads 1 --jobs 2
    python benchmarks/detectors.py --presets default --detector unpadded=default:patchcore.pad=0
    python benchmarks/detectors.py --table-only        # the table from the runs already made

Writes results/detectors/<preset>/<category>_seed<k>/{run.json, train/, test/} (weights are not committed) and
results/detectors/table.md. A finished run (its run.json) is never redone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Where each category lies under the shared data folder (--data), and its layout.
CATEGORIES = {"bottle": ["--dataset", "mvtec", "--root", "mvtec_ad", "--category", "bottle"],
              "metal_nut": ["--dataset", "mvtec", "--root", "mvtec_ad", "--category", "metal_nut"],
              "magnetic_tile": ["--dataset", "folder", "--root", "magnetic_tile"],
              "magnetic_tile_native": ["--dataset", "folder", "--root", "magnetic_tile_native"]}


def data_args(category: str, data: Path) -> list[str]:
    """The category's --dataset/--root/--category options, its root under ``data``."""
    args = list(CATEGORIES[category])
    args[3] = str(data / args[3])
    return args


def timed(cmd: list[str], threads: int, log: Path) -> dict:
    """Run ``cmd`` in a fresh process; its wall seconds, CPU seconds (user + system) and peak RSS (MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def detector_spec(spec: str) -> tuple[str, str, list[str]]:
    """``NAME=PRESET:key=value,key=value`` (or just ``PRESET``) -> (name, preset, settings)."""
    name, _, rest = spec.partition("=") if "=" in spec.split(":", 1)[0] else (spec, "", spec)
    preset, _, settings = rest.partition(":")
    return name, preset, [s for s in settings.split(",") if s]


def run(spec: str, category: str, seed: int, threads: int, out: Path, data: Path) -> dict:
    """Fit and test one detector (a preset, or ``NAME=PRESET:settings``) on one category and seed, in fresh
    processes; its record (reused when the run was made before)."""
    preset, base, settings = detector_spec(spec)
    dest = out / preset / f"{category}_seed{seed}"
    if (dest / "run.json").exists():
        return json.loads((dest / "run.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    scgan = [sys.executable, "-c", f"import torch, sys; torch.set_num_threads({threads}); "
                                   "from scgan.cli import main; sys.exit(main())"]
    fit = timed([*scgan, "train", "--preset", base, *data_args(category, data), "--output", str(dest / "train"),
                 "--overwrite", "--no-progress", f"seed={seed}", *settings], threads, dest / "train.log")
    test = timed([*scgan, "test", "--checkpoint", str(dest / "train" / "model.pt"), "--output", str(dest / "test"),
                  "--no-progress"], threads, dest / "test.log")
    m = json.loads((dest / "test" / "metrics.json").read_text())
    record = {"preset": preset, "base_preset": base, "settings": settings, "category": category, "seed": seed,
              "threads": threads, "fit": fit, "test": test,
              "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"], "aupro": m["aupro"],
              "default_score": m["default_score"], "pixel_metrics_resolution": m.get("pixel_metrics_resolution"),
              "at_threshold": m.get("at_threshold"), "info": m.get("info", {})}
    (dest / "run.json").write_text(json.dumps(record, indent=2))
    print(f"{preset} {category} seed {seed}: image AUROC {100 * record['image_auroc']:.1f}, pixel "
          f"{100 * record['pixel_auroc']:.1f}, fit+test {(fit['cpu_s'] + test['cpu_s']) / 60:.1f} CPU min",
          flush=True)
    return record


def _mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def _rate(runs: list[dict], key: str) -> str:
    """Mean ± std over seeds of a rate at the model's threshold ("n/a" where a run has none)."""
    values = [(r.get("at_threshold") or {}).get(key) for r in runs]
    return "n/a" if any(v is None for v in values) else _mean_std(values)


def records(out: Path, preset: str, category: str) -> list[dict]:
    """The run records of one detector on one category (a record written before it kept the decisions at the
    threshold takes them from its test/metrics.json)."""
    runs = []
    for path in sorted((out / preset).glob(f"{category}_seed*/run.json")):
        r = json.loads(path.read_text())
        metrics = path.parent / "test" / "metrics.json"
        if r.get("at_threshold") is None and metrics.exists():
            r["at_threshold"] = json.loads(metrics.read_text()).get("at_threshold")
        runs.append(r)
    return runs


def defect_table(out: Path, presets: list[str]) -> str:
    """Catch rate per defect type at the model's own threshold, mean over seeds (%)."""
    rows = ["| category | preset | false alarms | " + "caught per defect type |", "|---|---|---|---|"]
    for cat in CATEGORIES:
        for preset in presets:
            runs = [r for r in records(out, preset, cat) if r.get("at_threshold")]
            if not runs:
                continue
            kinds = sorted({k for r in runs for k in r["at_threshold"]["by_defect"]})
            caught = ", ".join(
                f"{k} {100 * np.mean([r['at_threshold']['by_defect'][k]['catch_rate'] for r in runs]):.0f}"
                for k in kinds)
            rows.append(f"| {cat} | {preset} | {_rate(runs, 'false_alarm_rate')} | {caught} |")
    return "\n".join(rows)


def table(out: Path, presets: list[str], speed: dict) -> str:
    """The markdown table of the runs under ``out``; ``speed`` is scoring_speed.py's record (may be empty)."""
    rows = ["| category | preset | image AUROC | pixel AUROC | AUPRO | caught at threshold | false alarms | "
            "fit + test CPU min | peak RSS fit / test (MB) | images/s at 256 px: 2 threads / 2 workers | seeds |",
            "|---" * 11 + "|"]
    for cat in CATEGORIES:
        for preset in presets:
            runs = records(out, preset, cat)
            if not runs:
                continue
            cpu = [(r["fit"]["cpu_s"] + r["test"]["cpu_s"]) / 60 for r in runs]
            rss = [max(r[step]["peak_rss_mb"] for r in runs) for step in ("fit", "test")]
            ips = [speed.get(key, {}).get(preset, {}).get(cat) for key in ("images_per_s", "images_per_s_workers")]
            rows.append(f"| {cat} | {preset} | {_mean_std([r['image_auroc'] for r in runs])} | "
                        f"{_mean_std([r['pixel_auroc'] for r in runs])} | {_mean_std([r['aupro'] for r in runs])} | "
                        f"{_rate(runs, 'catch_rate')} | {_rate(runs, 'false_alarm_rate')} | "
                        f"{_mean_std(cpu, 1.0)} | {rss[0]:.0f} / {rss[1]:.0f} | "
                        f"{' / '.join('n/a' if v is None else f'{v:.1f}' for v in ips)} | "
                        f"{', '.join(str(r['seed']) for r in runs)} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="default,scgan")
    ap.add_argument("--detector", action="append", default=[], metavar="NAME=PRESET:key=value,...",
                    help="a preset with settings of its own, under a name of its own (repeatable)")
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--output", default="results/detectors")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--speed", default="results/detectors/scoring_speed.json",
                    help="benchmarks/scoring_speed.py's output, for the images/s column")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.output)
    specs = [p for p in args.presets.split(",") if p] + list(args.detector)
    presets = [detector_spec(s)[0] for s in specs]
    if not args.table_only:
        todo = [(p, c, int(s)) for s in args.seeds.split(",") for p in specs for c in args.categories.split(",")]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: run(*job, args.threads, out, Path(args.data).resolve()), todo))
    speed = json.loads(Path(args.speed).read_text()) if Path(args.speed).exists() else {}
    text = table(out, presets, speed)
    commits = sorted({json.loads(p.read_text()).get("git_commit", "?")[:7]
                      for preset in presets for p in (out / preset).glob("*_seed*/train/train_summary.json")})
    threads = sorted({json.loads(p.read_text())["threads"] for preset in presets
                      for p in (out / preset).glob("*_seed*/run.json")})
    header = (f"# Detectors side by side\n\nRuns at commit {', '.join(commits)}, {'/'.join(map(str, threads))} torch "
              "thread(s) per run (`python benchmarks/detectors.py --presets ... --seeds ... --threads N --jobs M`); "
              "this table: "
              f"`python benchmarks/detectors.py {' '.join(sys.argv[1:])}`. CPU time is user + system of the train and "
              "test processes (getrusage of each child); mean ± std over seeds; pixel metrics at the masks' 256 px; "
              "last state, no selection. Scoring speed: `benchmarks/scoring_speed.py` (its JSON, --speed).\n\n")
    text += ("\n\nCaught per defect type at the model's own threshold (%, mean over seeds):\n\n"
             + defect_table(out, presets))
    (out / "table.md").write_text(header + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
