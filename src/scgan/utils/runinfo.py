"""Provenance recorded in every result file: command, git commit, versions, time."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The commit each folder was at when this process first asked: see git_commit. The package's own commit is
# also passed to child processes in COMMIT_ENV.
_FIRST_SEEN: dict[str, str] = {}
COMMIT_ENV = "SCGAN_GIT_COMMIT"


def git_commit(cwd: str | Path | None = None) -> str:
    """The repository's HEAD commit (with '-dirty' when there are uncommitted changes), or 'unknown'.

    The first answer for a folder is kept for the life of the process, so a long invocation (a benchmark
    of many trainings) records the code it started from even if HEAD moves while it runs. Programs call
    this once at start (the CLI does) to fix it before any work.
    """
    if cwd is None and os.environ.get(COMMIT_ENV):  # set by the process that started this one (runs in parallel)
        return os.environ[COMMIT_ENV]
    key = str(Path(cwd or Path(__file__).resolve().parent).resolve())
    if key not in _FIRST_SEEN:
        _FIRST_SEEN[key] = _head_commit(key)
        if cwd is None:
            os.environ[COMMIT_ENV] = _FIRST_SEEN[key]  # inherited by worker processes (scgan benchmark --jobs N)
    return _FIRST_SEEN[key]


def _head_commit(cwd: str) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (numerics and speed differ between CPUs), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it), at least 1."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


# The password of a URL ("postgresql://user:secret@host/db"): never written to a record or a log. As SQLAlchemy
# reads it: the user is up to the first ":" (it may hold "@"), the password up to the next "@" (it may hold "/").
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:\s]*:)[^@\s]*(?=@)")


def mask_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***", text)


def command_line() -> str:
    """How this process was invoked, shell-quoted (a password in a URL argument masked)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("scgan", "__main__.py")):
        argv[0] = "scgan"
    return mask_passwords(" ".join(shlex.quote(a) for a in argv))


def _version(package: str) -> str | None:
    """An installed distribution's version, or None (read from its metadata: the package is not imported)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_info(**extra: Any) -> dict[str, Any]:
    """A dict of provenance to store beside results (without importing torch: ONNX scoring runs without it)."""
    from scgan import __version__

    info = {
        "command": command_line(),
        "git_commit": git_commit(),
        "scgan_version": __version__,
        "torch_version": _version("torch"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    info.update(extra)
    return info
