"""How fast the inspection record answers and how fast ``scgan watch`` keeps up, beside ``scgan predict``.

    python benchmarks/record_speed.py --checkpoint runs/demo/train/model.pt            # 1,000,000 rows, 200 images
    python benchmarks/record_speed.py --quick --checkpoint runs/demo/train/model.pt    # 20,000 rows, 30 images
    python benchmarks/record_speed.py --rows 1000000 --db postgresql://user@host/db    # the queries on PostgreSQL

1. Queries: ``--rows`` generated decisions (seeded; 60 days, 3 model versions, 5% anomalous) in a fresh store
   (SQLite in a temporary folder, or ``--db``, which must be an empty database), then the best of 3 of: the counts
   per day, the counts per model version, the latest 100, the latest 100 anomalous above a score since a date.
2. Files per second (with ``--checkpoint``): ``--images`` copies of the demo images scored by ``scgan predict``
   (in process, the model loaded once, no overlays) and by ``scgan watch`` (a subprocess already watching, no
   overlays; from the copy of the first file until the last decision is in the store), and their ratio.

Timings mean something only on an otherwise idle machine; OMP_NUM_THREADS is left as set.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scgan.record.queries import Filter, counts, latest
from scgan.record.schema import decisions, models
from scgan.record.store import Store
from scgan.record.url import resolve_url
from scgan.utils.tables import markdown_table, num


def fill(store: Store, n: int, seed: int = 0, batch: int = 50_000) -> float:
    """Insert ``n`` generated decisions; seconds taken."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    t0 = time.perf_counter()
    with store.engine.begin() as conn:
        ids = []
        for k in range(3):
            ids.append(conn.execute(models.insert().values(
                sha256=f"{k:02d}" + "0" * 62, preset="default", kind="patchcore", score_name="patch_max",
                threshold=2.0, first_seen=start + dt.timedelta(days=20 * k)).returning(models.c.id)).scalar_one())
    for lo in range(0, n, batch):
        m = min(batch, n - lo)
        seconds = np.sort(rng.uniform(0, 60 * 86400, m)) if lo == 0 else rng.uniform(0, 60 * 86400, m)
        score = rng.gamma(4.0, 0.4, m)
        anomalous = rng.random(m) < 0.05
        score[anomalous] += 2.0
        rows = [{"time": start + dt.timedelta(seconds=float(s)), "source": "watch", "watch": "/line/camera1",
                 "path": f"/line/camera1/{lo + i:08d}.png", "content_sha256": f"{lo + i:064x}", "size": 123456,
                 "score_name": "patch_max", "score": float(sc), "threshold": 2.0, "score_normalized": float(sc) / 2,
                 "threshold_normalized": 1.0, "decision": "anomalous" if a else "normal",
                 "scores": {"patch_max": float(sc)}, "model_id": ids[min(int(s // (20 * 86400)), 2)],
                 "overlay": None} for i, (s, sc, a) in enumerate(zip(seconds, score, anomalous))]
        with store.engine.begin() as conn:
            conn.execute(decisions.insert(), rows)
    return time.perf_counter() - t0


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def query_times(store: Store) -> list[list[str]]:
    since = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
    flt = Filter(since=since, decision="anomalous", score_above=3.0)
    cases = [("counts per day", lambda: counts(store, "day")),
             ("counts per model version", lambda: counts(store, "model")),
             ("latest 100", lambda: latest(store, limit=100)),
             ("latest 100 anomalous, score > 3, since 2026-02-01", lambda: latest(store, flt, 100))]
    return [[name, num(best_of(fn), 3)] for name, fn in cases]


def _demo_images(folder: Path, n: int, size: int) -> list[Path]:
    from scgan.data.demo import DEMO_CATEGORIES, make_demo_dataset

    make_demo_dataset(folder, n_train=max(4, n // len(DEMO_CATEGORIES)), n_test=4, image_size=size, seed=0)
    found = sorted(folder.rglob("*.png"))
    found = [p for p in found if "ground_truth" not in p.parts]
    return [found[i % len(found)] for i in range(n)]


def files_per_second(checkpoint: str, n: int, size: int, tmp: Path) -> list[list[str]]:
    from scgan.inference.detector import Detector
    from scgan.inference.predict import run_predict

    sources = _demo_images(tmp / "demo", n, size)
    batch = tmp / "batch"
    batch.mkdir()
    for i, src in enumerate(sources):
        shutil.copy(src, batch / f"{i:05d}.png")
    det = Detector.load(checkpoint)
    det.predict(str(sources[0]))  # the first image pays for lazy imports: not timed, here or in the watcher
    t = time.perf_counter()
    run_predict([batch], tmp / "predict", detector=det, overlays=False, progress=False)
    predict_s = time.perf_counter() - t

    inbox, out = tmp / "inbox", tmp / "watch"
    inbox.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "scgan", "watch", str(inbox), "--checkpoint", checkpoint,
                             "--output", str(out), "--no-overlays"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()  # "watching ...": the model is loaded
        store = Store(resolve_url(None, out))
        shutil.copy(sources[0], inbox / "warm-up.png")
        while store.count_watched(str(inbox.resolve())) < 1:
            time.sleep(0.05)
        t = time.perf_counter()
        for i, src in enumerate(sources):  # a camera: written beside, renamed into place
            shutil.copy(src, inbox / f".{i:05d}.tmp")
            os.replace(inbox / f".{i:05d}.tmp", inbox / f"{i:05d}.png")
        while store.count_watched(str(inbox.resolve())) < n + 1:  # the warm-up's decision too
            if proc.poll() is not None:
                raise RuntimeError(f"scgan watch stopped early (exit {proc.returncode})")
            time.sleep(0.05)
        watch_s = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return [["scgan predict (in process, batches of 16)", num(n / predict_s, 1)],
            ["scgan watch (subprocess, file by file)", num(n / watch_s, 1)],
            ["watch / predict", num(predict_s / watch_s, 2)]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--db", default=None, help="an empty database's URL (default: SQLite in a temporary folder)")
    p.add_argument("--checkpoint", default=None, help="the model for files per second (left out: not measured)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=256, help="the images' side in pixels")
    p.add_argument("--quick", action="store_true", help="20,000 rows and 30 images of 64 px")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.images, args.size = 20_000, 30, 64
    with tempfile.TemporaryDirectory(prefix="record_speed_") as tmp:
        tmp = Path(tmp)
        with Store(resolve_url(args.db, tmp)) as store:
            fill_s = fill(store, args.rows)
            print(f"{args.rows} generated decisions written in {fill_s:.1f} s to {store.name}\n")
            print(markdown_table(["query", "seconds (best of 3)"], query_times(store)))
        if args.checkpoint:
            print(f"\n{args.images} images of {args.size} px, model {args.checkpoint}:\n")
            print(markdown_table(["scoring", "files / s"],
                                 files_per_second(args.checkpoint, args.images, args.size, tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
