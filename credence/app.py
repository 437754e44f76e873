"""The HTTP service (`credence serve`): one FastAPI app, errors mapped to status codes in one place."""

from __future__ import annotations

import importlib
import importlib.util
import logging

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from provenance.errors import (
    InvalidVideo,
    KeyMissing,
    LedgerError,
    OutputNotWritable,
    ProvenanceError,
    SigningUnavailable,
    UnsupportedFormat,
)

from .deps import require_api_key
from .runtime import Runtime
from .settings import Settings

log = logging.getLogger("credence.app")

#: Route modules under `credence/routes`, included when present.
ROUTE_MODULES = ("moderation", "verify", "generate", "c2pa_resolution")

#: Status for each error type; a user's mistake is a 4xx, our own trouble a 503, never a bare 500.
STATUS_FOR: list[tuple[type[BaseException], int]] = [
    (UnsupportedFormat, 415),
    (InvalidVideo, 422),
    (KeyMissing, 503),
    (SigningUnavailable, 503),
    (LedgerError, 503),
    (OutputNotWritable, 503),
    (ProvenanceError, 422),
]


def _optional_errors() -> None:
    for module, name, code in (("moderation", "ModerationUnavailable", 503), ("moderation", "ModerationError", 422),
                               ("generator", "ModelLoadError", 503), ("generator", "InvalidRequest", 422),
                               ("generator", "GeneratorError", 503)):
        if importlib.util.find_spec(module) is None:
            continue
        kind = getattr(importlib.import_module(module), name, None)
        if isinstance(kind, type) and all(kind is not k for k, _ in STATUS_FOR):
            STATUS_FOR.append((kind, code))


def status_for(exc: BaseException) -> int | None:
    """The HTTP status of a known error type, or None for a bug."""
    for kind, code in STATUS_FOR:
        if isinstance(exc, kind):
            return code
    return None


def create_app(settings: Settings | None = None, *, auth: bool = True) -> FastAPI:
    """The app for `settings` (read from the environment when None)."""
    settings = settings or Settings.from_env()
    _optional_errors()
    app = FastAPI(title="Credence", version="0.1.0",
                  description="Moderated, watermarked, signed and recorded text-to-video; and verification.")
    app.state.runtime = Runtime(settings, actor="api")
    app.state.auth_disabled = not auth

    async def _known_errors(request: Request, exc: Exception) -> JSONResponse:
        code = status_for(exc)
        if code is None:
            log.exception("unhandled error on %s", request.url.path)
            return JSONResponse({"error": "internal_error", "detail": "an internal error occurred"}, 500)
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc).splitlines()[0] if str(exc) else ""},
                            code)

    # Known types get their own handler (answered in place, the connection stays healthy); the
    # catch-all only sees bugs, which Starlette logs and re-raises after the 500.
    for kind, _code in STATUS_FOR:
        app.add_exception_handler(kind, _known_errors)
    app.add_exception_handler(Exception, _known_errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid_request", "detail": jsonable_encoder(exc.errors())}, 422)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/v1/whoami")
    def whoami(key: str = Depends(require_api_key)) -> dict[str, str]:
        """Which API key the request authenticated with (a cheap auth check for clients)."""
        return {"key": key}

    for name in ROUTE_MODULES:
        module_name = f"credence.routes.{name}"
        if importlib.util.find_spec(module_name) is not None:
            app.include_router(importlib.import_module(module_name).router)
    return app
