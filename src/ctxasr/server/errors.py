"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the server answers goes through here, so clients written for OpenAI's
API (which read ``error.message``) show ours, and no error leaks as a bare 500 or
FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ctxasr.server")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """An answer other than 2xx, with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        kind: str | None = None,  # OpenAI calls it "type"
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())  # always one line
        self.code = code
        self.param = param
        self.kind = kind or (INVALID_REQUEST if status < 500 else SERVER_ERROR)
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind,
                          "param": self.param, "code": self.code}}  # fmt: skip
        return JSONResponse(body, status_code=self.status, headers=self.headers)


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                 415: "unsupported_media_type"}  # fmt: skip


def install_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        status = err.status_code
        message = err.detail if isinstance(err.detail, str) else "request failed"
        return ApiError(status, message, code=_STATUS_CODES.get(status),
                        headers=err.headers).response()  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else "invalid request"
        return ApiError(400, message, code="invalid_value", param=where or None).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return ApiError(500, f"internal error ({type(err).__name__})",
                        code="internal_error").response()  # fmt: skip
