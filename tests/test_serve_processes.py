"""``scgan serve --processes N``, the real command: a worker killed mid-request is replaced while the service keeps
answering, the model file replaced on disk changes nothing until SIGHUP, and the quick soak of
``benchmarks/soak.py`` (every answer a result or a JSON 503, memory flat)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import http_request, multipart_body, one_error_line, png_bytes

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds worker processes in /proc")]

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> set[int]:
    return {int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()}


def _holder(pids: set[int], client: socket.socket) -> int:
    """Which of ``pids`` holds the server's end of ``client``'s connection (Linux: /proc/net/tcp and fd links)."""
    local = "%04X" % client.getsockname()[1]
    inode = next(line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[2].endswith(":" + local))  # the server's socket: its remote port is ours
    return next(pid for pid in pids for fd in Path(f"/proc/{pid}/fd").iterdir()
                if os.readlink(fd) == f"socket:[{inode}]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what, seconds: float = 120.0, every: float = 0.1):
    """``what()`` once it is truthy, polled for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (value := what()):
        assert time.monotonic() < deadline, f"waited {seconds} s in vain"
        time.sleep(every)
    return value


def _answers(port: int) -> bool:
    try:
        return http_request(port, "GET", "/health", timeout=5)[0] == 200
    except OSError:
        return False


class Served:
    """``scgan serve --processes N`` (None: one process) of ``model`` on a free port; its stderr in ``log``."""

    def __init__(self, model: Path, processes: int | None, log: Path) -> None:
        self.port, self.log, self.tmp = _free_port(), log, log.parent / "tmp"
        self.tmp.mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(self.tmp)}
        more = ["--processes", str(processes)] if processes else []
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "scgan", "serve", "--checkpoint", str(model),
                                          "--port", str(self.port), "--backend", "torch", *more],
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        self.announced = self.proc.stdout.readline()
        assert f":{self.port}/" in self.announced, log.read_text()
        _wait(lambda: len(self.workers()) == (processes or 0) and _answers(self.port))

    def workers(self) -> set[int]:
        return _children(self.proc.pid)

    def sha256(self) -> str:
        return http_request(self.port, "GET", "/model")[2]["sha256"]

    def logged(self, words: str) -> bool:
        return words in self.log.read_text()

    def stop(self) -> None:
        """SIGTERM: the workers and the supervisor exit, and its snapshots of the model are gone."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) in (0, -signal.SIGTERM) and list(self.tmp.iterdir()) == []  # uvicorn re-raises it


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_worker_killed_mid_request_is_replaced_and_the_service_keeps_answering(feature_model, tmp_path):
    served = Served(feature_model[0].model_path, 2, tmp_path / "serve.log")
    try:
        first = served.workers()
        body, kind = multipart_body([("a.png", png_bytes((200, 200)))])
        # a request whose body is half sent, on a connection one of the workers holds
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as s:
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            time.sleep(0.5)
            victim = _holder(first, s)
            os.kill(victim, signal.SIGKILL)
            try:  # a clean end of the connection, never a hang
                s.sendall(body[len(body) // 2:])
                assert s.recv(65536) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass
        # the survivor answers at once; the dead one is replaced
        status, _, answer = http_request(served.port, "POST", "/predict?overlay=false", files=[("a.png", png_bytes())])
        assert status == 200 and answer["results"][0]["decision"] in ("normal", "anomalous")
        now = _wait(lambda: (w := served.workers()) and len(w) == 2 and victim not in w and w)
        assert len(now & first) == 1
        assert served.logged(f"worker {victim} killed by SIGKILL; starting another")
        for _ in range(4):
            assert http_request(served.port, "POST", "/predict?overlay=false", files=[("b.png", png_bytes())])[0] == 200
    finally:
        served.stop()


def test_the_model_file_replaced_on_disk_is_served_only_after_sighup(feature_model, trained, tmp_path):
    model = tmp_path / "model.pt"
    shutil.copyfile(feature_model[0].model_path, model)
    old, new = _sha256(model), _sha256(trained[0].model_path)
    served = Served(model, 1, tmp_path / "serve.log")
    try:
        assert served.sha256() == old and f"sha256 {old[:12]}" in served.announced
        shutil.copyfile(trained[0].model_path, tmp_path / "next.pt")
        os.replace(tmp_path / "next.pt", model)  # the file changes under the running service
        assert served.sha256() == old
        (victim,) = served.workers()  # a replacement worker serves what the service loaded, not what is on disk now
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: _answers(served.port) and victim not in served.workers())
        assert served.sha256() == old and http_request(served.port, "GET", "/model")[2]["kind"] == "patchcore"
        served.proc.send_signal(signal.SIGHUP)  # the explicit reload
        _wait(lambda: served.logged(f"reloaded: 1 worker processes serve {model} (sha256 {new}, was {old})"))
        _wait(lambda: served.sha256() == new, 30)  # the old worker stops accepting once it has its SIGTERM
        assert http_request(served.port, "GET", "/model")[2]["kind"] != "patchcore"
        model.write_bytes(b"not a model")  # a reload that cannot load keeps the model served
        served.proc.send_signal(signal.SIGHUP)
        _wait(lambda: served.logged(f"reload failed, still serving sha256 {new}"))
        assert served.sha256() == new and _answers(served.port)
    finally:
        served.stop()


def test_a_model_no_worker_can_load_is_one_error_line_and_leaves_nothing(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    run = subprocess.run([sys.executable, "-m", "scgan", "serve", "--checkpoint", str(tmp_path / "bad.pt"), "--port",
                          "0", "--processes", "1"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")})
    assert run.returncode == 1 and run.stdout == ""
    line = one_error_line(run.stderr, "serve")  # the worker's reason, as a single process would say it
    assert f"{tmp_path / 'bad.pt'} is not an scgan checkpoint" in line
    assert list((tmp_path / "tmp").iterdir()) == []  # the supervisor's copy of the file is gone


def test_sighup_to_a_single_process_is_logged_and_it_serves_on(feature_model, tmp_path):
    served = Served(feature_model[0].model_path, None, tmp_path / "serve.log")
    try:
        sha = served.sha256()
        served.proc.send_signal(signal.SIGHUP)
        _wait(lambda: served.logged(f"SIGHUP ignored: this server is one process and keeps serving sha256 {sha}"))
        assert _answers(served.port) and served.sha256() == sha == _sha256(feature_model[0].model_path)
    finally:
        served.stop()


def test_quick_soak_every_answer_is_a_result_or_a_json_503(feature_model, tmp_path, demo_root, demo_category):
    """benchmarks/soak.py for 3 s per setup (one process, and two worker processes): no request without an
    answer, no status but 200 and JSON 503, memory and descriptors flat. Speed is not asserted."""
    image = next((demo_root / demo_category / "test" / "good").glob("*.png"))
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--checkpoint",
                          str(feature_model[0].model_path), "--image", str(image), "--duration", "3",
                          "--warmup", "1.5", "--setups", "w1,p2", "--backend", "torch", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out.read_text())
    assert figures["broken"] == []
    for row in figures["setups"]:
        for phase in ("at", "beyond"):
            p = row[phase]
            assert p["dropped"] == 0 and p["other_status"] == 0 and p["refusals_not_json"] == 0, row
            assert p["by_status"]["200"]["n"] > 0, row
        assert row["beyond"]["by_status"]["503"]["n"] > 0, row  # twice its places: the surplus is refused
        assert row["rss_growth"] < 0.10 and row["fds_end"] <= row["fds_start"] + 2, row
