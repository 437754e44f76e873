"""FastAPI dependencies: the runtime, settings, moderator, API-key authentication, and the gates
that bound how much heavy work one process takes on at once."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from provenance.ledger.models import SCOPES

from .auth import Caller, authenticate, register_bootstrap_keys
from .runtime import Runtime
from .settings import Settings

T = TypeVar("T")

# Declared for the OpenAPI document (either scheme works); checked by `require_api_key` itself so
# that a missing or wrong key is one 401 problem, whatever the scheme.
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key of this deployment.")
_bearer = HTTPBearer(auto_error=False, description="The same API key, as `Authorization: Bearer KEY`.")


def get_runtime(request: Request) -> Runtime:
    """The process-wide runtime the app was created with."""
    return request.app.state.runtime


def get_settings(runtime: Runtime = Depends(get_runtime)) -> Settings:
    """The settings the app was created with."""
    return runtime.settings


#: The caller when the server runs with `--no-auth` (local use): the operator, every scope.
ANONYMOUS = Caller(client_id="anonymous", client_name="anonymous", key_id="anonymous", scopes=frozenset(SCOPES),
                   operator=True)


def _supplied_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")


def require_api_key(request: Request, runtime: Runtime = Depends(get_runtime),
                    _header: str | None = Depends(_api_key_header),
                    _bearer_credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
    """The authenticated caller (`Authorization: Bearer KEY` or `X-API-Key: KEY`), counted against its quota.

    401 for no key, an unknown, revoked or expired key, or a disabled client; 429 with
    `Retry-After` past the client's request quota.
    """
    state = request.app.state
    if state.auth_disabled:
        return ANONYMOUS
    if not getattr(state, "bootstrapped", False):
        # The operator's CREDENCE_API_KEYS become ledger keys on first use (the ledger may be down at start).
        register_bootstrap_keys(runtime.ledger, runtime.settings.api_keys)
        state.bootstrapped = True
    caller = authenticate(runtime.ledger, _supplied_key(request))
    if caller is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API key is required "
                            "(Authorization: Bearer KEY or X-API-Key: KEY)", headers={"WWW-Authenticate": "Bearer"})
    retry_after = state.quotas.request(caller)
    if retry_after is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"request quota ({caller.rate_limit}) exceeded",
                            headers={"Retry-After": str(retry_after)})
    request.state.caller = caller
    return caller


def require_scope(scope: str) -> Callable[..., Caller]:
    """A dependency: the authenticated caller, 403 unless its key carries `scope`."""

    def dependency(caller: Caller = Depends(require_api_key)) -> Caller:
        if not caller.can(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key does not carry the {scope!r} scope")
        return caller

    dependency.__name__ = f"require_{scope}"
    return dependency


def visible_to(caller: Caller, client_id: str | None) -> bool:
    """Whether `caller` may see a record of `client_id` (its own, or everything with `audit`)."""
    return caller.can("audit") or caller.operator or (client_id is not None and client_id == caller.client_id)


# -- bounded concurrency -------------------------------------------------------------------------
class Busy(HTTPException):
    """Every slot and every place in the queue is taken: 503 with `Retry-After`, answered at once."""

    def __init__(self, gate: str, retry_after: int, detail: str | None = None) -> None:
        super().__init__(503, detail or f"the server is busy with other {gate} requests; retry later",
                         headers={"Retry-After": str(retry_after)})
        self.gate = gate


class WorkTimeout(HTTPException):
    """The work ran past its limit. The answer is 503 now; the thread finishes in the background and
    keeps its slot until it does, so a pile of slow requests cannot exceed the concurrency limit."""

    def __init__(self, gate: str, seconds: float, retry_after: int) -> None:
        super().__init__(503, f"the {gate} took longer than the {seconds:g} s limit; retry later",
                         headers={"Retry-After": str(retry_after)})
        self.gate = gate


class Gate:
    """At most `running` jobs of one kind at once in this process, and at most `waiting` more queued.

    A request is admitted (or refused with `Busy`) before it costs anything, so an upload is not
    read while the queue is full. Admitted work runs on the gate's own threads (`running` of them,
    never more); a job that has not started within `queue_timeout` is dropped with `Busy`, and one
    that runs past `run_timeout` is answered with `WorkTimeout` while it finishes in the background.
    """

    def __init__(self, name: str, running: int, waiting: int, *, queue_timeout: float, run_timeout: float) -> None:
        if running < 1 or waiting < 0:
            raise ValueError(f"gate {name!r}: running must be >= 1 and waiting >= 0")
        self.name = name
        self.running = running
        self.capacity = running + waiting
        self.queue_timeout = queue_timeout
        self.run_timeout = run_timeout
        self._executor = ThreadPoolExecutor(max_workers=running, thread_name_prefix=f"credence-{name}")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished (running, queued, or still receiving their body)."""
        return self._admitted

    def retry_after(self) -> int:
        """A hint for clients, in whole seconds: about one queue wait."""
        return max(1, math.ceil(min(self.queue_timeout, 30.0)))

    def admit(self) -> Ticket:
        """A place in the queue, or `Busy` at once when none is left. Use as a context manager."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise Busy(self.name, self.retry_after())
            self._admitted += 1
        return Ticket(self)

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        """Stop taking jobs; running ones finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class Ticket:
    """One admitted request: runs at most one job on its gate, and leaves the gate exactly once."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._handed_over = False  # True once a submitted job owns the place (it leaves when done)
        self._left = False

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_exc: object) -> None:
        if not self._handed_over:
            self._leave()

    def _leave(self) -> None:
        if not self._left:
            self._left = True
            self.gate._leave()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on one of the gate's threads; its exceptions propagate as raised."""
        gate = self.gate
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def job() -> T:
            try:
                loop.call_soon_threadsafe(started.set)
            except RuntimeError:  # the server's loop is gone: nobody waits for this answer
                pass
            return fn(*args)

        future: Future[T] = gate._executor.submit(job)
        self._handed_over = True
        future.add_done_callback(lambda _f: self._leave())
        try:
            try:
                await asyncio.wait_for(started.wait(), gate.queue_timeout)
            except TimeoutError:
                if future.cancel():
                    raise Busy(gate.name, gate.retry_after(),
                               f"no {gate.name} slot freed within {gate.queue_timeout:g} s; retry later") from None
            result = asyncio.wrap_future(future)
            # Read a late outcome so that an abandoned job's error is not reported as never retrieved.
            result.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                return await asyncio.wait_for(asyncio.shield(result), gate.run_timeout)
            except TimeoutError:
                raise WorkTimeout(gate.name, gate.run_timeout, gate.retry_after()) from None
        except asyncio.CancelledError:
            future.cancel()  # the client went away before its job started: drop it
            raise


def gate(name: str) -> Callable[[Request], Gate]:
    """A dependency giving the app's gate called `name` (`verify`, `moderation` or `generation`)."""

    def dependency(request: Request) -> Gate:
        return request.app.state.gates[name]

    dependency.__name__ = f"{name}_gate"
    return dependency


def make_gates(settings: Settings) -> dict[str, Gate]:
    """The gates of one app: verification (also `/matches/byContent`), moderation and generation."""
    return {
        "verify": Gate("verify", settings.verify_concurrency, settings.verify_queue,
                       queue_timeout=settings.queue_timeout, run_timeout=settings.verify_timeout),
        "moderation": Gate("moderation", settings.moderation_concurrency, settings.moderation_queue,
                           queue_timeout=settings.queue_timeout, run_timeout=settings.moderation_timeout),
        # One generation at a time: the model holds the accelerator (or every CPU core).
        "generation": Gate("generation", 1, settings.generation_queue,
                           queue_timeout=settings.queue_timeout, run_timeout=settings.generation_timeout),
    }
