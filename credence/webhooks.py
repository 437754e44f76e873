"""Webhooks: tell a client that its job ended, signed so that it can trust the call, sent from the outbox.

`Credence-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the client's
webhook secret>`, the scheme Stripe made familiar: the timestamp inside the MAC lets the
receiver refuse replays.

What is owed is written to the ledger's `webhook_outbox` in the transaction that moved the
generation (`provenance.ledger.outbox`), so a crash loses no call. A `Deliverer` thread (in the
API process and in each worker) takes due rows under a lease, resolves the URL's host once,
refuses loopback, private, link-local and other internal addresses unless an operator allowed
them for the client (`credence.netguard`), and POSTs to the address it checked (DNS rebinding
cannot redirect it). A 2xx answer ends the row; otherwise it is tried again after 1, 2, 4, 8 and
16 s, then given up. Each outcome is in the audit log (`webhook.delivered`, `webhook.failed`).
A delivery in flight when its process dies is sent again by another deliverer once its lease
runs out (at once when the dead process was on this host): at least once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import weakref
from typing import Any

import httpx

from provenance.ledger import Ledger, states
from provenance.ledger.outbox import Delivery, claim_due, mark_delivered, mark_failed, mark_retry

from .netguard import Resolver, WebhookURLRefused, resolve_target

log = logging.getLogger("credence.webhooks")

#: Waits between tries: a call is tried 1 + len(BACKOFF_SECONDS) times.
BACKOFF_SECONDS: tuple[float, ...] = (1, 2, 4, 8, 16)
#: A deliverer's hold on a claimed row; past it another deliverer may send the row again.
LEASE_SECONDS = 60.0
TIMEOUT_SECONDS = 10.0


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


def send_once(url: str, secret: str, payload: dict[str, Any], *, allow_private: bool = False,
              timeout_s: float = TIMEOUT_SECONDS, resolver: Resolver = socket.getaddrinfo) -> int:
    """One signed POST of `payload` to the checked address of `url`; returns the HTTP status.

    `WebhookURLRefused` when the host resolves to an address the client may not reach;
    `httpx.HTTPError` when the call fails. Redirects are not followed (a 3xx is a failed try)
    and proxies from the environment are not used: the request goes to the checked address.
    """
    target = resolve_target(url, allow_private=allow_private, resolver=resolver)
    body = json.dumps(payload, sort_keys=True).encode()
    headers = {"content-type": "application/json", "Host": target.host_header,
               "Credence-Signature": signature(secret, int(time.time()), body)}
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("POST", target.url, content=body, headers=headers, extensions=extensions)
        return client.send(request).status_code


class Deliverer:
    """Sends the outbox's due rows, on one daemon thread (`start`), or one pass at a time (`run_once`)."""

    def __init__(self, ledger: Ledger, *, actor: str, owner: str | None = None, poll_seconds: float = 1.0,
                 lease_seconds: float = LEASE_SECONDS, backoff: tuple[float, ...] = BACKOFF_SECONDS,
                 timeout_s: float = TIMEOUT_SECONDS, resolver: Resolver = socket.getaddrinfo) -> None:
        self.ledger = ledger
        self.actor = actor
        self.owner = owner or states.new_lease_owner()
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.backoff = backoff
        self.timeout_s = timeout_s
        self.resolver = resolver
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ----------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim the due rows and try each once; returns how many were tried."""
        with self.ledger.session() as s:
            due = claim_due(s, self.owner, self.lease_seconds,
                            owner_is_dead=lambda owner: states.owner_is_dead(owner, this_owner=self.owner))
        for delivery in due:
            self._try(delivery)
        return len(due)

    def _try(self, delivery: Delivery) -> None:
        error: str | None = None
        final = False
        if not delivery.url or not delivery.secret:
            error, final = "the client no longer has a webhook", True
        else:
            try:
                status = send_once(delivery.url, delivery.secret, delivery.payload,
                                   allow_private=delivery.allow_private, timeout_s=self.timeout_s,
                                   resolver=self.resolver)
                if not 200 <= status < 300:
                    error = f"the receiver answered {status}"
            except WebhookURLRefused as exc:
                error, final = str(exc), True  # the address is the problem: trying again would not help
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        spent = delivery.attempts > len(self.backoff)
        try:
            with self.ledger.session() as s:
                if error is None:
                    if mark_delivered(s, delivery.id, self.owner):
                        self._audit(s, "webhook.delivered", delivery)
                elif final or spent:
                    if mark_failed(s, delivery.id, self.owner, error):
                        self._audit(s, "webhook.failed", delivery, error=error)
                else:
                    mark_retry(s, delivery.id, self.owner, self.backoff[delivery.attempts - 1], error)
        except Exception:  # the ledger is down: the lease runs out and the row is tried again
            log.warning("could not record the webhook outcome of outbox row %s", delivery.id)
        if error is not None:
            log.info("webhook for %s (try %s): %s", delivery.generation_id, delivery.attempts, error)

    def _audit(self, session: Any, action: str, delivery: Delivery, **details: Any) -> None:
        self.ledger.audit(session, self.actor, action, delivery.generation_id, client_id=delivery.client_id,
                          attempts=delivery.attempts, status=delivery.payload.get("status"), **details)

    # -- the thread --------------------------------------------------------------------------------
    def start(self) -> Deliverer:
        """Run passes on a daemon thread until `stop`: every `poll_seconds`, or at once after `kick`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="webhook-deliverer", daemon=True)
            self._thread.start()
            _running.add(self)
        return self

    def kick(self) -> None:
        """Look at the outbox now (a row was just written)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after its current pass."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        _running.discard(self)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                tried = self.run_once()
            except Exception as exc:  # the ledger is down or not migrated yet: try again later
                log.warning("webhook deliverer: %s", type(exc).__name__)
                tried = 0
            if not tried:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()


_running: weakref.WeakSet[Deliverer] = weakref.WeakSet()


def kick_all() -> None:
    """Wake every deliverer of this process: a state change just owed a call."""
    for deliverer in list(_running):
        deliverer.kick()


__all__ = ["BACKOFF_SECONDS", "Deliverer", "kick_all", "send_once", "signature", "verify_signature"]
