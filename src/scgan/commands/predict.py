"""``scgan predict``: score image files or folders; a CSV of scores and decisions, and overlay pictures."""
from __future__ import annotations

import argparse

from scgan.commands.common import positive_int

HELP = "score image files or folders; CSV of scores and decisions + overlays"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt or .ckpt")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--tile", type=positive_int, default=None, metavar="PIXELS",
                   help="score large images in overlapping tiles of this many pixels, not reduced (a small defect "
                        "keeps its pixels; memory stays bounded by the tile)")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument("--no-captions", action="store_true",
                   help="overlays without the band below them that states the decision, score and threshold (the "
                        "PNG text keeps them); the picture then has the scored image's size")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from scgan.inference.predict import run_predict

    res = run_predict(args.inputs, args.output, model=args.checkpoint, onnx_path=args.onnx,
                      batch_size=args.batch_size, tile=args.tile, overlays=not args.no_overlays,
                      captions=not args.no_captions, progress=not args.no_progress)
    # Each skipped file was already reported on stderr (a warning) and in the CSV with its reason.
    if not res.predictions:  # exit 0 needs at least one scored image
        raise ValueError(f"none of the {len(res.skipped)} input file(s) could be read as an image; "
                         f"the reasons are in {res.csv_path}")
    n_anom = sum(bool(p.anomalous) for p in res.predictions)
    print(f"scored {len(res.predictions)} image(s), {n_anom} anomalous; skipped {len(res.skipped)} unreadable; "
          f"results: {res.csv_path}")
    return 0
