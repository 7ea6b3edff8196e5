"""``scgan serve --processes N``: worker processes under a supervisor, so that a killed process is not the service.

One process with scoring threads is the whole service: killed (the OOM killer, a crash in a native library,
``kill -9``), nothing answers. Here the supervisor binds the listening socket, copies the model file into a private
folder (a snapshot: what it serves no longer depends on the file a user may replace) and starts N worker processes
on the socket, each a whole server (the model, its scoring threads, uvicorn with scgan's protocol); the kernel hands
each connection to one of them. Then it watches them:

- a worker that dies is replaced at once from the same snapshot; one that dies before it answers is retried after a
  pause that doubles, from 1 s up to 30 s. While none answers, connections wait in the socket's backlog;
- SIGHUP reloads the model file: a new snapshot, N new workers, and once all of them answer the old ones finish their
  requests and exit. A file that cannot be loaded leaves the old workers serving. Both outcomes are logged with the
  file's sha256 (``GET /model`` says which sha256 a worker serves);
- SIGTERM or SIGINT stops the workers (each finishes its requests) and the supervisor. A worker whose supervisor is
  gone stops by itself within a second.

The supervisor imports neither torch nor the model, so it stays small, and only workers can fail on a model.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scgan.serve.guards import Limits
from scgan.utils.errors import one_line
from scgan.utils.limits import SERVE_PROCESSES
from scgan.utils.manifest import file_identity

log = logging.getLogger("scgan.serve")

READY_TIMEOUT_S = 300.0  # a worker must load its model and answer within it
RETRY_S = (1.0, 30.0)  # the pause before replacing a worker that died before answering: first, longest
STOP_GRACE_S = 30.0  # what a stopping worker gets to finish its requests before SIGKILL
TICK_S = 0.05


@dataclass
class WorkerSpec:
    """What every worker process is started with (sent to it as JSON)."""

    model: str
    backend: str | None
    host: str
    allowed: tuple[str, ...]
    limits: dict
    log_level: str = "warning"


@dataclass
class Worker:
    """One worker process, the pipe it reports on, and what it reported."""

    proc: subprocess.Popen
    status_fd: int
    started: float = field(default_factory=time.monotonic)
    pending: bytes = b""
    ready: dict | None = None  # {"pid", "sha256"} once it answers
    error: str | None = None  # why it could not start

    def read_status(self) -> None:
        """Take what the worker reported since last time (never blocks)."""
        try:
            data = os.read(self.status_fd, 65536) if self.status_fd >= 0 else b""
        except OSError:  # nothing new (BlockingIOError)
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            message = json.loads(line)
            self.ready = message if "sha256" in message else self.ready
            self.error = message.get("error", self.error)

    def close(self) -> None:
        if self.status_fd >= 0:
            os.close(self.status_fd)
            self.status_fd = -1


def exit_description(code: int | None) -> str:
    """A process's return code in words: ``killed by SIGKILL``, ``exited with code 1``."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """``processes`` workers of ``spec`` on ``sock``: replaced when they die, reloaded on SIGHUP (module doc)."""

    def __init__(self, spec: WorkerSpec, sock: socket.socket, processes: int) -> None:
        self.spec, self.sock, self.processes = spec, sock, SERVE_PROCESSES.check("processes", processes)
        self.folder = Path(tempfile.mkdtemp(prefix="scgan-serve-"))
        self.workers: list[Worker] = []  # the generation serving
        self.incoming: list[Worker] = []  # a reload's generation, until all of it answers
        self.retiring: list[tuple[Worker, float]] = []  # an old generation finishing its requests, and since when
        self.due: list[float] = []  # when to start replacements
        self.retry_s = RETRY_S[0]
        self.snapshot = self.incoming_snapshot = None
        self.snapshots = 0  # how many were taken: each gets its own folder
        self.sha256 = ""
        self.flags = {"reload": False, "stop": False}

    # -- snapshots and workers ---------------------------------------------------------------------------
    def _snapshot(self) -> tuple[Path, str]:
        """A private copy of the model file, and its sha256."""
        source = Path(self.spec.model)
        folder = self.folder / str(self.snapshots)
        self.snapshots += 1
        folder.mkdir()
        copy = folder / source.name
        shutil.copyfile(source, copy)
        # its cached ONNX graphs, beside it or in the last snapshot (named by its sha256: another file's are ignored)
        for place in {source.parent, *([self.snapshot.parent] if self.snapshot else [])}:
            for graph in place.glob(f".{source.name}.*.onnx"):
                shutil.copyfile(graph, folder / graph.name)
        return copy, file_identity(copy)["sha256"]

    def _spawn(self, model: Path) -> Worker:
        read, write = os.pipe()
        os.set_blocking(read, False)
        payload = json.dumps({**asdict(self.spec), "snapshot": str(model), "fd": self.sock.fileno(),
                              "status_fd": write, "parent": os.getpid()})
        try:
            proc = subprocess.Popen([sys.executable, "-m", "scgan.serve.supervisor", payload],
                                    pass_fds=(self.sock.fileno(), write), stdin=subprocess.DEVNULL)
        finally:
            os.close(write)
        return Worker(proc, read)

    def _generation(self, model: Path) -> list[Worker]:
        return [self._spawn(model) for _ in range(self.processes)]

    @staticmethod
    def _failure(workers: Sequence[Worker]) -> str | None:
        """Why a generation cannot serve: a worker's error, or its death before it answered; None while it may."""
        for w in workers:
            w.read_status()
            if w.error:
                return w.error
            if w.ready is None and w.proc.poll() is not None:
                return f"a worker {exit_description(w.proc.returncode)} before it answered"
            if w.ready is None and time.monotonic() - w.started > READY_TIMEOUT_S:
                return f"a worker did not answer within {READY_TIMEOUT_S:g} s"
        return None

    def _stop(self, workers: Sequence[Worker], grace_s: float = STOP_GRACE_S) -> None:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.terminate()
        deadline = time.monotonic() + grace_s
        for w in workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.close()

    # -- the life of the service -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the first generation and wait until every worker answers; RuntimeError (their one line) if not."""
        if threading.current_thread() is threading.main_thread():  # a SIGHUP meanwhile reloads once it serves
            signal.signal(signal.SIGHUP, lambda *_: self.flags.update(reload=True))
        self.snapshot, self.sha256 = self._snapshot()
        self.workers = self._generation(self.snapshot)
        while any(w.ready is None for w in self.workers):
            failure = self._failure(self.workers)
            if failure is not None:
                self._stop(self.workers, grace_s=5.0)
                raise RuntimeError(failure)
            time.sleep(TICK_S)
        log.info("%d worker processes serve %s (sha256 %s): pids %s", self.processes, self.spec.model, self.sha256,
                 ", ".join(str(w.proc.pid) for w in self.workers))

    def run(self) -> None:
        """Watch the workers until SIGTERM or SIGINT (this thread must be the main one: it takes the signals)."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.SIG_DFL
        signal.signal(signal.SIGHUP, lambda *_: self.flags.update(reload=True))
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: self.flags.update(stop=True))
        try:
            while not self.flags["stop"]:
                self.tick()
                time.sleep(TICK_S)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.close()

    def tick(self) -> None:
        """One round: replace dead workers, advance a reload, reap retired ones."""
        if self.flags["stop"]:  # Ctrl-C reaches the workers too: their ends are no deaths to make up for
            return
        if self.flags["reload"] and not self.incoming:
            self.flags["reload"] = False
            self._begin_reload()
        for w in list(self.workers):
            w.read_status()
            if w.proc.poll() is None:
                continue
            self.workers.remove(w)
            w.close()
            if w.ready is None:  # it died while starting: pause before the next try, longer each time
                self.due.append(time.monotonic() + self.retry_s)
                self.retry_s = min(2 * self.retry_s, RETRY_S[1])
            else:
                self.due.append(time.monotonic())
            log.warning("worker %d %s; starting another (%d of %d serving)", w.proc.pid,
                        exit_description(w.proc.returncode), len(self.workers), self.processes)
        for when in [t for t in self.due if t <= time.monotonic()]:
            self.due.remove(when)
            self.workers.append(self._spawn(self.snapshot))
        if any(w.ready is not None for w in self.workers):
            self.retry_s = RETRY_S[0]
        if self.incoming:
            self._advance_reload()
        for w, since in list(self.retiring):
            if w.proc.poll() is not None or time.monotonic() - since > STOP_GRACE_S:
                self._stop([w], grace_s=0.0)
                self.retiring.remove((w, since))

    def _begin_reload(self) -> None:
        try:
            self.incoming_snapshot, sha256 = self._snapshot()
        except OSError as e:
            log.error("SIGHUP: cannot read %s (%s); still serving sha256 %s", self.spec.model, one_line(e),
                      self.sha256)
            return
        log.info("SIGHUP: reloading %s (sha256 %s; serving sha256 %s until the new workers answer)", self.spec.model,
                 sha256, self.sha256)
        self.incoming = self._generation(self.incoming_snapshot)

    def _advance_reload(self) -> None:
        failure = self._failure(self.incoming)
        if failure is not None:
            self._stop(self.incoming, grace_s=5.0)
            self.incoming = []
            shutil.rmtree(self.incoming_snapshot.parent, ignore_errors=True)
            log.error("reload failed, still serving sha256 %s: %s", self.sha256, failure)
        elif all(w.ready is not None for w in self.incoming):
            old, old_sha = self.workers, self.sha256
            self.workers, self.incoming = self.incoming, []
            self.due.clear()
            self.sha256 = self.workers[0].ready["sha256"]
            for w in old:
                if w.proc.poll() is None:
                    w.proc.terminate()  # uvicorn finishes the requests it has, then exits
                self.retiring.append((w, time.monotonic()))
            shutil.rmtree(self.snapshot.parent, ignore_errors=True)
            self.snapshot = self.incoming_snapshot
            log.info("reloaded: %d worker processes serve %s (sha256 %s, was %s)", self.processes, self.spec.model,
                     self.sha256, old_sha)

    def close(self) -> None:
        """Stop every worker (each finishes its requests first) and remove the snapshots."""
        self._stop([*self.workers, *self.incoming, *(w for w, _ in self.retiring)])
        self.workers, self.incoming, self.retiring = [], [], []
        shutil.rmtree(self.folder, ignore_errors=True)


def serve_processes(spec: WorkerSpec, port: int, processes: int,
                    announce: Callable[[str, str], None] | None = None) -> None:
    """Serve ``spec`` from ``processes`` worker processes under a :class:`Supervisor` until SIGTERM or SIGINT.
    ``announce(url, sha256)`` is called once every worker answers; a port that cannot be bound, or a model no
    worker can load, is one error line (OSError, RuntimeError) before anything serves."""
    from scgan.serve.server import listen, log_to_stderr, url_of

    log_to_stderr("[supervisor] ")
    sock = listen(spec.host, port)
    try:
        sock.listen(2048)  # connections wait here while no worker accepts (one is being replaced)
        supervisor = Supervisor(spec, sock, processes)
        try:
            supervisor.start()
        except BaseException:
            supervisor.close()
            raise
        if announce is not None:
            announce(url_of(spec.host, sock), supervisor.sha256)
        supervisor.run()
    finally:
        sock.close()


# -- the worker process ----------------------------------------------------------------------------------------
def _stop_with(parent: int) -> None:
    """SIGTERM this process (uvicorn then finishes its requests) once its supervisor ``parent`` is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_main(payload: str) -> int:
    """A worker: load the snapshot, serve it on the inherited socket, report ``{"pid", "sha256"}`` (or
    ``{"error"}``) on the status pipe."""
    from scgan.inference.detector import load_detector
    from scgan.serve.app import create_app
    from scgan.serve.server import log_to_stderr, make_server

    spec = json.loads(payload)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloading is the supervisor's
    threading.Thread(target=_stop_with, args=(spec["parent"],), daemon=True).start()
    log_to_stderr(f"[worker {os.getpid()}] ")
    status = os.fdopen(spec["status_fd"], "w")

    def report(message: dict) -> None:
        status.write(json.dumps(message) + "\n")
        status.flush()

    try:
        detector = load_detector(spec["snapshot"], spec["backend"])
        limits = Limits(**spec["limits"])
        app = create_app(detector, limits, allowed_hosts=spec["allowed"])
    except Exception as e:  # noqa: BLE001 — the supervisor shows it as the one line
        report({"error": one_line(e).replace(spec["snapshot"], spec["model"])})  # the user's file, not our copy
        return 1
    server = make_server(app, limits, spec["log_level"])

    def announce_when_started() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            report({"pid": os.getpid(), "sha256": detector.info["sha256"]})

    threading.Thread(target=announce_when_started, daemon=True).start()
    server.run(sockets=[socket.socket(fileno=spec["fd"])])
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
