"""Webhooks: tell a client that its job ended, signed so that it can trust the call.

`Credence-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the client's
webhook secret>`, the scheme Stripe made familiar: the timestamp inside the MAC lets the
receiver refuse replays. A delivery is retried with exponential backoff (1, 2, 4, 8, 16 s) until
the receiver answers 2xx; the outcome is recorded in the audit log. Delivery runs on a daemon
thread of the process that ended the job, so it never holds a worker's job slot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any

import httpx

from .runtime import Runtime

log = logging.getLogger("credence.webhooks")

BACKOFF_SECONDS = (1, 2, 4, 8, 16)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Credence-Signature` header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """What a receiver does: check the MAC in constant time and that the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def deliver(url: str, secret: str, payload: dict[str, Any], *, backoff: tuple[float, ...] = BACKOFF_SECONDS,
            timeout_s: float = 10.0) -> tuple[bool, int]:
    """POST `payload` to `url` until a 2xx answer; returns (delivered, attempts)."""
    body = json.dumps(payload, sort_keys=True).encode()
    attempts = 0
    for wait in (0.0, *backoff):
        time.sleep(wait)
        attempts += 1
        headers = {"content-type": "application/json", "Credence-Signature": signature(secret, int(time.time()), body)}
        try:
            answer = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
            if 200 <= answer.status_code < 300:
                return True, attempts
        except httpx.HTTPError as exc:
            log.info("webhook %s: %s", url, exc)
    return False, attempts


def deliver_async(runtime: Runtime, url: str, secret: str, payload: dict[str, Any], generation_id: str) -> None:
    """Deliver on a daemon thread and record the outcome in the audit log."""

    def run() -> None:
        delivered, attempts = deliver(url, secret, payload)
        try:
            with runtime.ledger.session() as s:
                runtime.ledger.audit(s, runtime.actor, "webhook.delivered" if delivered else "webhook.failed",
                                     generation_id, attempts=attempts, status=payload.get("status"))
        except Exception:  # the ledger is down: the delivery itself already happened or failed
            log.warning("could not record webhook outcome for %s", generation_id)

    threading.Thread(target=run, name=f"webhook-{generation_id[:8]}", daemon=True).start()
