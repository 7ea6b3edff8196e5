"""The HTTP service: ``POST /predict``, ``GET /model``, ``GET /health`` and the page at ``GET /``.

:func:`create_app` composes it: the endpoints (:mod:`scgan.serve.routes`, scoring on a fixed pool of worker threads),
the exception handlers that make every refusal a JSON body ``{"error": "<one sentence>"}`` with a 4xx status (503
when busy or too slow), never a 500 or a dead worker (:mod:`scgan.serve.errors`), and the middlewares that guard a
request before a route sees it (:mod:`scgan.serve.guards`).

The app answers only to the host names it is given (a web page the operator visits cannot reach a loopback server
through DNS rebinding) and refuses requests a page of another origin made. How connections are accepted, timed
and limited is :mod:`scgan.serve.server`'s.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

try:
    from fastapi import FastAPI
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError("scgan serve needs FastAPI and uvicorn; install the serve extra: "
                      "pip install 'scgan[serve]'") from None

from scgan.serve.errors import EXCEPTION_HANDLERS, ServeError, error_response
from scgan.serve.feedback import Feedback, build_feedback_router
from scgan.serve.guards import ANY_HOST, ANY_IP, LOCAL_HOSTS, AccessLog, BodyLimit, HostGuard, Limits, UnexpectedErrors
from scgan.serve.routes import FIELD, Scoring, build_router

if TYPE_CHECKING:
    from scgan.inference.detector import Detector

# The service's vocabulary, importable from the module that composes it (scgan.serve.server takes it from here).
__all__ = ["ANY_HOST", "ANY_IP", "FIELD", "LOCAL_HOSTS", "Limits", "ServeError", "create_app", "error_response"]


def create_app(detector: Detector, limits: Limits | None = None,
               allowed_hosts: Sequence[str] = LOCAL_HOSTS, feedback: Feedback | None = None,
               recent=None) -> FastAPI:
    """The FastAPI application serving ``detector`` (a :class:`scgan.inference.detector.Detector`) within ``limits``,
    to requests whose Host header names one of ``allowed_hosts``; with ``feedback``, the page's feedback endpoints
    (:mod:`scgan.serve.feedback`)."""
    limits = limits or Limits()
    app = FastAPI(title="scgan", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)  # added last is outermost
    app.add_middleware(HostGuard, allowed=tuple(allowed_hosts))
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(AccessLog)  # outermost: logs every request, refused ones too
    scoring = Scoring(detector, limits)
    for kind, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(kind, handler)
    app.include_router(build_router(detector, limits, scoring))
    if feedback is not None:
        app.include_router(build_feedback_router(detector, limits, feedback, scoring, recent))
    if recent is not None:  # a scgan.serve.recent.DecisionLog: /predict's decisions recorded, /recent shows them
        from scgan.serve.recent import build_recent_router

        scoring.on_result = recent.record
        app.include_router(build_recent_router(recent))
    app.state.detector = detector
    app.state.limits = limits
    app.state.allowed_hosts = tuple(allowed_hosts)
    app.state.pool = scoring.pool
    return app
