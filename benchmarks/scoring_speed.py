"""Scoring speed at the default working resolution: images/s of ``scgan predict``, ``scgan serve`` and
``Detector.predict``, each backend side by side, and the ratio to this machine's limit.

For each model given, its category's test images are scored, every candidate once per round, the rounds
interleaved (``--rounds``, the median reported) so that a machine whose load changes disturbs them alike:

- ``Detector.predict``: uint8 arrays decoded beforehand (file decoding not timed), in the detector's batches, on
  torch with ``--threads`` threads, on torch with ``--threads`` workers of one thread each (what ``scgan serve
  --workers N`` does), and on ONNX Runtime (the exported graph, as ``--backend auto`` runs the PatchCore detector);
- ``scgan predict``: :func:`scgan.inference.predict.run_predict` over the image files, overlays written as by
  default, the detector built before the clock starts (start-up excluded), for each backend;
- ``scgan serve``: a real server (``--backend auto``) with 1 and 2 workers, twice as many clients as workers
  posting the test images, overlays in the answers (``/predict``'s default).

The limit: the multiply-adds per image of the backbone up to its deepest tap (``FlopCounterMode`` over the
features of one image at the working resolution) and of the nearest-neighbour search (patches x bank x D, and the
whitening's patches x D x D), against what this machine does per second on the same kernels: the backbone at the
fp32 matmul peak (best of 5 ``torch.mm`` of 2048 x 2048, all threads) and the search at the rate of a ``torch.mm``
of the search's own shape. ``limit images/s`` = 1 / (backbone MACs / peak + search MACs / search rate); a ratio of
1 would be every cycle doing useful multiply-adds. Run it on an idle machine (`uptime`).

    python benchmarks/scoring_speed.py --output results/detectors/scoring_speed.json \\
        default/bottle=results/surfaces/default/bottle_seed0/train/model.pt ...
    python benchmarks/scoring_speed.py --quick default/bottle=...    # checks the script (one round, 16 images)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scgan.data.io import load_image
from scgan.inference.detector import Detector
from scgan.utils.runinfo import available_cores, cpu_model, run_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import matmul_peak_gflops  # noqa: E402 (a sibling script)


def detector_rate(det: Detector, images: list[np.ndarray], workers: int = 1) -> float:
    """Images per second of ``workers`` threads, each scoring its share through ``det.predict``."""
    from concurrent.futures import ThreadPoolExecutor

    shares = [images[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        list(pool.map(det.predict, shares))
    return len(images) / (time.perf_counter() - start)


def predict_rate(det: Detector, files: list[Path], work: Path) -> float:
    """Images per second of ``scgan predict`` (run_predict, overlays written) with an already built detector."""
    from scgan.inference.predict import run_predict

    out = work / f"predict_{det.backend}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    res = run_predict(files, out, detector=det, progress=False)
    wall = time.perf_counter() - start
    if len(res.predictions) != len(files):
        raise RuntimeError(f"scgan predict scored {len(res.predictions)} of {len(files)} images")
    return len(files) / wall


def ray_rate(model: str, files: list[Path], work: Path, workers: int) -> float:
    """Images per second of ``scgan predict --engine ray --workers N`` on the local Ray (overlays written; the
    actors' start, loading the model, is inside the time: each run starts its own)."""
    from scgan.inference.cluster import run_predict_ray

    out = work / f"ray_{workers}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    res = run_predict_ray(files, out, model=model, workers=workers, progress=False)
    wall = time.perf_counter() - start
    if len(res.predictions) != len(files):
        raise RuntimeError(f"the Ray engine scored {len(res.predictions)} of {len(files)} images")
    return len(files) / wall


def serve_rate(model: str, files: list[Path], workers: int, requests: int) -> float:
    """Requests (images) per second of a real ``scgan serve --workers N`` (backend auto) with 2N clients."""
    from serve_latency import Client, _free_port, _multipart, start_server

    port = _free_port()
    proc = start_server(Path(model), port, workers)
    try:
        bodies = [_multipart(f.name, f.read_bytes()) for f in files]
        Client(port, *bodies[0], overlay=True).post()  # warm-up
        from concurrent.futures import ThreadPoolExecutor

        def share(k: int) -> int:
            c = None
            for i in range(k, requests, 2 * workers):
                body, ctype = bodies[i % len(bodies)]
                c = c or Client(port, body, ctype, overlay=True)
                c.body, c.headers = body, {"Content-Type": ctype}
                c.post()
            return 0

        with ThreadPoolExecutor(2 * workers) as pool:
            start = time.perf_counter()
            list(pool.map(share, range(2 * workers)))
        return requests / (time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(30)


def ort_session(graph: str, threads: int = 0, spin: str = "1"):
    """An ONNX Runtime CPU session on ``graph``: ``threads`` intra-op threads (0: one per core), idle threads
    spinning or not (``spin`` "1" / "0"; the product's sessions sleep: ``OnnxScorer``)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return ort.InferenceSession(graph, o, providers=["CPUExecutionProvider"])


def parallel_rate(pair: list, pool, xs: list[np.ndarray]) -> float:
    """Images/s of two sessions (``pair``) in ``pool``'s two threads, each taking every other image one at a time:
    how the product spreads a batch over one-thread sessions."""
    start = time.perf_counter()
    list(pool.map(lambda i: [pair[i].run(None, {"image": x}) for x in xs[i::2]], (0, 1)))
    return len(xs) / (time.perf_counter() - start)


def runtime_candidates(model: str, images: list[np.ndarray], rounds: int) -> dict[str, list[float]]:
    """The choices behind the ONNX backend, side by side on the model's cached graph: images/s of one ONNX Runtime
    session (a thread per core) fed batches of 1, 4 and 16 images, of two one-thread sessions in parallel threads,
    of one session with its threads' spinning off; and ms per overlay PNG at zlib level 6 (PIL's) and 1."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from scgan.data.io import image_to_array, prepare_image
    from scgan.inference.backend import choose_backend

    graph = str(choose_backend(model, "onnx").path)
    spec = Detector.load(graph).spec
    xs = [image_to_array(prepare_image(im, spec)[None]).astype(np.float32) for im in images]

    def batches(s, size: int) -> float:
        start = time.perf_counter()
        for k in range(0, len(xs), size):
            s.run(None, {"image": np.concatenate(xs[k:k + size])})
        return len(xs) / (time.perf_counter() - start)

    one, pair, still = ort_session(graph), [ort_session(graph, 1), ort_session(graph, 1)], ort_session(graph, spin="0")
    pool = ThreadPoolExecutor(2)

    def parallel() -> float:
        return parallel_rate(pair, pool, xs)

    def png_ms(level: int) -> float:
        picture = Image.fromarray(np.concatenate([images[0], np.full((40, *images[0].shape[1:]), 255, np.uint8)]))
        start = time.perf_counter()
        for _ in range(10):
            picture.save(io.BytesIO(), format="PNG", compress_level=level)
        return (time.perf_counter() - start) * 100

    cands = {f"ORT 1 session, batch {b}": (lambda b=b: batches(one, b)) for b in (1, 4, 16)}
    cands.update({"ORT 2 one-thread sessions in parallel, batch 1": parallel,
                  "ORT 1 session, no spinning, batch 1": lambda: batches(still, 1),
                  "overlay PNG ms, zlib level 6": lambda: png_ms(6), "overlay PNG ms, zlib level 1": lambda: png_ms(1)})
    for fn in (lambda: batches(one, 1), lambda: batches(still, 1), parallel):
        fn()  # warm-up
    out: dict[str, list[float]] = {name: [] for name in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            out[name].append(fn())
    pool.shutdown()
    return out


def work_per_image(model: str, image: np.ndarray) -> dict[str, float]:
    """Multiply-adds of one image at the working resolution: the backbone up to its deepest tap (counted), the
    whitening and the nearest-neighbour search (patches x D x D, patches x bank x D)."""
    from torch.utils.flop_counter import FlopCounterMode

    from scgan.artifacts.model_file import load_model
    from scgan.data.io import image_to_array, prepare_image
    from scgan.models.patchcore.model import embed

    loaded = load_model(model)
    scorer = loaded.scorer().eval()
    x = torch.from_numpy(image_to_array(prepare_image(image, loaded.input_spec)[None]).astype(np.float32))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        features = embed(scorer.backbone, x, scorer.layout)
    _, d, h, w = features.shape
    bank = scorer.memory.bank.shape[0]
    return {"input": [int(s) for s in x.shape[2:]], "patches": h * w, "bank": bank, "dims": d,
            "backbone_macs": counter.get_total_flops() / 2, "whitening_macs": float(h * w * d * d),
            "search_macs": float(h * w * bank * d)}


def search_rate_gmacs(patches: int, bank: int, dims: int, reps: int = 5) -> float:
    """Best-of-``reps`` GMAC/s of the search's own matmul: (patches x dims) @ (dims x bank)."""
    g = torch.Generator().manual_seed(0)
    q, m = torch.randn(patches, dims, generator=g), torch.randn(dims, bank, generator=g)
    torch.mm(q, m)
    best = min(_timed(lambda: torch.mm(q, m)) for _ in range(reps))
    return patches * bank * dims / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_files(model: str, with_labels: bool = False):
    """The test image files of the model's own data (and, ``with_labels``, their labels: 0 normal, 1 anomalous)."""
    from scgan.artifacts.model_file import load_model
    from scgan.data.datasets import build_dataset

    d = load_model(model).config.data
    ds = build_dataset(d.dataset, d.root, d.category, "test", 256, require_masks=False)
    files = [Path(s.path) for s in ds.samples]
    return (files, ds.labels) if with_labels else files


def measure(key: str, path: str, args: argparse.Namespace, peak: float, work: Path, rounds: int,
            limit_images: int | None) -> dict:
    """Every candidate's images/s on one model, side by side, its work per image and its limit; prints a table."""
    files = test_files(path)[:limit_images]
    images = [load_image(f, None) for f in files]
    dets = {b: Detector.load(path, backend=b) for b in ("torch", "auto")}  # start-up: not timed
    candidates = {
        "Detector.predict torch": lambda d=dets["torch"]: detector_rate(d, images),
        "Detector.predict torch workers": lambda d=dets["torch"]: _one_thread(detector_rate, d, images,
                                                                             args.threads),
        "Detector.predict auto": lambda d=dets["auto"]: detector_rate(d, images),
        "scgan predict torch": lambda d=dets["torch"]: predict_rate(d, files, work),
        "scgan predict auto": lambda d=dets["auto"]: predict_rate(d, files, work),
    }
    if not args.no_serve:
        n = len(files) if not args.quick else 8
        candidates["scgan serve auto, 1 worker"] = lambda: serve_rate(path, files, 1, n)
        candidates["scgan serve auto, 2 workers"] = lambda: serve_rate(path, files, 2, n)
    if args.ray:
        from scgan.inference.cluster import connect

        connect(None, args.threads)  # a local Ray of --threads CPUs, started once (not timed)
        candidates["scgan predict --engine ray, 1 worker"] = lambda: ray_rate(path, files, work, 1)
        candidates["scgan predict --engine ray, 2 workers"] = lambda: ray_rate(path, files, work, 2)
    for d in dets.values():
        d.predict(images[: d.batch_size])  # warm-up: first-call allocations
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            rates[name].append(fn())
    counts = work_per_image(path, images[0])
    search_rate = search_rate_gmacs(counts["patches"], counts["bank"], counts["dims"])
    limit = 1.0 / ((counts["backbone_macs"] + counts["whitening_macs"]) / (peak / 2 * 1e9)
                   + counts["search_macs"] / (search_rate * 1e9))
    backends = {name: (dets["torch"] if name.endswith("torch") or "torch " in name else dets["auto"]).backend
                for name in candidates}
    med = {name: statistics.median(v) for name, v in rates.items()}
    result = {"images": len(files), "image_shape": list(images[0].shape), "work": counts,
              "search_gmacs_per_s": round(search_rate, 1), "limit_images_per_s": limit,
              "images_per_s": {k: round(v, 1) for k, v in med.items()}, "all_rounds": rates, "backend": backends}
    print(f"\n{key}: {len(files)} images of {images[0].shape[1]} x {images[0].shape[0]} px, worked at "
          f"{counts['input'][1]} x {counts['input'][0]}; per image {counts['backbone_macs'] / 1e9:.3f} GMAC "
          f"backbone + {counts['whitening_macs'] / 1e9:.3f} whitening + {counts['search_macs'] / 1e9:.3f} "
          f"search ({counts['patches']} patches x {counts['bank']} x {counts['dims']}); mm peak "
          f"{peak:.0f} GFLOP/s, search-shaped mm {search_rate:.0f} GMAC/s: limit {limit:.1f} images/s")
    print("| what | backend | images/s (median) | rounds | of the limit |")
    print("|---|---|---|---|---|")
    for name, v in med.items():
        print(f"| {name} | {backends[name]} | {v:.1f} | {' '.join(f'{r:.1f}' for r in rates[name])} | "
              f"{v / limit:.2f} |")
    if args.runtime_candidates:
        runtime = runtime_candidates(path, images, rounds)
        result["runtime_candidates"] = runtime
        print("\n| runtime candidate (ONNX graph alone, decoded arrays) | median | rounds |\n|---|---|---|")
        for name, v in runtime.items():
            print(f"| {name} | {statistics.median(v):.1f} | {' '.join(f'{r:.1f}' for r in v)} |")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="PRESET/CATEGORY=path/to/model.pt")
    ap.add_argument("--threads", type=int, default=available_cores())
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every candidate, interleaved (median reported)")
    ap.add_argument("--no-serve", action="store_true", help="leave out the server (it starts a process per run)")
    ap.add_argument("--ray", action="store_true", help="also scgan predict --engine ray with 1 and 2 local workers")
    ap.add_argument("--runtime-candidates", action="store_true",
                    help="also the ONNX Runtime settings and overlay PNG levels side by side (runtime_candidates)")
    ap.add_argument("--quick", action="store_true", help="one round over 16 images: checks the script")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    rounds, limit_images = (1, 16) if args.quick else (args.rounds, None)
    torch.set_num_threads(args.threads)
    load = [os.getloadavg()[0]]
    if load[0] > 0.5:
        print(f"warning: load average {load[0]:.2f} at start: the machine is not idle, read ratios only", flush=True)
    peak = matmul_peak_gflops(2048)
    record: dict = {"threads": args.threads, "rounds": rounds, "mm_peak_gflops": round(peak, 1), "models": {},
                    "cpu": cpu_model(), "info": run_info()}
    work = Path(tempfile.mkdtemp(prefix="scoring_speed_"))
    try:
        for item in args.models:
            key, path = item.split("=", 1)
            record["models"][key] = measure(key, path, args, peak, work, rounds, limit_images)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[0])
    record["load_start_end"] = load
    print(f"\nload average at start / end: {load[0]:.2f} / {load[1]:.2f}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2))


def _one_thread(fn, det: Detector, images: list[np.ndarray], workers: int) -> float:
    """``fn`` with one torch thread (workers of one thread each, as ``scgan serve --workers N`` runs torch)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(det, images, workers)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
