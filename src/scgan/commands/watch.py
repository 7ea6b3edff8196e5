"""``scgan watch``: score the images that arrive in a folder, each exactly once; every decision recorded."""
from __future__ import annotations

import argparse

from scgan.commands.common import positive_float, positive_int

HELP = "score images as they arrive in a folder; predictions.csv, overlays and a results store (each file once)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("in_dir", metavar="IN_DIR", help="the folder the images arrive in (watched with its sub-folders)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt or .ckpt")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--output", required=True,
                   help="output folder: predictions.csv, overlays/, the default store results.db (not inside IN_DIR)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="the results store: a SQLAlchemy URL (postgresql://user@host/db; the password from "
                        "SCGAN_DB_PASSWORD) or a SQLite file (default: $SCGAN_DB_URL, else OUTPUT/results.db)")
    p.add_argument("--no-existing", action="store_true",
                   help="leave the files already in IN_DIR at start alone (default: score those without a decision)")
    p.add_argument("--move", action="store_true",
                   help="move each decided file into OUTPUT/normal/ or OUTPUT/anomalous/ (its sub-folders kept)")
    p.add_argument("--poll", action="store_true",
                   help="poll IN_DIR instead of using file-system events (network mounts; used anyway where events "
                        "are unavailable)")
    p.add_argument("--settle", type=positive_float, default=1.0, metavar="SECONDS",
                   help="a file without a close-after-write event is read once its size and time stayed the same "
                        "this long (default 1)")
    p.add_argument("--keep-days", type=positive_float, default=None, metavar="DAYS",
                   help="prune decisions (and their overlays) older than this from the store, at start and hourly; "
                        "needs --move (a pruned file left in IN_DIR would be scored again)")
    p.add_argument("--batch-size", type=positive_int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--no-overlays", action="store_true", help="no overlay PNGs of anomalous images")
    p.add_argument("--no-captions", action="store_true", help="overlays without the band stating the decision")


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from scgan.record import require

    require()
    from scgan.inference.detector import load_detector
    from scgan.record.store import Store
    from scgan.record.watcher import Watcher, WatchOptions
    from scgan.utils.atomic import writable_dir
    from scgan.utils.lock import folder_lock

    if args.keep_days and not args.move:  # the store is the record of done files: a pruned one would come back
        raise ValueError("--keep-days needs --move: a file left in the watched folder whose decision was pruned "
                         "would be scored again at the next start")
    logging.getLogger("scgan.record").setLevel(logging.INFO)
    out = writable_dir(args.output)
    options = WatchOptions(existing=not args.no_existing, move=args.move, overlays=not args.no_overlays,
                           captions=not args.no_captions, poll=args.poll, settle_s=args.settle,
                           keep_days=args.keep_days)
    with folder_lock(out, "watching"):
        detector = load_detector(args.onnx or args.checkpoint, onnx=bool(args.onnx), batch_size=args.batch_size)
        with Store.open(args.db, out) as store:
            watcher = Watcher(args.in_dir, out, detector, store, options)
            stop = threading.Event()

            def request_stop(signum, _frame) -> None:
                stop.set()

            previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                print(f"watching {watcher.in_dir} with {detector.path}; decisions to {store.name} and "
                      f"{out / 'predictions.csv'}  (Ctrl-C or SIGTERM stops after the image in hand)", flush=True)
                summary = watcher.run(stop)
            finally:  # a caller's handlers (an embedding program, a test run) are theirs again
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    skipped = sum(summary.skipped.values())
    gaps = f"; the store was away {len(summary.gaps)} time(s)" if summary.gaps else ""
    print(f"stopped: scored {summary.scored} image(s), {summary.anomalous} anomalous; skipped {skipped}{gaps}",
          flush=True)
    return 0
