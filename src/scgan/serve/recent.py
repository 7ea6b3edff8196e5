"""``scgan serve --db``: each decision of ``POST /predict`` recorded in a results store, and the recent ones shown.

:class:`DecisionLog` records a scored upload (its content's sha256, every score, the decision) and saves the overlay
of an anomalous one in the overlay folder; while the store cannot be reached, decisions wait in the folder's spool
(:mod:`scgan.record.spool`) and are written with the next one that goes through. :func:`build_recent_router` adds
``GET /recent`` (a page of the last N decisions with their overlays), ``GET /recent.json`` and
``GET /recent/overlay/{id}``, which serves only a PNG inside the overlay folder. The app's guards (host names,
origins, limits) apply to them as to every route.
"""
from __future__ import annotations

import html
import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from scgan.inference.predict import write_overlay
from scgan.record.queries import Filter, latest
from scgan.record.recorder import Recorder
from scgan.record.spool import Spool
from scgan.record.store import UNAVAILABLE, Decision, error_line, sha256_bytes
from scgan.serve.errors import ServeError
from scgan.utils.names import printable, safe_stem

log = logging.getLogger(__name__)

MAX_RECENT = 500


class DecisionLog:
    """Records the service's decisions in ``recorder``'s store; overlays of anomalous images in ``folder``."""

    def __init__(self, recorder: Recorder, folder: str | Path, recent: int = 50) -> None:
        self.recorder = recorder
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.recent = recent
        self.spool = Spool(self.folder)
        self._lock = threading.Lock()  # the scoring threads record one at a time (the spool is one file)

    def record(self, name: str, data: bytes, result) -> int | None:
        """Record one scored upload (called on a scoring thread): its decision's id, or None while the store is away
        (the decision waits in the spool)."""
        sha = sha256_bytes(data)
        overlay = None
        if result.anomalous:
            target = self.folder / f"{sha[:16]}_{safe_stem(Path(name).stem)}.png"
            overlay = write_overlay(target, result, Path(name))
        d = Decision.of_result(result, path=name, content_sha256=sha, size=len(data), source="serve",
                               overlay=overlay)
        with self._lock:
            store, version = self.recorder.store, self.recorder.version
            try:
                waiting = self.spool.read()
                if waiting:
                    store.add_many([w for w, _ in waiting], version)
                    self.spool.clear()
                    log.warning("the results store is back: %d decision(s) from the spool written", len(waiting))
                return store.add_one(d, version)
            except UNAVAILABLE as e:
                log.warning("the results store %s cannot be reached (%s); %s waits in %s", store.name, error_line(e),
                            printable(name), self.spool.path)
                try:
                    self.spool.append(d, version)
                except OSError as e2:  # the answer still goes out; the decision is lost, loudly
                    log.error("the decision on %s could not be recorded: %s", printable(name), e2.strerror or e2)
                return None

    def latest(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` decisions in the store (every source), each with the URL of its overlay where this
        service can show it."""
        try:
            rows = latest(self.recorder.store, Filter(), limit=n)
        except UNAVAILABLE as e:
            raise ServeError(503, f"the results store cannot be reached ({error_line(e)}); retry later") from None
        for r in rows:
            r["overlay_url"] = f"recent/overlay/{r['id']}" if self._overlay(r.get("overlay")) else None
            r.pop("overlay", None)  # a server path: not shown
        return rows

    def _overlay(self, path: str | None) -> Path | None:
        """``path`` when it is a PNG file inside the overlay folder, else None."""
        if not path:
            return None
        p = Path(path).resolve()
        return p if p.suffix == ".png" and p.is_relative_to(self.folder) and p.is_file() else None

    def overlay_of(self, decision_id: int) -> Path:
        """The overlay file of a decision, when it lies in this service's overlay folder (ServeError 404 else)."""
        try:
            found = latest(self.recorder.store, Filter(ids=(decision_id,)), limit=1)
        except UNAVAILABLE as e:
            raise ServeError(503, f"the results store cannot be reached ({error_line(e)}); retry later") from None
        p = self._overlay(found[0]["overlay"] if found else None)
        if p is None:
            raise ServeError(404, f"decision {decision_id} has no overlay this service can show")
        return p


def _row(r: dict[str, Any]) -> str:
    """One decision as a table row, every value escaped."""
    def cell(v: Any) -> str:
        return html.escape("" if v is None else str(v))

    score = "" if r["score"] is None else f"{r['score']:.4g}"
    overlay = f'<img src="{cell(r["overlay_url"])}" alt="overlay">' if r["overlay_url"] else ""
    cells = [cell(r["time"]), cell(r["decision"]), f"{cell(r['score_name'])} {score}", cell(r["model_sha256"][:12]),
             cell(r["source"]), cell(r["path"]), overlay]
    return f'<tr class="{cell(r["decision"])}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _page(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("time (UTC)", "decision", "score", "model", "source", "image",
                                             "overlay"))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>scgan: recent decisions</title><style>"
            "body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{padding:4px 8px;"
            "border-bottom:1px solid #ddd;text-align:left}.anomalous td:nth-child(2){color:#b00020;font-weight:600}"
            "img{max-height:96px}</style></head><body><h1>Recent decisions</h1><p><a href='./'>score images</a></p>"
            f"<table><tr>{head}</tr>{''.join(_row(r) for r in rows)}</table></body></html>")


def build_recent_router(decisions: DecisionLog) -> APIRouter:
    """``GET /recent`` (a page), ``GET /recent.json`` and ``GET /recent/overlay/{id}``; ``?n=`` up to 500."""
    router = APIRouter()

    def count(n: int | None) -> int:
        if n is not None and not 1 <= n <= MAX_RECENT:
            raise ServeError(422, f"n must be between 1 and {MAX_RECENT}, got {n}")
        return n or decisions.recent

    @router.get("/recent.json")
    def recent_json(n: int | None = None) -> dict[str, Any]:
        return {"decisions": decisions.latest(count(n))}

    @router.get("/recent", response_class=HTMLResponse)
    def recent_page(n: int | None = None) -> HTMLResponse:
        return HTMLResponse(_page(decisions.latest(count(n))))

    @router.get("/recent/overlay/{decision_id}")
    def overlay(decision_id: int) -> FileResponse:
        return FileResponse(decisions.overlay_of(decision_id), media_type="image/png")

    return router
