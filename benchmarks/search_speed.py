"""OpenVINO against ONNX Runtime, and FAISS against the chunked torch nearest-neighbour search, side by side.

For each PatchCore model given, in one process, every candidate once per round, the rounds interleaved
(``--rounds``, the median reported) so that a machine whose load changes disturbs them alike:

- runtimes, on the model's cached ONNX graph (``scgan.inference.backend``), its test images decoded and brought to
  the working resolution beforehand, one image per call, with 1 and 2 threads: an ONNX Runtime session configured
  as the product's (``OnnxScorer``: idle threads sleep), and OpenVINO's CPU plugin (the graph compiled once, with
  the latency hint and with the throughput hint, fp32; with 2 threads also its default precision, bf16 where the
  CPU has AMX, and the throughput hint fed through an asynchronous queue against the product's two one-thread ONNX
  Runtime sessions in parallel threads). Each OpenVINO candidate's largest |difference| to ONNX Runtime, on the
  scores and on the maps, is reported;
- nearest-neighbour search, on the model's own patch queries (one image: h x w patches of D dimensions, projected
  as the bank is) against its bank and against a bank 4x as large (the bank's rows with 3 jittered copies; for the
  speed only), with 1 and 2 threads: ``coreset.nearest_distance`` (today's chunked torch search), FAISS
  ``IndexFlatL2`` (exact; its largest |distance difference| to torch reported), IVF-Flat with a few ``nprobe`` and
  HNSW with a few ``efSearch`` (approximate). Queries per second of each;
- the quality cost of the approximate searches: every test image's patch features computed once on torch, only the
  search swapped, the image scores made by the model's own map step (``PatchCoreScorer.map_outputs``), image AUROC
  of the model's default score for each search, and for ONNX Runtime's and OpenVINO's scores (fp32 and its default
  precision) of the same images.

    python benchmarks/search_speed.py --output results/throughput/search_speed.json \\
        default/bottle=results/surfaces/default/bottle_seed0/train/model.pt \\
        default/magnetic_tile=results/surfaces/default/magnetic_tile_seed0/train/model.pt
    python benchmarks/search_speed.py --quick default/bottle=...    # checks the script (one round, 8 images)

Needs ``pip install openvino==2026.4.1 faiss-cpu==1.15.1`` (not scgan dependencies); without one, one line says so
and that part is left out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scgan.utils.runinfo import run_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring_speed import ort_session, parallel_rate, test_files  # noqa: E402 (a sibling script)

THREADS = (1, 2)


def optional(name: str):
    """The module ``name``, or None after one line saying what to install."""
    try:
        return __import__(name)
    except ImportError:
        pip = {"faiss": "faiss-cpu==1.15.1", "openvino": "openvino==2026.4.1"}[name]
        print(f"{name} is not installed (pip install {pip}): its candidates are left out", flush=True)
        return None


def test_set(model: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The model's test images decoded, (1, C, H, W) float32 in [-1, 1] at the working resolution, and their labels."""
    from scgan.artifacts.model_file import load_model
    from scgan.data.io import image_to_array, load_image, prepare_image

    spec = load_model(model).input_spec
    files, labels = test_files(model, with_labels=True)
    return [image_to_array(prepare_image(load_image(f, None), spec)[None]).astype(np.float32) for f in files], labels


def rates(cands: dict, rounds: int) -> dict[str, list[float]]:
    """Each candidate (a function returning a rate) once per round, the rounds interleaved, after one warm-up."""
    for fn in cands.values():
        fn()
    out: dict[str, list[float]] = {name: [] for name in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            out[name].append(fn())
    return out


def runtime_candidates(model: str, xs: list[np.ndarray], rounds: int) -> tuple[dict, dict, dict]:
    """Images/s of ONNX Runtime and OpenVINO on the model's graph, each one's largest differences to ORT's outputs,
    and the candidates' functions (one image -> [scores, map])."""
    from concurrent.futures import ThreadPoolExecutor

    from scgan.inference.backend import choose_backend

    ov = optional("openvino")
    graph = str(choose_backend(model, "onnx").path)

    def session(threads: int):  # idle threads sleep, as in the product's OnnxScorer
        return ort_session(graph, threads, spin="0")

    def timed(run) -> float:
        start = time.perf_counter()
        for x in xs:
            run(x)
        return len(xs) / (time.perf_counter() - start)

    runs: dict = {}
    for n in THREADS:
        s = session(n)
        runs[f"ORT, {n} thread(s)"] = lambda x, s=s: s.run(None, {"image": x})
    pair, pool = [session(1), session(1)], ThreadPoolExecutor(2)

    def ort_pair() -> float:
        return parallel_rate(pair, pool, xs)

    cands = {name: (lambda r=r: timed(r)) for name, r in runs.items()}
    cands["ORT, 2 one-thread sessions in parallel"] = ort_pair
    if ov is not None:
        core = ov.Core()
        net = core.read_model(graph)

        def compiled(hint: str, threads: int, precision: str | None = "f32"):
            cfg = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
            if precision:
                cfg["INFERENCE_PRECISION_HINT"] = precision
            return core.compile_model(net, "CPU", cfg)

        def ov_run(c):
            req = c.create_infer_request()

            def run(x: np.ndarray) -> list[np.ndarray]:
                req.infer({0: x})
                return [req.get_output_tensor(i).data.copy() for i in (0, 1)]  # scores, map
            return run

        for n in THREADS:
            for hint in ("LATENCY", "THROUGHPUT"):
                runs[f"OpenVINO {hint.lower()} fp32, {n} thread(s)"] = ov_run(compiled(hint, n))
        default = compiled("LATENCY", 2, None)
        precision = default.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        runs[f"OpenVINO latency {precision} (its default), 2 thread(s)"] = ov_run(default)
        cands.update({name: (lambda r=r: timed(r)) for name, r in runs.items() if name.startswith("OpenVINO")})
        tput = compiled("THROUGHPUT", 2)
        queue = ov.AsyncInferQueue(tput, tput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

        done: dict[int, list[np.ndarray]] = {}
        queue.set_callback(lambda req, i: done.__setitem__(i, [req.get_output_tensor(k).data.copy() for k in (0, 1)]))

        def ov_async() -> float:
            start = time.perf_counter()
            for i, x in enumerate(xs):
                queue.start_async({0: x}, i)
            queue.wait_all()
            return len(xs) / (time.perf_counter() - start)

        async_name = f"OpenVINO throughput fp32, 2 threads, async queue of {len(queue)}"
        cands[async_name] = ov_async
    agree: dict[str, dict[str, float]] = {}
    ref = [runs["ORT, 2 thread(s)"](x) for x in xs]
    for name, run in runs.items():
        outs = [run(x) for x in xs]
        agree[name] = {"score": float(max(np.abs(o[0] - r[0]).max() for o, r in zip(outs, ref))),
                       "map": float(max(np.abs(o[1] - r[1]).max() for o, r in zip(outs, ref)))}
    if ov is not None:
        ov_async()
        agree[async_name] = {"score": float(max(np.abs(done[i][0] - r[0]).max() for i, r in enumerate(ref))),
                             "map": float(max(np.abs(done[i][1] - r[1]).max() for i, r in enumerate(ref)))}
    out = rates(cands, rounds)
    pool.shutdown()
    return out, agree, runs


def patch_queries(model: str, xs: list[np.ndarray]):
    """The torch scorer, its bank (M, D) and each image's projected patch features ((h x w, D), (h, w), (H, W))."""
    from scgan.artifacts.model_file import load_model
    from scgan.models.patchcore.model import embed

    scorer = load_model(model).scorer().eval()
    queries = []
    with torch.inference_mode():
        for x in xs:
            f = embed(scorer.backbone, torch.from_numpy(x), scorer.layout)
            _, d, h, w = f.shape
            q = scorer.memory.project(f.permute(0, 2, 3, 1).reshape(h * w, d)).contiguous()
            queries.append((q, (h, w), x.shape[2:]))
    return scorer, scorer.memory.bank, queries


def searches(bank: torch.Tensor, faiss) -> dict:
    """Name -> function (P, D) queries -> (P,) Euclidean distances to the nearest row of ``bank``."""
    from scgan.models.patchcore.coreset import nearest_distance

    bank_sq = bank.pow(2).sum(1)
    out = {"torch chunked (today)": lambda q: nearest_distance(q, bank, bank_sq)}
    if faiss is None:
        return out
    b = bank.numpy().astype(np.float32)
    m, d = b.shape

    def faiss_search(index):
        return lambda q: torch.from_numpy(np.sqrt(np.maximum(index.search(q.numpy(), 1)[0][:, 0], 0)))

    flat = faiss.IndexFlatL2(d)
    flat.add(b)
    out["faiss IndexFlatL2 (exact)"] = faiss_search(flat)
    nlist = 64 if m <= 4096 else 128
    for probe in (1, 4, 16):
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)  # nprobe is the index's: one per setting
        index.train(b)
        index.add(b)
        index.nprobe = probe
        out[f"faiss IVF-Flat {nlist} lists, nprobe {probe}"] = faiss_search(index)
    hnsw = faiss.IndexHNSWFlat(d, 32)
    hnsw.add(b)
    for ef in (16, 64):
        out[f"faiss HNSW32, efSearch {ef}"] = (lambda q, ef=ef: _hnsw(faiss, hnsw, q, ef))
    return out


def _hnsw(faiss, index, q: torch.Tensor, ef: int) -> torch.Tensor:
    params = faiss.SearchParametersHNSW(efSearch=ef)
    return torch.from_numpy(np.sqrt(np.maximum(index.search(q.numpy(), 1, params=params)[0][:, 0], 0)))


def set_threads(n: int, faiss) -> None:
    """``n`` threads for torch and, where installed, FAISS (its own OpenMP setting)."""
    torch.set_num_threads(n)
    if faiss is not None:
        faiss.omp_set_num_threads(n)


def search_candidates(bank: torch.Tensor, queries: list[torch.Tensor], rounds: int, faiss) -> tuple[dict, dict]:
    """Queries/s of each search with 1 and 2 threads, and each one's largest |distance difference| to torch's."""
    fns = searches(bank, faiss)
    ref = [fns["torch chunked (today)"](q) for q in queries]
    diff = {name: float(max((fn(q) - r).abs().max() for q, r in zip(queries, ref))) for name, fn in fns.items()}
    total = sum(q.shape[0] for q in queries)

    def timed(fn, n: int) -> float:
        set_threads(n, faiss)
        start = time.perf_counter()
        for q in queries:
            fn(q)
        return total / (time.perf_counter() - start)

    cands = {f"{name}, {n} thread(s)": (lambda fn=fn, n=n: timed(fn, n)) for n in THREADS for name, fn in fns.items()}
    with torch.inference_mode():
        return rates(cands, rounds), diff


def search_auroc(scorer, bank: torch.Tensor, queries, labels: np.ndarray, faiss, default_score: str) -> dict:
    """Image AUROC of the default score with each search (features computed once, only the search swapped)."""
    from scgan.evaluation.metrics import image_auroc

    col = scorer.names.index(default_score)
    out = {}
    with torch.inference_mode():
        for name, fn in searches(bank, faiss).items():
            scores = [float(scorer.map_outputs(size, fn(q).reshape(1, 1, *hw))[0][0, col])
                      for q, hw, size in queries]
            out[name] = image_auroc(np.array(scores), labels)
    return out


def jittered(bank: torch.Tensor, times: int, seed: int = 0) -> torch.Tensor:
    """``bank`` with ``times - 1`` copies whose rows move by 10% of each dimension's spread: a bank ``times`` as large
    of similar geometry (for the speed only)."""
    g = torch.Generator().manual_seed(seed)
    std = bank.std(0)
    return torch.cat([bank] + [bank + 0.1 * std * torch.randn(bank.shape, generator=g) for _ in range(times - 1)])


def table(title: str, runs: dict[str, list[float]], unit: str, extra: dict | None = None, ref: str | None = None):
    """Prints a Markdown table: median, rounds, ratio to ``ref``'s median, and an extra column."""
    print(f"\n| {title} | {unit} (median) | rounds | x {ref or ''} |" + (" |" if extra is None else " max abs diff |"))
    print("|---|---|---|---|" + ("" if extra is None else "---|"))
    base = statistics.median(runs[ref]) if ref else None
    for name, vals in runs.items():
        med = statistics.median(vals)
        ratio = f"{med / base:.2f}" if base else ""
        more = "" if extra is None else f" {extra.get(name, '')} |"
        fmt = ".0f" if med > 1000 else ".1f"
        print(f"| {name} | {med:{fmt}} | {' '.join(f'{v:{fmt}}' for v in vals)} | {ratio} |{more}")


def measure(key: str, model: str, rounds: int, timed_images: int, auroc_images: int | None, faiss) -> dict:
    """Every part on one model (see the module's docstring); prints its tables and returns its record."""
    from scgan.artifacts.model_file import load_model
    from scgan.evaluation.metrics import image_auroc

    xs, labels = test_set(model)
    record: dict = {"model": model, "test_images": len(xs), "input": list(xs[0].shape[2:])}
    sample = xs[:: max(1, len(xs) // timed_images)][:timed_images]
    print(f"\n## {key}: {len(xs)} test images at {xs[0].shape[3]} x {xs[0].shape[2]}", flush=True)
    rt, agree, runs = runtime_candidates(model, sample, rounds)
    record["runtimes_images_per_s"], record["runtimes_max_abs_diff_to_ort"] = rt, agree
    table("runtime, one image per call", rt, "images/s", {k: f"score {v['score']:.1e}, map {v['map']:.1e}"
                                                          for k, v in agree.items()}, "ORT, 2 thread(s)")
    auroc_x = xs if auroc_images is None else xs[:: max(1, len(xs) // auroc_images)]
    auroc_y = labels if auroc_images is None else labels[:: max(1, len(xs) // auroc_images)]
    scorer, bank, queries = patch_queries(model, auroc_x)
    qs = [q for q, _, _ in queries[:: max(1, len(queries) // timed_images)][:timed_images]]
    record["queries_per_image"], record["dims"] = int(qs[0].shape[0]), int(bank.shape[1])
    record["search"] = {}
    for size, b in ((bank.shape[0], bank), (4 * bank.shape[0], jittered(bank, 4))):
        sp, diff = search_candidates(b, qs, rounds, faiss)
        record["search"][str(size)] = {"queries_per_s": sp, "max_abs_distance_diff_to_torch": diff}
        table(f"search, bank {size} x {bank.shape[1]}, {qs[0].shape[0]} queries per image", sp, "queries/s",
              {f"{k}, {n} thread(s)": f"{v:.1e}" for k, v in diff.items() for n in THREADS},
              "torch chunked (today), 2 thread(s)")
    set_threads(max(THREADS), faiss)
    default = load_model(model).default_score
    aur = search_auroc(scorer, bank, queries, auroc_y, faiss, default)
    record["auroc"] = {"score": default, "images": len(auroc_y), "anomalous": int(auroc_y.sum()), "by_candidate": aur}
    col = scorer.names.index(default)
    for name, run in runs.items():  # the runtimes' quality: ORT's and OpenVINO's at 2 threads (fp32, default)
        if name.endswith("2 thread(s)") and "throughput" not in name:
            aur[name] = image_auroc(np.array([float(run(x)[0][0, col]) for x in auroc_x]), auroc_y)
    print(f"\n| search or runtime | image AUROC ({default}, {len(auroc_y)} images) |\n|---|---|")
    for name, v in aur.items():
        print(f"| {name} | {v:.4f} |")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="PRESET/CATEGORY=path/to/model.pt (a PatchCore model)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every candidate, interleaved (median reported)")
    ap.add_argument("--images", type=int, default=24, help="test images timed per round")
    ap.add_argument("--quick", action="store_true", help="one round over 8 images, AUROC on 16: checks the script")
    ap.add_argument("--output", default=None, help="JSON file to write (e.g. results/throughput/search_speed.json)")
    args = ap.parse_args()
    rounds, timed_images, auroc_images = (1, 8, 16) if args.quick else (args.rounds, args.images, None)
    faiss = optional("faiss")
    load = [os.getloadavg()[0]]
    print(f"load average at start: {load[0]:.2f} (the machine may be shared: read ratios within a table)", flush=True)
    record: dict = {"rounds": rounds, "threads": list(THREADS), "quick": args.quick, "models": {},
                    "versions": {n: _version(n) for n in ("onnxruntime", "openvino", "faiss-cpu", "torch")},
                    "info": run_info()}
    for item in args.models:
        key, path = item.split("=", 1)
        record["models"][key] = measure(key, path, rounds, timed_images, auroc_images, faiss)
    load.append(os.getloadavg()[0])
    record["load_start_end"] = load
    print(f"\nload average at start / end: {load[0]:.2f} / {load[1]:.2f}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2))


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
