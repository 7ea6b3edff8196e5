"""Load and soak of ``scgan serve``: a fixed time at and beyond its capacity, and (``--fault``) a worker killed.

For each server setup (``--setups``, default: 1 scoring thread, 2 threads, 2 worker processes) it starts
``scgan serve`` on 127.0.0.1, warms it up, then drives it with closed-loop clients (each a keep-alive connection
posting one image again as soon as it has its answer) for ``--duration`` seconds: the first half *at* capacity (as
many clients as the server has places, scoring and waiting: every request admitted), the second half *beyond* it
(twice as many: the surplus must get a JSON 503 at once). It reports, per setup and phase:

- answers per second (results, 503 refusals) and the latency p50 / p95 / p99 of each kind;
- every answer classified: a result (200), a JSON 503 refusal, any other status, or none (the connection dropped
  without an answer). The service's promise is that the last two are zero;
- the server's resident memory (all its processes) and open file descriptors after the warm-up and at the end
  (memory must not grow by 10 % or more);
- the CPU time of the server and of this load generator, as shares of the machine (they share its cores).

``--fault`` instead serves from worker processes (``--processes``, default 1 and 2), keeps each busy, sends
SIGKILL to one worker mid-request, and reports what the clients saw: the requests that got no answer, the gap (from
the kill to the first result of a request sent after it), and whether a new worker replaced the dead one.

    python benchmarks/soak.py --quick                     # 60 s per setup, the model fitted on the demo data
    python benchmarks/soak.py --duration 600 --json soak.json   # the record (10 minutes per setup)
    python benchmarks/soak.py --fault                     # the worker-kill runs

Without ``--checkpoint`` it fits the default detector on the demo data in a temporary folder (``scgan demo``) and
sends one of its test images. Nothing leaves localhost.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import _free_port, _multipart, _percentile, _uptime, fit_demo_model, start_server  # noqa: E402

SETUPS = {"w1": ("--workers", "1"), "w2": ("--workers", "2"), "p2": ("--workers", "1", "--processes", "2")}
QUEUE = 8  # scgan serve's default


# -- the server's processes, from /proc ------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def _proc_sum(pids: list[int], read) -> float:
    total = 0.0
    for p in pids:
        try:
            total += read(p)
        except OSError:  # it ended meanwhile
            pass
    return total


def rss_mb(pids: list[int]) -> float:
    """Resident memory of ``pids`` together, in MiB."""
    def one(p: int) -> float:
        line = next(x for x in Path(f"/proc/{p}/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    return _proc_sum(pids, one)


def open_fds(pids: list[int]) -> int:
    """Open file descriptors of ``pids`` together."""
    return int(_proc_sum(pids, lambda p: len(os.listdir(f"/proc/{p}/fd"))))


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) ``pids`` have used."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    return _proc_sum(pids, one)


def workers_of(pid: int) -> list[int]:
    """The worker processes of a ``scgan serve --processes`` supervisor."""
    return [p for p in process_tree(pid) if p != pid]


# -- the load ----------------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """What the clients saw: (start, end, status) per answer, and the requests that got none."""

    answers: list[tuple[float, float, int]] = field(default_factory=list)
    bad_bodies: int = 0  # a 503 that was not the service's JSON refusal
    dropped: list[tuple[float, str]] = field(default_factory=list)  # (start, what happened)
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive(port: int, body: bytes, ctype: str, clients: int, seconds: float, tally: Tally) -> None:
    """``clients`` closed-loop clients posting ``body`` for ``seconds`` (scores only: no overlay)."""
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                conn.request("POST", "/predict?overlay=false", body=body, headers={"Content-Type": ctype})
                r = conn.getresponse()
                payload = r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                with tally.lock:
                    tally.dropped.append((start, type(e).__name__))
                continue
            end = time.monotonic()
            refused_cleanly = status != 503 or (r.getheader("content-type") == "application/json"
                                                and "error" in json.loads(payload))
            with tally.lock:
                tally.answers.append((start, end, status))
                tally.bad_bodies += not refused_cleanly
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def summary(tally: Tally, wall: float) -> dict:
    """Rates, latencies and the classification of every answer."""
    out: dict = {"wall_s": round(wall, 1), "by_status": {}, "dropped": len(tally.dropped),
                 "refusals_not_json": tally.bad_bodies}
    for status in sorted({s for _, _, s in tally.answers}):
        lat = [e - s for s, e, st in tally.answers if st == status]
        out["by_status"][str(status)] = {
            "n": len(lat), "per_s": round(len(lat) / wall, 2), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p95_ms": round(1000 * _percentile(lat, 0.95), 1), "p99_ms": round(1000 * _percentile(lat, 0.99), 1)}
    out["other_5xx"] = sum(v["n"] for k, v in out["by_status"].items() if k.startswith("5") and k != "503")
    out["other_status"] = sum(v["n"] for k, v in out["by_status"].items() if k not in ("200", "503"))
    return out


def places(setup: tuple[str, ...]) -> int:
    """Requests a server of ``setup`` admits at once: (threads + queue) per process."""
    opts = dict(zip(setup[::2], setup[1::2], strict=True))
    return int(opts.get("--processes", 1)) * (int(opts["--workers"]) + QUEUE)


def soak(model: Path, body: bytes, ctype: str, setup: tuple[str, ...], seconds: float, log: Path,
         backend: str, warmup_s: float = 5.0) -> dict:
    """One setup: warm-up, half ``seconds`` at capacity, half beyond it; the figures."""
    port = _free_port()
    proc = start_server(model, port, 1, extra=(*setup, "--queue", str(QUEUE), "--backend", backend), log=log)
    try:
        # warm-up, at least warmup_s and then until memory stops growing (the first requests of each worker allocate)
        start = time.monotonic()
        drive(port, body, ctype, 2 * places(setup), warmup_s, Tally())
        for _ in range(20):
            before = rss_mb(process_tree(proc.pid))
            drive(port, body, ctype, 2 * places(setup), 1.0, Tally())
            if rss_mb(process_tree(proc.pid)) <= 1.01 * before:
                break
        pids = process_tree(proc.pid)
        row = {"setup": " ".join(setup), "server_processes": len(pids), "rss_mb_start": round(rss_mb(pids), 1),
               "fds_start": open_fds(pids), "warmup_s": round(time.monotonic() - start, 1)}
        me0, srv0, t0 = os.times(), cpu_s(pids), time.monotonic()
        for phase, clients in (("at", places(setup)), ("beyond", 2 * places(setup))):
            tally = Tally()
            start = time.monotonic()
            drive(port, body, ctype, clients, seconds / 2, tally)
            row[phase] = {"clients": clients, **summary(tally, time.monotonic() - start)}
        wall, me1 = time.monotonic() - t0, os.times()
        time.sleep(1.0)  # let the last connections close
        pids = process_tree(proc.pid)
        cores = os.cpu_count() or 1
        row.update(rss_mb_end=round(rss_mb(pids), 1), fds_end=open_fds(pids),
                   server_cpu_share=round((cpu_s(pids) - srv0) / wall / cores, 3),
                   generator_cpu_share=round((me1.user + me1.system - me0.user - me0.system) / wall / cores, 3))
        row["rss_growth"] = round(row["rss_mb_end"] / row["rss_mb_start"] - 1, 4)
        return row
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def fault(model: Path, body: bytes, ctype: str, processes: int, seconds: float, log: Path, backend: str) -> dict:
    """Serve from ``processes`` workers, each kept busy (two clients per worker: one scored, one waiting, so that no
    storm of 503 refusals blurs the failover); SIGKILL one at a third of ``seconds``: what the clients saw."""
    port = _free_port()
    setup = ("--workers", "1", "--processes", str(processes), "--queue", str(QUEUE), "--backend", backend)
    proc = start_server(model, port, 1, extra=setup, log=log)
    try:
        drive(port, body, ctype, 2, 3.0, Tally())
        before = workers_of(proc.pid)
        tally = Tally()
        load = threading.Thread(target=drive, args=(port, body, ctype, 2 * processes, seconds, tally))
        load.start()
        time.sleep(seconds / 3)
        victim = before[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        load.join()
        after = workers_of(proc.pid)
        first_ok = min((e for s, e, st in tally.answers if st == 200 and s >= killed_at), default=None)
        ends = sorted([killed_at, *(e for _, e, st in tally.answers if st == 200 and e >= killed_at)])
        return {"processes": processes, "killed": victim, "workers_before": before, "workers_after": after,
                "replaced": victim not in after and len(after) == len(before),
                "gap_s": None if first_ok is None else round(first_ok - killed_at, 2),
                "longest_silence_s": round(max(b - a for a, b in zip(ends, ends[1:], strict=False)), 2)
                if len(ends) > 1 else None,
                "no_answer": [what for _, what in tally.dropped],
                "answers_after_kill": sum(1 for s, _, st in tally.answers if st == 200 and s >= killed_at),
                **{k: v for k, v in summary(tally, seconds).items() if k in ("by_status", "other_5xx")}}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def table(rows: list[dict]) -> str:
    """The soak figures as the markdown table docs/deploy.md shows."""
    lines = ["| setup | phase | clients | results/s | p50 / p95 / p99 (ms) | 503/s | other or no answer | "
             "RSS start → end (MiB) | fds start → end | server / generator CPU |",
             "|" + "---|" * 10]
    for r in rows:
        for phase in ("at", "beyond"):
            p = r[phase]
            ok = p["by_status"].get("200", {"per_s": 0, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0})
            busy = p["by_status"].get("503", {}).get("per_s", 0)
            lines.append(f"| {r['setup']} | {phase} | {p['clients']} | {ok['per_s']:.1f} | {ok['p50_ms']:.0f} / "
                         f"{ok['p95_ms']:.0f} / {ok['p99_ms']:.0f} | {busy:.1f} | {p['other_status'] + p['dropped']} "
                         f"| {r['rss_mb_start']:.0f} → {r['rss_mb_end']:.0f} | {r['fds_start']} → {r['fds_end']} | "
                         f"{100 * r['server_cpu_share']:.0f} % / {100 * r['generator_cpu_share']:.0f} % |")
    return "\n".join(lines)


def check(rows: list[dict]) -> list[str]:
    """The service's promises, broken: every answer a result or a JSON 503, none dropped, memory growth < 10 %."""
    broken = []
    for r in rows:
        for phase in ("at", "beyond"):
            p = r[phase]
            if p["dropped"] or p["other_status"] or p["refusals_not_json"]:
                broken.append(f"{r['setup']} {phase}: {p['dropped']} without an answer, {p['other_status']} other "
                              f"statuses, {p['refusals_not_json']} 503s not JSON")
        if r["rss_growth"] >= 0.10:
            broken.append(f"{r['setup']}: memory grew {100 * r['rss_growth']:.1f} %")
    return broken


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="the model to serve (default: the default detector fitted on the demo data)")
    ap.add_argument("--image", help="the image every request sends (default: a demo test image)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds per setup (default 600, the record)")
    ap.add_argument("--quick", action="store_true", help="60 s per setup")
    ap.add_argument("--setups", default="w1,w2,p2", help=f"of {', '.join(SETUPS)} (default w1,w2,p2)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds of load before the figures, at least; then on until memory stops growing (default 5)")
    ap.add_argument("--backend", default="auto", help="scgan serve's --backend (default auto)")
    ap.add_argument("--fault", action="store_true", help="the worker-kill runs instead of the soak")
    ap.add_argument("--processes", default="1,2", help="with --fault: worker processes per run (default 1,2)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    seconds = 60.0 if args.quick else args.duration

    tmp = tempfile.TemporaryDirectory(prefix="scgan-soak-")
    model = Path(args.checkpoint) if args.checkpoint else fit_demo_model(Path(tmp.name) / "demo")
    image = Path(args.image) if args.image else next(Path(tmp.name).glob("demo/data/*/test/good/*.png"))
    body, ctype = _multipart(image.name, image.read_bytes())
    figures: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "uptime_before": _uptime(),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
                     "model": str(model), "image": image.name, "image_bytes": len(body), "seconds": seconds}
    log = Path(tmp.name) / "server.log"
    if args.fault:
        figures["faults"] = [fault(model, body, ctype, int(n), seconds, log, args.backend)
                             for n in args.processes.split(",")]
        for f in figures["faults"]:
            print(f"{f['processes']} process(es): killed {f['killed']}, replaced: {f['replaced']}, gap "
                  f"{f['gap_s']} s (longest time without a result {f['longest_silence_s']} s), without an answer: "
                  f"{len(f['no_answer'])} ({', '.join(sorted(set(f['no_answer'])))}), other 5xx: {f['other_5xx']}, "
                  f"results after the kill: {f['answers_after_kill']}")
        broken = [f"{f['processes']} processes: not replaced" for f in figures["faults"] if not f["replaced"]]
        broken += [f"{f['processes']} processes: a 5xx other than 503" for f in figures["faults"] if f["other_5xx"]]
    else:
        figures["setups"] = [soak(model, body, ctype, SETUPS[s], seconds, log, args.backend, args.warmup)
                             for s in args.setups.split(",")]
        print(table(figures["setups"]))
        broken = check(figures["setups"])
    figures["uptime_after"] = _uptime()
    figures["broken"] = broken
    print(f"\nuptime before: {figures['uptime_before']}\nuptime after:  {figures['uptime_after']}")
    print("\n".join(broken) or "every answer a result or a JSON 503; memory growth under 10 %")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    tmp.cleanup()
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
