"""Every refusal is a ``RelayError``: a 4xx status and a message that names the reason.

Statuses the client relies on: 404 and 409 mean "not yet" (the relay has not seen the task, its
success, or the upload yet: ask again later); 400, 401, 403 and 413 are refusals that no retry changes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class RelayError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def not_yet(message: str) -> RelayError:
    return RelayError(404, message)


def envelope(message: str, data: Any = None) -> dict[str, Any]:
    return {"message": message, "data": data}


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path", "form")) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RelayError)
    async def relay_error(_: Request, exc: RelayError) -> JSONResponse:
        return JSONResponse(envelope(exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(f"{_field(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse(envelope(f"invalid request: {reasons}"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(envelope(str(exc.detail)), status_code=exc.status_code)
