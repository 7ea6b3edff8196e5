"""``scgan serve``: a model behind a small HTTP API and a web page."""
from __future__ import annotations

import argparse
import os

from scgan.commands.common import add_backend_option, int_in, port_number, positive_float, positive_int
from scgan.utils.limits import MAX_PIXELS, MAX_UPLOAD_MB, SERVE_CONNECTIONS, SERVE_PROCESSES, SERVE_QUEUE, WORKERS

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
    add_backend_option(p)
    p.add_argument("--workers", type=int_in(WORKERS), default=1,
                   help="scoring threads (default 1; per process with --processes)")
    p.add_argument("--processes", type=int_in(SERVE_PROCESSES), metavar="N",
                   help="serve from N worker processes under a supervisor that replaces any that dies and reloads "
                        "the model file on SIGHUP (default: this one process; see docs/deploy.md)")
    p.add_argument("--queue", type=int_in(SERVE_QUEUE), default=8,
                   help="requests that may wait for a worker; more get 503 (default 8)")
    p.add_argument("--max-upload-mb", type=int_in(MAX_UPLOAD_MB), default=20,
                   help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=int_in(MAX_PIXELS), default=40_000_000,
                   help="largest image, width x height (default 40,000,000)")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds a request may wait and score (default 60)")
    p.add_argument("--read-timeout", type=positive_float, default=10.0,
                   help="seconds a request's headers may take to arrive, and its body may pause (default 10)")
    p.add_argument("--max-connections", type=int_in(SERVE_CONNECTIONS), default=64,
                   help="open connections, idle ones included; more get 503 (default 64; above workers + queue)")
    p.add_argument("--feedback", metavar="DIR", help="add 'false alarm' and 'missed defect' buttons to the page and "
                   "store each mark in DIR (off by default); a mark needs the token: SCGAN_FEEDBACK_TOKEN, "
                   "--feedback-token-file, or one generated and printed at start")
    p.add_argument("--feedback-token-file", metavar="FILE", help="the feedback token: the first line of FILE")
    p.add_argument("--db", default=None, metavar="URL",
                   help="record each decision of POST /predict in a results store (a SQLAlchemy URL, the password "
                        "from SCGAN_DB_PASSWORD; or a SQLite file) and show the recent ones at /recent; needs "
                        "--overlay-dir")
    p.add_argument("--overlay-dir", metavar="DIR", default=None,
                   help="with --db: where the overlays of anomalous images are kept (and the spool while the store "
                        "is away)")
    p.add_argument("--recent", type=positive_int, default=50, metavar="N", help="with --db: /recent shows N (50)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from scgan.inference.detector import load_detector
    from scgan.serve import Limits, serve
    from scgan.serve.server import allowed_hosts

    limits = Limits(max_upload_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels,
                    workers=args.workers, queue=args.queue, timeout_s=args.timeout,
                    read_timeout_s=args.read_timeout, max_connections=args.max_connections)
    model, backend = args.onnx or args.checkpoint, "onnx" if args.onnx else args.backend
    feedback, shown_token = None, None
    if args.feedback:
        from scgan.serve.feedback import feedback_folder, feedback_token

        if args.processes is not None:
            raise ValueError("--feedback is served from one process; leave out --processes")
        token, generated = feedback_token(args.feedback_token_file)
        feedback, shown_token = feedback_folder(args.feedback, token), token if generated else None
    if args.processes is not None and (args.db or args.overlay_dir):  # workers get only the model and the limits
        raise ValueError("--db and --overlay-dir are served from one process; leave out --processes")
    if args.processes is not None:
        from scgan.serve.supervisor import WorkerSpec, serve_processes

        spec = WorkerSpec(model=model, backend=backend, host=args.host,
                          allowed=allowed_hosts(args.host, args.allowed_host), limits=asdict(limits))

        def announce_processes(url: str, sha256: str) -> None:
            print(f"serving {model} (sha256 {sha256[:12]}) from {args.processes} worker processes on {url}  "
                  f"(kill -HUP {os.getpid()} reloads the model; Ctrl-C stops)", flush=True)

        serve_processes(spec, args.port, args.processes, announce=announce_processes)
        return 0
    detector = load_detector(model, backend)
    recent = None
    if args.db or args.overlay_dir:
        if not (args.db and args.overlay_dir) or args.processes is not None:
            raise ValueError("--db and --overlay-dir go together, served from one process (leave out --processes)")
        from scgan.record import require

        require()
        from scgan.record.recorder import Recorder
        from scgan.serve.recent import DecisionLog

        recent = DecisionLog(Recorder.open(args.db, detector, "serve"), args.overlay_dir, args.recent)

    def announce(url: str) -> None:
        print(f"serving {detector.path} ({detector.backend}) on {url}  (Ctrl-C stops)", flush=True)
        if feedback is not None:  # the token only here, once: never in a log, a manifest or the command line
            given = f"token {shown_token} (generated; shown once)" if shown_token else "the token you set"
            print(f"feedback on: marks are stored in {feedback.folder}; the page's buttons need {given}", flush=True)

    serve(detector, host=args.host, port=args.port, limits=limits, allowed=args.allowed_host, announce=announce,
          feedback=feedback, recent=recent)
    return 0
