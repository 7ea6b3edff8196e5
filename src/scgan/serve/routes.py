"""The service's endpoints: ``GET /`` (the page), ``GET /health``, ``GET /model`` and ``POST /predict``, as the
:class:`~fastapi.APIRouter` that :func:`build_router` makes for one detector within its :class:`Limits`.

Scoring runs on a fixed pool of worker threads (``Limits.workers``, :class:`Scoring`); at most ``Limits.queue`` more
requests wait for one, and any beyond that are turned away at once with 503, so a burst never starts a thread per
request or grows memory without bound. A refusal is a :class:`ServeError`, answered by the app's exception handlers.
"""
from __future__ import annotations

import asyncio
import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from scgan.serve.errors import ServeError
from scgan.serve.guards import Limits
from scgan.utils.names import printable

if TYPE_CHECKING:
    from PIL import Image

    from scgan.inference.detector import Detector

FIELD = "file"  # the multipart field that carries images (repeat it for several)

Upload = tuple[str, bytes | ServeError]  # a file's shown name, and its bytes or why it cannot be scored


def check_header(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse what is not an image, or is too large, from the header alone (nothing is decoded yet)."""
    from PIL import Image, UnidentifiedImageError

    from scgan.data.io import FORMAT_NAMES, open_image

    if not data:
        raise ServeError(400, f"{name} is empty; choose an image file")
    try:
        with open_image(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise ServeError(413, f"{name} has more pixels than this server accepts ({max_pixels:,}); downscale it "
                              "first") from None
    except UnidentifiedImageError:
        raise ServeError(415, f"{name} is not an image this server reads ({FORMAT_NAMES})") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for a damaged header
        raise ServeError(422, f"{name} has a damaged image header; re-save or replace the file") from None
    if w * h > max_pixels:
        raise ServeError(413, f"{name} is {w} x {h} pixels, more than the {max_pixels:,} this server accepts; "
                              "downscale it first")


def _png_data_url(image: Image.Image) -> str:
    """``image`` as a ``data:image/png;base64,...`` URL (the page shows it as it is)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # as save_png: 3.8 ms instead of 12 ms, the file ~10% larger
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


async def read_uploads(request: Request, limits: Limits) -> list[Upload]:
    """The images of a multipart request's ``FIELD``, each checked from its header: a file that fails is kept as its
    ServeError (the others are still scored); ServeError when the request itself is not what /predict takes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ServeError(415, f"send images as multipart/form-data in the field '{FIELD}' "
                              f"(got {kind or 'no content type'})")
    try:
        # a part may be as large as the whole body: an upload over the limit is BodyLimit's 413, never the parser's 400
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files,
                                  max_part_size=limits.max_upload_bytes)
    except StarletteHTTPException as e:
        raise ServeError(400 if e.status_code != 413 else 413,
                         f"the form was refused: {str(e.detail).rstrip('.')}; send at most {limits.max_files} "
                         "images") from None
    uploads = [v for v in form.getlist(FIELD) if isinstance(v, UploadFile)]
    if not uploads:
        fields = ", ".join(sorted(set(form.keys()))) or "none"
        raise ServeError(422, f"no image in the form field '{FIELD}' (fields sent: {fields}); "
                              f"send each image as a file in '{FIELD}'")
    files: list[Upload] = []
    for i, up in enumerate(uploads):
        name = printable(up.filename or f"image {i + 1}")[:200]
        data = await up.read()
        try:
            check_header(data, name, limits.max_pixels)
        except ServeError as e:  # this file only: the others are still scored
            data = e
        files.append((name, data))
    await form.close()
    return files


class Scoring:
    """The worker threads that score uploads for ``detector``, and admission to them: ``limits.workers`` requests
    score, ``limits.queue`` more wait, any beyond are refused with 503 at once."""

    def __init__(self, detector: Detector, limits: Limits) -> None:
        self.detector = detector
        self.limits = limits
        self.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="scgan-score")
        self.admitted = threading.BoundedSemaphore(limits.workers + limits.queue)
        self.threshold_normalized = detector.threshold_normalized
        # (name, bytes, Result) of each image /predict scored -> its decision's id or None (scgan.serve.recent)
        self.on_result = None

    def score(self, files: list[Upload], overlays: bool, record: bool = False) -> list[dict[str, Any]]:
        """Per file a result, or {"filename", "error", "status"} for one that cannot be scored (the others are
        scored: one policy with ``scgan predict``); ServeError only when no file could be scored."""
        readable = [(i, data) for i, (_, data) in enumerate(files) if not isinstance(data, ServeError)]
        outcomes = {readable[o.index][0]: o for o in self.detector.iter_predict([data for _, data in readable])}
        for i, o in list(outcomes.items()):
            if o.result is None:
                files[i] = (files[i][0], ServeError(422, f"{files[i][0]} is truncated or damaged and cannot be "
                                                         "decoded; replace the file"))
        if all(isinstance(data, ServeError) for _, data in files):
            raise next(data for _, data in files)
        out = []
        for i, (name, data) in enumerate(files):
            if isinstance(data, ServeError):
                out.append({"filename": name, "error": data.message, "status": data.status})
                continue
            o = outcomes[i]
            entry = {"filename": name, **o.result.to_dict(), "threshold_normalized": self.threshold_normalized}
            if record and self.on_result is not None:  # its id in the store, for a mark on it (scgan.serve.feedback)
                decision_id = self.on_result(name, data, o.result)
                if decision_id is not None:
                    entry["decision_id"] = decision_id
            if overlays:
                entry["overlay"] = _png_data_url(o.result.overlay())
            out.append(entry)
        return out

    async def __call__(self, files: list[Upload], overlays: bool, record: bool = False) -> list[dict[str, Any]]:
        """:meth:`score` on a worker thread, or ServeError 503 when workers and queue are full or it takes longer
        than ``limits.timeout_s``."""
        limits = self.limits
        if not self.admitted.acquire(blocking=False):
            raise ServeError(503, f"the server is busy ({limits.workers + limits.queue} requests in progress); "
                                  "retry in a moment")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, self.score, files, overlays, record)
        future.add_done_callback(lambda _: self.admitted.release())  # released when the work ends, not at the timeout
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            raise ServeError(503, f"scoring took longer than {limits.timeout_s:g} s; retry with fewer or smaller "
                                  "images") from None


def build_router(detector: Detector, limits: Limits, scoring: Scoring | None = None) -> APIRouter:
    """The endpoints serving ``detector`` within ``limits``; ``scoring`` (made here when None) runs /predict's work."""
    scoring = scoring or Scoring(detector, limits)
    # which file is served: its sha256 as loaded (scgan.inference.detector.load_detector), whatever is on disk now
    model_info = {**detector.describe(), "sha256": detector.info.get("sha256")}
    page = resources.files("scgan.serve").joinpath("page.html").read_text(encoding="utf-8")
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @router.get("/model")
    async def model() -> dict[str, Any]:
        return {**model_info, "limits": asdict(limits)}

    @router.post("/predict")
    async def predict(request: Request, overlay: bool = True) -> dict[str, Any]:
        files = await read_uploads(request, limits)
        results = await scoring(files, overlay, record=True)
        return {"score_name": detector.default_score, "results": results}

    return router
