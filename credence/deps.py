"""FastAPI dependencies: the runtime, settings, moderator, and API-key authentication."""

from __future__ import annotations

import hmac
import threading
from typing import Any

from fastapi import Depends, HTTPException, Request, status

from .runtime import Runtime
from .settings import Settings

_moderator_lock = threading.Lock()


def get_runtime(request: Request) -> Runtime:
    """The process-wide runtime the app was created with."""
    return request.app.state.runtime


def get_settings(runtime: Runtime = Depends(get_runtime)) -> Settings:
    """The settings the app was created with."""
    return runtime.settings


def get_moderator(request: Request) -> Any:
    """The prompt moderator, loaded once per process on first use (the sentence model is heavy)."""
    state = request.app.state
    if getattr(state, "moderator", None) is None:
        with _moderator_lock:
            if getattr(state, "moderator", None) is None:
                from moderation import Moderator, load_policy

                settings: Settings = state.runtime.settings
                state.moderator = Moderator.load(load_policy(settings.policy_path),
                                                 clip_checkpoint=settings.clip_model)
    return state.moderator


def require_api_key(request: Request, settings: Settings = Depends(get_settings)) -> str:
    """The caller's API key (from `Authorization: Bearer` or `X-API-Key`); 401 without a valid one.

    Returns a short, non-secret name of the key for the audit log.
    """
    if request.app.state.auth_disabled:
        return "anonymous"
    header = request.headers.get("authorization", "")
    supplied = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    for key in settings.api_keys:
        if supplied and hmac.compare_digest(supplied.encode(), key.encode()):
            return "key-" + key[:4] + "…"
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API key is required "
                        "(Authorization: Bearer KEY or X-API-Key: KEY)", headers={"WWW-Authenticate": "Bearer"})
