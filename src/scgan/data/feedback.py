"""The feedback folder: images a person marked on the service's page as a false alarm or a missed defect.

``DIR/feedback.jsonl`` holds one JSON line per mark (the file's name and sha256, the label, the score and threshold
the server computed, the model's sha256, the time); ``DIR/images/<sha256><suffix>`` holds each image once, named by
its hash. Nothing is ever overwritten: a line is appended, an image already stored whole is not written again (one
a crash cut short is replaced by the whole one, renamed into place).
``scgan update --feedback DIR`` learns the false alarms as normal images; ``scgan calibrate --defects DIR`` takes
the missed defects.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scgan.data.io import IMAGE_EXTENSIONS, is_image_file
from scgan.utils.manifest import file_sha256

LOG_NAME = "feedback.jsonl"
IMAGES = "images"
LABELS = {"false_alarm": "false alarm (a normal image the model called anomalous)",
          "missed_defect": "missed defect (a defective image the model called normal)"}


def check_file_name(name: str) -> str:
    """``name`` if it is a plain file name; ValueError for one holding a path separator, ``..``, a NUL or a control
    character, or one without an image suffix (nothing is written for it)."""
    if not name or "/" in name or "\\" in name or "\x00" in name or ".." in name \
            or any(ord(c) < 32 for c in name):
        raise ValueError("the file name must be a plain name (no '/', '\\', '..', NUL or control characters)")
    if not is_image_file(name):
        raise ValueError(f"the file name must end in one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return name


def is_feedback_dir(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` is a feedback folder (it holds the feedback log)."""
    return (Path(folder) / LOG_NAME).is_file()


def record_feedback(folder: str | os.PathLike[str], name: str, data: bytes, record: dict[str, Any]) -> dict[str, Any]:
    """Store one mark: the image bytes (once, by hash) and one appended JSON line of ``record`` with the file's name,
    sha256 and stored path added. Returns the line written. ValueError for a hostile name or unknown label."""
    name = check_file_name(name)
    if record.get("label") not in LABELS:
        raise ValueError(f"unknown feedback label {record.get('label')!r}; valid labels: {', '.join(LABELS)}")
    folder = Path(folder)
    (folder / IMAGES).mkdir(parents=True, exist_ok=True)
    if (folder / IMAGES).is_symlink() or (folder / LOG_NAME).is_symlink():
        raise ValueError(f"{folder} holds a symbolic link where the feedback is stored; nothing is written outside it")
    digest = hashlib.sha256(data).hexdigest()
    stored = Path(IMAGES) / f"{digest}{Path(name).suffix.lower()}"
    target = folder / stored
    whole = target.is_file() and not target.is_symlink() and file_sha256(target) == digest
    if not whole:  # new, or cut short by a crash: written beside it and renamed over it, whole or not at all
        fd, tmp = tempfile.mkstemp(dir=folder / IMAGES, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    line = {**record, "file": name, "sha256": digest, "image": stored.as_posix()}
    fd = os.open(folder / LOG_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # two marks at once: whole lines, one after the other
        end = os.fstat(fd).st_size  # a line cut by a crash must not swallow this one: it starts a new line
        torn = end > 0 and os.pread(fd, 1, end - 1) != b"\n"
        f.write(("\n" if torn else "") + json.dumps(line, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return line


@dataclass(frozen=True)
class FeedbackImage:
    """One marked image on disk and its log line."""

    path: Path
    record: dict[str, Any]


def read_feedback(folder: str | os.PathLike[str], label: str) -> list[FeedbackImage]:
    """The images of ``folder`` marked ``label``, once each (by hash), in the order first marked. ValueError when the
    folder holds no feedback log; lines that do not parse, or whose image is missing, are errors naming the line."""
    folder = Path(folder)
    log = folder / LOG_NAME
    if not log.is_file():
        raise ValueError(f"{folder} is not a feedback folder (no {LOG_NAME}); 'scgan serve --feedback DIR' makes one")
    out: dict[str, FeedbackImage] = {}
    for number, text in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            digest, stored = str(record["sha256"]), Path(record["image"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{log}:{number} is not a feedback line") from None
        if record.get("label") != label or digest in out:
            continue
        if stored.is_absolute() or ".." in stored.parts or not (folder / stored).is_file():
            raise ValueError(f"{log}:{number}: its image {stored} is not in {folder / IMAGES}")
        out[digest] = FeedbackImage(folder / stored, record)
    return list(out.values())
