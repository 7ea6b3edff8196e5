"""Latency and throughput of ``scgan serve`` on this machine: torch and ONNX side by side.

Starts ``scgan serve`` on 127.0.0.1 (a free port, one server process per backend), then for one image:
p50/p95 latency of sequential requests, and throughput with 1, 2 and 4 concurrent clients. Every
phase is bounded by ``--requests`` and ``--seconds``. Nothing leaves localhost.

    python benchmarks/serve_latency.py --checkpoint runs/demo/train/model.pt --image some.png
    (the ONNX model is exported next to a temporary copy unless --onnx is given)

Its helpers (a free port, a multipart body, a percentile, starting ``scgan serve`` and waiting for it, fitting the
default detector on the demo data) are shared with ``benchmarks/soak.py``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive HTTP connection posting the same image to /predict."""

    def __init__(self, port: int, body: bytes, content_type: str, overlay: bool) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.body, self.headers = body, {"Content-Type": content_type}
        self.path = "/predict" if overlay else "/predict?overlay=false"

    def post(self) -> float:
        start = time.perf_counter()
        self.conn.request("POST", self.path, body=self.body, headers=self.headers)
        response = self.conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
        return time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def sequential(port: int, body: bytes, ctype: str, overlay: bool, n: int, seconds: float) -> list[float]:
    client = Client(port, body, ctype, overlay)
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while len(times) < n and time.monotonic() < deadline:
        times.append(client.post())
    return times


def concurrent(port: int, body: bytes, ctype: str, overlay: bool, clients: int, n: int,
               seconds: float) -> tuple[float, int, list[float]]:
    """(requests per second, requests done, their latencies) for ``clients`` threads sharing ``n`` requests."""
    lock = threading.Lock()
    left = [n]
    times: list[float] = []
    deadline = time.monotonic() + seconds

    def run() -> None:
        c = Client(port, body, ctype, overlay)
        while time.monotonic() < deadline:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            t = c.post()
            with lock:
                times.append(t)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return len(times) / wall, len(times), times


def start_server(model: Path, port: int, workers: int, extra: Sequence[str] = ("--queue", "16"),
                 log: Path | None = None, start_s: float = 180.0) -> subprocess.Popen:
    """``scgan serve`` of ``model`` on 127.0.0.1:``port`` with ``workers`` scoring threads and ``extra`` options,
    once it answers /health. Its stderr (an access line per request) goes to ``log``, or is dropped: a pipe nobody
    reads would fill and stall the server."""
    flag = "--onnx" if model.suffix == ".onnx" else "--checkpoint"
    err = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 — the server's whole life
    proc = subprocess.Popen([sys.executable, "-m", "scgan", "serve", flag, str(model), "--port", str(port),
                             "--workers", str(workers), *extra], stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = Path(log).read_text()[-2000:] if log is not None else "(see its stderr)"
            raise RuntimeError(f"scgan serve exited: {said}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"scgan serve did not answer /health within {start_s:g} s")


def fit_demo_model(folder: Path) -> Path:
    """The default detector fitted on the demo data in ``folder`` (``scgan demo``, about 25 s on 2 cores): its
    model.pt. The demo's images are in ``folder / "data"``."""
    subprocess.run([sys.executable, "-m", "scgan", "demo", "--output", str(folder), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    return folder / "train" / "model.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="model.pt written by 'scgan train'")
    ap.add_argument("--onnx", help="its ONNX export (default: exported into a temporary folder)")
    ap.add_argument("--image", required=True, help="the image every request sends")
    ap.add_argument("--requests", type=int, default=40, help="requests per phase (default 40)")
    ap.add_argument("--seconds", type=float, default=30.0, help="time limit per phase (default 30 s)")
    ap.add_argument("--clients", default="1,2,4", help="concurrent clients per throughput phase (default 1,2,4)")
    ap.add_argument("--workers", type=int, default=1, help="the server's scoring threads (default 1)")
    ap.add_argument("--no-overlay", action="store_true", help="ask for scores only (no overlay PNG)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    data = Path(args.image).read_bytes()
    body, ctype = _multipart(Path(args.image).name, data)
    overlay = not args.no_overlay
    models = {"torch": Path(args.checkpoint)}
    tmp = tempfile.TemporaryDirectory()
    if args.onnx:
        models["onnx"] = Path(args.onnx)
    else:
        from scgan.artifacts.export import export_onnx

        models["onnx"] = export_onnx(args.checkpoint, Path(tmp.name) / "model.onnx")
    clients = [int(c) for c in args.clients.split(",")]
    figures: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "uptime_before": _uptime(),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
                     "image_bytes": len(data), "overlay": overlay, "workers": args.workers, "backends": {}}
    for backend, model in models.items():
        port = _free_port()
        proc = start_server(model, port, args.workers)
        try:
            sequential(port, body, ctype, overlay, 3, args.seconds)  # warm-up
            lat = sequential(port, body, ctype, overlay, args.requests, args.seconds)
            row = {"n_sequential": len(lat), "p50_ms": 1000 * statistics.median(lat),
                   "p95_ms": 1000 * _percentile(lat, 0.95), "throughput": {}}
            for c in clients:
                rps, done, _ = concurrent(port, body, ctype, overlay, c, args.requests, args.seconds)
                row["throughput"][str(c)] = {"requests_per_s": rps, "requests": done}
            figures["backends"][backend] = row
        finally:
            proc.terminate()
            proc.wait(30)
    figures["uptime_after"] = _uptime()
    tmp.cleanup()

    head = ("| backend | p50 (ms) | p95 (ms) | "
            + " | ".join(f"{c} client{'s' if c > 1 else ''} (req/s)" for c in clients) + " |")
    print(head)
    print("|" + "---|" * (3 + len(clients)))
    for backend, row in figures["backends"].items():
        rates = " | ".join(f"{row['throughput'][str(c)]['requests_per_s']:.1f}" for c in clients)
        print(f"| {backend} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {rates} |")
    print(f"\nuptime before: {figures['uptime_before']}\nuptime after:  {figures['uptime_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


if __name__ == "__main__":
    main()
