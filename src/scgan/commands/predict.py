"""``scgan predict``: score image files or folders; a CSV of scores and decisions, and overlay pictures."""
from __future__ import annotations

import argparse

from scgan.commands.common import add_backend_option, add_cluster_options, int_in, positive_int
from scgan.utils.limits import BATCH_SIZE, MAX_TILES

HELP = "score image files or folders; CSV of scores and decisions + overlays"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt or .ckpt")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--batch-size", type=int_in(BATCH_SIZE), default=16)
    add_backend_option(p)
    p.add_argument("--tile", type=positive_int, default=None, metavar="PIXELS",
                   help="score large images in overlapping tiles of this many pixels, not reduced (a small defect "
                        "keeps its pixels; memory stays bounded by the tile); at least half the model's working "
                        f"resolution, and at most {MAX_TILES} tiles per image")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument("--no-captions", action="store_true",
                   help="overlays without the band below them that states the decision, score and threshold (the "
                        "PNG text keeps them); the picture then has the scored image's size")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this process; ray: a Ray cluster scores the files (pip install "
                        "'scgan[cluster]'; the model, the images and --output must be reachable from every node by "
                        "these paths), resuming where an interrupted run into --output stopped")
    add_cluster_options(p, "scoring")
    p.add_argument("--db", default=None, metavar="URL",
                   help="also record each decision in a results store: a SQLAlchemy URL (the password from "
                        "SCGAN_DB_PASSWORD), a SQLite file, or a folder holding results.db (see scgan results)")


def run(args: argparse.Namespace) -> int:
    from scgan.inference.predict import make_detector, run_predict

    if args.engine == "ray":
        if args.tile or args.db:
            raise ValueError("--engine ray scores whole images without a results store: leave out --tile and --db")
        from scgan.inference.cluster import run_predict_ray

        res = run_predict_ray(args.inputs, args.output, model=args.onnx or args.checkpoint,
                              backend="onnx" if args.onnx else args.backend, batch_size=args.batch_size,
                              overlays=not args.no_overlays, captions=not args.no_captions,
                              progress=not args.no_progress, address=args.address, workers=args.workers)
        print(f"scored {len(res.predictions)} image(s) on Ray, {sum(bool(p.anomalous) for p in res.predictions)} "
              f"anomalous; skipped {len(res.skipped)} unreadable; results: {res.csv_path}")
        return 0
    detector = recorder = None
    if args.db:  # the store is opened (and checked) before anything is scored
        from scgan.record import require

        require()
        from scgan.record.recorder import Recorder

        detector = make_detector(args.checkpoint, args.onnx, backend=args.backend, batch_size=args.batch_size,
                                 tile=args.tile)
        recorder = Recorder.open(args.db, detector, "predict")
    try:
        res = run_predict(args.inputs, args.output, model=args.checkpoint, onnx_path=args.onnx, detector=detector,
                          batch_size=args.batch_size, tile=args.tile, overlays=not args.no_overlays,
                          captions=not args.no_captions, progress=not args.no_progress, backend=args.backend,
                          on_result=recorder.add if recorder else None)
    finally:
        if recorder is not None:
            recorder.close()
    # Each skipped file was already reported on stderr (a warning) and in the CSV with its reason.
    if not res.predictions:  # exit 0 needs at least one scored image
        raise ValueError(f"none of the {len(res.skipped)} input file(s) could be read as an image; "
                         f"the reasons are in {res.csv_path}")
    n_anom = sum(bool(p.anomalous) for p in res.predictions)
    recorded = f"; recorded in {recorder.store.name}" if recorder else ""
    print(f"scored {len(res.predictions)} image(s), {n_anom} anomalous; skipped {len(res.skipped)} unreadable; "
          f"results: {res.csv_path}{recorded}")
    return 0
