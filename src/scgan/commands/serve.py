"""``scgan serve``: a model behind a small HTTP API and a web page."""
from __future__ import annotations

import argparse

from scgan.commands.common import positive_int

HELP = "serve a model over HTTP: POST /predict, GET /model, GET /health, a web page at /"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt, a .ckpt, or an ONNX file written by 'scgan export'")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=positive_int, default=1, help="scoring threads (default 1)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait for a worker; more get 503 (default 8)")
    p.add_argument("--max-upload-mb", type=positive_int, default=20, help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="largest image, width x height (default 40,000,000)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and score (default 60)")


def run(args: argparse.Namespace) -> int:
    from scgan.inference.detector import Detector
    from scgan.serve import Limits, serve

    detector = Detector.load(args.onnx or args.checkpoint, backend="onnx" if args.onnx else None)
    limits = Limits(max_upload_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels,
                    workers=args.workers, queue=args.queue, timeout_s=args.timeout)
    print(f"serving {detector.path} ({detector.backend}) on http://{args.host}:{args.port}/  (Ctrl-C stops)",
          flush=True)
    serve(detector, host=args.host, port=args.port, limits=limits)
    return 0
