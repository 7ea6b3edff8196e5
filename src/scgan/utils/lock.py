"""One lock per output folder: a second scgan process writing into the same folder is refused at once.

The lock is ``FOLDER/.scgan.lock``, held with ``flock`` for as long as the process works there. The
kernel drops an ``flock`` when its process ends in any way (an exception, Ctrl-C, ``kill -9``), so a
lock file left behind by a dead process is stale by construction: the next run takes it over. The
file records the holder's pid, host and command, which the refusal names; on a file system without
``flock`` that pid decides instead: a lock whose process no longer exists is stale and taken over.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from scgan.utils.atomic import clean_stale_temps, writable_dir
from scgan.utils.runinfo import command_line

LOCK_NAME = ".scgan.lock"


class FolderLockedError(RuntimeError):
    """Another live process holds the output folder's lock."""


def _holder(fd: int) -> str:
    """Who holds the lock, from the file's record (pid, host, command, since), as words."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid, host, cmd, since = info.get("pid"), info.get("host"), info.get("command"), info.get("since")
    except (OSError, ValueError, AttributeError):
        return "another process"
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {pid}{where} ({cmd}, since {since})" if pid else "another process"


def _recorded_pid_alive(fd: int) -> bool:
    """True when the lock file names a live process on this host (or another host, which we cannot check)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid, host = int(info["pid"]), info.get("host")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # empty or unreadable: stale
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _open_lock_file(path: Path) -> int:
    """The lock file, opened for reading and writing (created if absent); FolderLockedError naming it when it is a
    link or not a regular file."""
    try:
        # O_NOFOLLOW: a symbolic link planted at the lock's name is refused, never followed; O_NONBLOCK: a FIFO
        # planted there is opened without waiting for a writer (then refused below).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as e:
        raise FolderLockedError(f"cannot create the lock file {path}: {e.strerror or e} "
                                "(a symbolic link there is refused; remove it)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FolderLockedError(f"the lock file {path} is not a regular file (a FIFO, device or socket was put "
                                "there); remove it, then run again")
    return fd


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block, or raise FolderLockedError naming the live holder.

    ``what`` names the work in the lock file's record ("training", "testing").
    """
    path = Path(folder) / LOCK_NAME
    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        except OSError:  # a file system without flock (some network mounts): judge by the recorded pid
            held = _recorded_pid_alive(fd)
        if held:
            holder = _holder(fd)
            os.close(fd)
            raise FolderLockedError(f"{folder} is in use by {holder}; wait for it to finish or use another "
                                    "output folder (two runs in one folder would mix their files)") from None
        # The previous holder may have deleted the file between our open and our lock: retry on the new one.
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "what": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: nobody can have taken it
        os.close(fd)


@contextlib.contextmanager
def locked_output(folder: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """The output folder of a command, created and checked writable, held under its lock for the ``with`` block,
    with the temporary files of writers killed mid-write cleared: what a command that writes its results into one
    folder takes (test, predict), so that two runs never mix their files there (train and calibrate hold the same
    lock through :func:`folder_lock`).

    Raises the one-line error of :func:`scgan.utils.atomic.writable_dir`, or FolderLockedError naming the holder.
    """
    out = writable_dir(folder)
    with folder_lock(out, what):
        clean_stale_temps(out)
        yield out
