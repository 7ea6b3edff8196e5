"""Feedback from the page (``scgan serve --feedback DIR``): ``GET /feedback`` says it is on, ``POST /feedback?label=``
stores an image a person marked "false alarm" or "missed defect" in DIR (:mod:`scgan.data.feedback`).

It writes to disk, so it is off unless asked for, and every POST carries the token in the ``X-Feedback-Token``
header (never in the URL: the access log records URLs). The score and threshold stored are the server's own, computed
again from the image, never the page's. A file name holding ``/``, ``\\``, ``..`` or a NUL is refused and nothing is
written; stored images are named by their sha256, inside DIR only.

With ``scgan serve --db`` too, each mark is also recorded in the results store, linked to the decision it concerns:
the one whose id ``POST /predict`` returned and the page passes back (``decision_id=``; checked to be a decision on
this very image by this model, else refused with nothing stored), else the latest decision on the image's content by
this model. Its line in DIR gains ``decision_id``. A store that cannot be reached leaves the mark in DIR only.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from scgan.data.feedback import LABELS, check_file_name, record_feedback
from scgan.serve.errors import ServeError
from scgan.serve.guards import Limits
from scgan.serve.routes import Scoring, read_uploads

if TYPE_CHECKING:
    from scgan.inference.detector import Detector
    from scgan.serve.recent import DecisionLog

log = logging.getLogger(__name__)

TOKEN_ENV = "SCGAN_FEEDBACK_TOKEN"
TOKEN_HEADER = "X-Feedback-Token"


@dataclass(frozen=True)
class Feedback:
    """Where marks are stored, and the token a request must carry (``repr`` never shows it)."""

    folder: Path
    token: str

    def __repr__(self) -> str:
        return f"Feedback(folder={str(self.folder)!r}, token=<hidden>)"


def feedback_token(token_file: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """(the token, whether it was generated here): from the file ``token_file`` (its first line), else the
    environment variable SCGAN_FEEDBACK_TOKEN, else a new random one (to be shown once, at start)."""
    if token_file is not None:
        lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
        if len(token) < 16:
            raise ValueError(f"the feedback token in {token_file} must be at least 16 characters on its first line")
        return token, False
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        if len(token) < 16:
            raise ValueError(f"{TOKEN_ENV} must be at least 16 characters")
        return token, False
    return secrets.token_urlsafe(24), True


def feedback_folder(folder: str | os.PathLike[str], token: str) -> Feedback:
    """The feedback settings for ``folder`` (created; refused when it is a file)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--feedback {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return Feedback(folder.resolve(), token)


def _link(recent: DecisionLog, data: bytes, decision_id: int | None) -> int | None:
    """The decision a mark on ``data`` concerns (see :meth:`scgan.record.store.Store.decision_for`); ServeError 422
    for a ``decision_id`` of another image or model; None, with a warning, while the store is away."""
    from scgan.record.store import UNAVAILABLE, error_line  # with --db only: the record extra is installed

    store = recent.recorder.store
    try:
        return store.decision_for(hashlib.sha256(data).hexdigest(), recent.recorder.version.sha256, decision_id)
    except ValueError as e:
        raise ServeError(422, f"{e}; nothing was stored") from None
    except UNAVAILABLE as e:
        log.warning("the results store %s cannot be reached (%s); the mark is kept in the feedback folder only",
                    store.name, error_line(e))
        return None


def _add_mark(recent: DecisionLog, line: dict[str, Any]) -> bool:
    """Record the mark ``line`` (as written in the feedback folder) in the store; False while the store is away."""
    from sqlalchemy.exc import IntegrityError

    from scgan.record.store import UNAVAILABLE, error_line

    store = recent.recorder.store
    mark = (line["label"], line["sha256"], recent.recorder.version.sha256)
    try:
        try:
            store.add_feedback(*mark, line.get("decision_id"), datetime.fromisoformat(line["time"]))
        except IntegrityError:  # its decision pruned since it was found: the mark is kept, unlinked
            store.add_feedback(*mark, None, datetime.fromisoformat(line["time"]))
        return True
    except UNAVAILABLE as e:
        log.warning("the results store %s cannot be reached (%s); the mark on %s is kept in the feedback folder only",
                    store.name, error_line(e), line["image"])
        return False


def build_feedback_router(detector: Detector, limits: Limits, feedback: Feedback, scoring: Scoring,
                          recent: DecisionLog | None = None) -> APIRouter:
    """``GET /feedback`` and ``POST /feedback?label=false_alarm|missed_defect[&decision_id=N]`` (one image, the token
    in a header); with ``recent`` (``scgan serve --db``), each mark is recorded in its store too, linked."""
    router = APIRouter()
    expected = feedback.token.encode()

    @router.get("/feedback")
    async def status() -> dict[str, Any]:
        return {"enabled": True, "labels": LABELS, "token_header": TOKEN_HEADER}

    @router.post("/feedback")
    async def mark(request: Request, label: str, decision_id: int | None = None) -> dict[str, Any]:
        given = request.headers.get(TOKEN_HEADER)
        if not given:
            raise ServeError(401, f"feedback needs the token in the {TOKEN_HEADER} header (printed when the server "
                                  f"started, or {TOKEN_ENV})")
        if not hmac.compare_digest(given.encode(), expected):
            raise ServeError(403, "the feedback token is wrong")
        if label not in LABELS:
            raise ServeError(422, f"unknown label {label!r}; valid labels: {', '.join(LABELS)}")
        files = await read_uploads(request, limits)
        if len(files) != 1:
            raise ServeError(422, "send one image per mark")
        name, data = files[0]
        try:
            check_file_name(name)
        except ValueError as e:
            raise ServeError(400, f"{e}; nothing was stored") from None
        if isinstance(data, ServeError):
            raise data
        result = (await scoring([(name, data)], overlays=False))[0]  # the server's own score, never the page's
        if "error" in result:
            raise ServeError(result.get("status", 422), result["error"])
        record = {"label": label, "score": result["score"], "score_name": result["score_name"],
                  "threshold": result["threshold"], "decision": result["decision"],
                  "model": detector.info.get("sha256"), "time": datetime.now(timezone.utc).isoformat()}
        loop = asyncio.get_running_loop()
        if recent is not None:  # the link is checked before anything is stored
            linked = await loop.run_in_executor(None, _link, recent, data, decision_id)
            if linked is not None:
                record["decision_id"] = linked
        line = await loop.run_in_executor(None, record_feedback, feedback.folder, name, data, record)
        in_store = recent is not None and await loop.run_in_executor(None, _add_mark, recent, line)
        return {"stored": line["image"], "sha256": line["sha256"], "label": label, "score": line["score"],
                "threshold": line["threshold"], "decision": line["decision"],
                "decision_id": line.get("decision_id"), "recorded": in_store}

    return router
