"""The error policy of the HTTP service: which status each error is, and what a client may read.

Every 4xx and 5xx is an RFC 9457 problem (`application/problem+json`: type, title, status,
detail, and `errors` naming each bad field of an invalid request). What a body says is scrubbed
here, once: no secret, database URL or driver message, and no server path reaches a client; our
own trouble (ledger, keys, models) is a 503 with a fixed sentence, and the log has the rest.
`install_error_handlers` puts the policy on an app; `public_detail` is what any other part (the
readiness checks) may say about an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from detector.resolution import ResolutionError
from generator.errors import GenerationFailed, GeneratorError, InvalidRequest, ModelLoadError
from moderation.errors import InvalidPrompt, ModerationError, ModerationUnavailable
from provenance.errors import (
    InvalidVideo,
    KeyMissing,
    LedgerError,
    OutputNotWritable,
    ProvenanceError,
    SigningUnavailable,
    UnsupportedFormat,
    VideoTooLarge,
)
from provenance.ledger import StateConflict

from .deps import Busy, WorkTimeout
from .quotas import QuotaUnavailable
from .settings import Settings

log = logging.getLogger("credence.app")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="The field's name, dotted for nested fields (`prompts.0`, `file`).")
    location: str = Field(description="Where the field is: `body`, `query`, `path` or `header`.")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str = Field(description="A URI reference naming the kind of problem (`about:blank` for a plain status).")
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, without server paths or secrets.")
    errors: list[FieldError] = Field(default_factory=list,
                                     description="For validation problems: each bad field, by name.")


#: Status for each error type, most specific first; a user's mistake is a 4xx, our own trouble a
#: 503, never a bare 500 (that is left to bugs).
STATUS_FOR: list[tuple[type[BaseException], int]] = [
    (UnsupportedFormat, 415),
    (VideoTooLarge, 413),  # over the decoding budget (a subclass of InvalidVideo: first)
    (InvalidVideo, 422),
    (ResolutionError, 400),
    (KeyMissing, 503),
    (SigningUnavailable, 503),
    (LedgerError, 503),
    (OutputNotWritable, 503),
    (QuotaUnavailable, 503),
    (StateConflict, 409),
    (ProvenanceError, 422),
    (InvalidPrompt, 422),
    (ModerationUnavailable, 503),
    (ModerationError, 503),
    (InvalidRequest, 422),
    (ModelLoadError, 503),
    (GenerationFailed, 503),
    (GeneratorError, 503),
    (SQLAlchemyError, 503),
    (ClientDisconnect, 400),
    (OSError, 503),
]

#: What a client is told about our own trouble: a fixed sentence per kind (the log has the error).
PUBLIC_5XX: list[tuple[type[BaseException], str]] = [
    (KeyMissing, "a signing or watermark key is not available on this server"),
    (SigningUnavailable, "C2PA signing is not available on this server"),
    (LedgerError, "the ledger is unavailable"),
    (SQLAlchemyError, "the ledger is unavailable"),
    (OutputNotWritable, "the server cannot write its output"),
    (QuotaUnavailable, "the quota store is unavailable"),
    (ModerationError, "the moderator cannot run on this server"),
    (ModelLoadError, "the generation model cannot be loaded on this server"),
    (GeneratorError, "the generation failed on this server"),
    (OSError, "the server ran out of a resource (disk, files) or could not write"),
]

#: Kinds that get their own problem type; everything else is `about:blank` with the status's title.
_SLUG = re.compile(r"(?<!^)(?=[A-Z])")


def status_for(exc: BaseException) -> int | None:
    """The HTTP status of a known error type, or None for a bug."""
    for kind, code in STATUS_FOR:
        if isinstance(exc, kind):
            return code
    return None


# -- scrubbing ----------------------------------------------------------------------------------
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")
_UPLOAD = re.compile(r"(?:/[^\s'\"<>:]*)?credence-upload-[^\s'\"<>:]*")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\[^\s'\"<>]*")
# An absolute path: a slash that does not follow a word, a dot or another slash ("multipart/form-data"
# and "4/3" stay), then at least one segment. The API's own routes are not server paths.
_PATH = re.compile(r"(?<![\w./\-])/(?!(?:v1|matches|manifests|services|healthz|readyz)\b)[^\s'\"<>()\[\]{},;:]+")


def _secrets_of(settings: Settings | None) -> list[str]:
    """Words that must never reach a client: the database URL's parts, the API keys, our folders."""
    if settings is None:
        return []
    words: list[str] = list(settings.api_keys)
    words += [str(settings.home)]
    try:
        url = make_url(settings.database_url)
    except (ArgumentError, ValueError):
        words.append(settings.database_url)
    else:
        words += [str(url), url.render_as_string(hide_password=False)]
        words += [str(part) for part in (url.password, url.username, url.host, url.database) if part]
        if url.port:
            words.append(str(url.port))
        words += [url.drivername, url.get_backend_name(), url.get_driver_name()]
    return sorted({w for w in words if w and len(w) >= 2}, key=len, reverse=True)


def scrub(text: str, settings: Settings | None = None) -> str:
    """`text` without URLs, server paths, upload names or the deployment's secrets."""
    text = _URL.sub("<url>", text)
    text = _UPLOAD.sub("the upload", text)
    text = _WINDOWS_PATH.sub("<path>", text)
    for word in _secrets_of(settings):
        text = re.sub(rf"(?<![\w]){re.escape(word)}(?![\w])", "<redacted>", text)
    text = _PATH.sub("<path>", text)
    return text


def public_detail(exc: BaseException, settings: Settings | None = None) -> str:
    """What a client may read about `exc`: a fixed sentence for our trouble, the scrubbed first line for theirs."""
    code = status_for(exc)
    if code is None:
        return "an internal error occurred"
    if code >= 500:
        for kind, sentence in PUBLIC_5XX:
            if isinstance(exc, kind):
                return sentence
        return HTTPStatus(code).phrase.lower()
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return scrub(first, settings)[:1000]


# -- rendering ----------------------------------------------------------------------------------
def problem(status: int, detail: str, *, kind: str | None = None, headers: dict[str, str] | None = None,
            **extensions: Any) -> JSONResponse:
    """An `application/problem+json` answer."""
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {"type": f"urn:credence:problem:{kind}" if kind else "about:blank", "title": title, "status": status,
            "detail": detail, **extensions}
    return JSONResponse(body, status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _kind(exc: BaseException) -> str:
    return _SLUG.sub("-", type(exc).__name__).lower()


def _field_errors(errors: Any, settings: Settings | None) -> list[dict[str, str]]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        location = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
        field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "body")
        message = str(err.get("msg", "invalid"))
        out.append(FieldError(field=scrub(field, settings)[:200], location=location,
                              message=scrub(message, settings)[:500]).model_dump())
    return out


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path
    for regex, route_methods in request.app.state.route_table:
        if regex.match(path):
            methods |= route_methods
    return sorted(methods)


def install_error_handlers(app: FastAPI, settings: Settings, *, bad_request_tags: Iterable[str] = ()) -> None:
    """Every error the app answers goes through here, as problem details.

    An invalid request is a 422, or a 400 on the routes tagged with one of `bad_request_tags`
    (the C2PA resolution API answers so, as its specification does).
    """
    tags_400 = frozenset(bad_request_tags)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        if exc.status_code == 408:
            headers["Connection"] = "close"
        kind = "busy" if isinstance(exc, Busy) else "timeout" if isinstance(exc, WorkTimeout) else None
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, scrub(detail, settings)[:1000], kind=kind, headers=headers or None)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        route = request.scope.get("route")
        status = 400 if tags_400 & set(getattr(route, "tags", None) or []) else 422
        if any(err.get("type") == "json_invalid" for err in errors):
            return problem(400, "the body is not valid JSON", kind="invalid-json",
                           errors=_field_errors(errors, settings))
        fields = _field_errors(errors, settings)
        names = ", ".join(sorted({f["field"] for f in fields})) or "the request"
        return problem(status, f"invalid {names}: " + "; ".join(f["message"] for f in fields)[:800],
                       kind="invalid-request", errors=fields)

    async def known_error(request: Request, exc: Exception) -> JSONResponse:
        code = status_for(exc) or 500
        if code >= 500:
            log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        headers = {"Retry-After": "5"} if code == 503 else None
        return problem(code, public_detail(exc, settings), kind=_kind(exc), headers=headers)

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback when this returns (ServerErrorMiddleware re-raises after it).
        return problem(500, "an internal error occurred", kind="internal-error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    # Known types get their own handler, answered in place (the connection stays healthy); the
    # catch-all only sees bugs.
    for kind, _code in STATUS_FOR:
        app.add_exception_handler(kind, known_error)
    app.add_exception_handler(Exception, bug)
