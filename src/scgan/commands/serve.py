"""``scgan serve``: a model behind a small HTTP API and a web page."""
from __future__ import annotations

import argparse

from scgan.commands.common import port_number, positive_float, positive_int

HELP = "serve a model over HTTP: POST /predict, GET /model, GET /health, a web page at /"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt, a .ckpt, or an ONNX file written by 'scgan export'")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name clients reach this server by, besides localhost and the bound address (repeat "
                        "for several; requests naming any other host are refused, against DNS rebinding)")
    p.add_argument("--workers", type=positive_int, default=1, help="scoring threads (default 1)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait for a worker; more get 503 (default 8)")
    p.add_argument("--max-upload-mb", type=positive_int, default=20, help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="largest image, width x height (default 40,000,000)")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds a request may wait and score (default 60)")
    p.add_argument("--read-timeout", type=positive_float, default=10.0,
                   help="seconds a request's headers may take to arrive, and its body may pause (default 10)")
    p.add_argument("--max-connections", type=positive_int, default=64,
                   help="open connections, idle ones included; more get 503 (default 64; above workers + queue)")


def run(args: argparse.Namespace) -> int:
    from scgan.inference.detector import Detector
    from scgan.serve import Limits, serve

    limits = Limits(max_upload_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels,
                    workers=args.workers, queue=args.queue, timeout_s=args.timeout,
                    read_timeout_s=args.read_timeout, max_connections=args.max_connections)
    detector = Detector.load(args.onnx or args.checkpoint, backend="onnx" if args.onnx else None)

    def announce(url: str) -> None:
        print(f"serving {detector.path} ({detector.backend}) on {url}  (Ctrl-C stops)", flush=True)

    serve(detector, host=args.host, port=args.port, limits=limits, allowed=args.allowed_host, announce=announce)
    return 0
