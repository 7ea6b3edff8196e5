"""Scoring speed at 256 px: images per second through ``Detector.predict``, as ``scgan predict`` and ``serve`` score.

For each model given, its category's test images are read once (uint8 arrays at the shared data's 256 px, so that
file decoding is not timed), then scored in the detector's batches, two ways: one process with ``--threads`` torch
threads (what ``scgan predict`` does), and ``--threads`` workers of one torch thread each (what ``scgan serve
--workers N`` does); the figure is images / wall seconds after a warm-up. Run it on an idle machine (`uptime`).

    python benchmarks/scoring_speed.py --output results/detectors/scoring_speed.json \\
        default/bottle=results/detectors/default/bottle_seed0/train/model.pt ...
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from scgan.data.io import load_image
from scgan.inference.detector import Detector
from scgan.utils.runinfo import available_cores, cpu_model, run_info


def images_per_second(model: str, images: list[np.ndarray], threads: int, workers: int = 1,
                      backend: str | None = None) -> float:
    """Images per second of ``workers`` threads each scoring its share with ``threads`` torch threads (ONNX Runtime
    keeps its own default: one thread per core)."""
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(threads)
    det = Detector.load(model, backend=backend)
    shares = [images[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(det.predict, [s[: det.batch_size] for s in shares]))  # warm-up: first-call allocations
        start = time.perf_counter()
        list(pool.map(det.predict, shares))
    return len(images) / (time.perf_counter() - start)


def test_images(model: str) -> list[np.ndarray]:
    """The test images of the model's own data, as uint8 RGB arrays."""
    from scgan.artifacts.model_file import load_model
    from scgan.data.datasets import build_dataset

    d = load_model(model).config.data
    ds = build_dataset(d.dataset, d.root, d.category, "test", 256, require_masks=False)
    return [load_image(s.path, None) for s in ds.samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="PRESET/CATEGORY=path/to/model.pt")
    ap.add_argument("--threads", type=int, default=available_cores())
    ap.add_argument("--onnx", action="store_true", help="also export and time the ONNX model")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    rates: dict[str, dict[str, float]] = {}
    workers: dict[str, dict[str, float]] = {}
    onnx_rates: dict[str, dict[str, float]] = {}
    for item in args.models:
        key, path = item.split("=", 1)
        preset, category = key.split("/")
        images = test_images(path)
        rate = images_per_second(path, images, args.threads)
        pooled = images_per_second(path, images, 1, workers=args.threads)
        rates.setdefault(preset, {})[category] = round(rate, 1)
        workers.setdefault(preset, {})[category] = round(pooled, 1)
        line = (f"{preset} {category}: {rate:.1f} images/s with {args.threads} threads, {pooled:.1f} with "
                f"{args.threads} workers of one thread ({len(images)} images of {images[0].shape[1]} x "
                f"{images[0].shape[0]} px)")
        if args.onnx:
            from scgan.artifacts.export import export_onnx

            onnx = export_onnx(path, Path(path).with_suffix(".onnx"))
            onnx_rate = images_per_second(str(onnx), images, args.threads, backend="onnx")
            onnx_rates.setdefault(preset, {})[category] = round(onnx_rate, 1)
            line += f"; ONNX Runtime {onnx_rate:.1f} images/s"
        print(line, flush=True)
    if args.output:
        record = {"images_per_s": rates, "images_per_s_workers": workers, "images_per_s_onnx": onnx_rates,
                  "threads": args.threads,
                  "cpu": cpu_model(), "load": os.getloadavg(), "info": run_info()}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
