"""Atomic file writes: write to a temporary file beside the target, fsync, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder that holds it (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success rename it over ``path``, on error delete it.

    A crash mid-write therefore leaves the previous ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create folder ``path`` (with parents) and check a file can be written in it, or raise a clear error.

    Called before any long work, so that an unwritable output folder fails at once, not after training.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".scgan-write-test-{os.getpid()}"  # per process: DDP ranks probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to output folder {path}: {e.strerror or e}") from None
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(file)`` on a binary temporary file, then rename it over ``path``."""
    with atomic_open(path, "wb") as f:
        writer(f)
