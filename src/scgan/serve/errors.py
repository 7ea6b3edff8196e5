"""How the service refuses: :class:`ServeError` where a request is refused, one JSON shape for every refusal, and the
FastAPI exception handlers that give routing and validation errors that same shape."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ServeError(Exception):
    """A request refused with ``status`` and a one-sentence ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every refusal's shape: ``{"error": "<one sentence>"}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def serve_error(request: Request, e: ServeError) -> JSONResponse:
    """A :class:`ServeError` raised anywhere inside the app, as its JSON refusal."""
    return error_response(e.status, e.message)


async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    """Routing's refusals (no such path, a method the path does not take) as one sentence that says what exists."""
    message = {404: f"there is no {request.url.path} here; the endpoints are /, /predict, /model and /health",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
    return error_response(e.status_code, message)


async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    """A request whose parameters FastAPI cannot read, as a 422 that points to the page's example."""
    return error_response(422, "the request is not what this endpoint takes; see GET / for an example")


# What create_app registers, in this order (app.add_exception_handler for each).
EXCEPTION_HANDLERS: dict[type[Exception], Callable[..., Awaitable[JSONResponse]]] = {
    ServeError: serve_error,
    StarletteHTTPException: http_error,
    RequestValidationError: validation_error,
}
