"""The console's sign-in throttle: failed sign-ins counted per client address and per key prefix.

Why: without it one address tried about 500 wrong keys a second (issue 21). Keys are 256 random
bits, so guessing one is hopeless anyway; the throttle keeps a flood from filling the audit log
and the ledger's connections, and stops a script that sprays leaked-looking keys. Each failure
counts once for its address and once for the key's public prefix (`cred_<prefix>_...`), in a
moving window of `CREDENCE_SIGNIN_FAILURES` (default 10/minute); past it, sign-in from that
address, or with that prefix, answers 429 with `Retry-After` before any key is checked.
Successful sign-ins are not counted.

Counted with `limits` in the Redis of `CREDENCE_BROKER_URL` when set (every replica shares one
count) and in this process otherwise. A counter store that cannot be reached refuses the sign-in
(503): it does not wave guesses through uncounted.

The client address is the connection's peer. Behind a reverse proxy every sign-in would share
the proxy's address (one attacker would lock everybody out), so with
`CREDENCE_TRUST_FORWARDED_FOR=1` the address is the last `X-Forwarded-For` entry: the one the
operator's proxy appended, which a client cannot forge. Never set it without such a proxy.
"""

from __future__ import annotations

import ipaddress
import math
import time
from typing import Any

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from provenance.errors import ProvenanceError

from .settings import Settings

NAMESPACE = "credence-signin"
#: A refusal by the throttle is written to the audit log at most this often per address (a flood of
#: refused attempts must not become a flood of audit rows).
REFUSAL_AUDIT_RATE = "1/minute"


class ThrottleUnavailable(ProvenanceError):
    """The sign-in counters (Redis) cannot be reached: sign-in is refused rather than uncounted."""


def client_address(request: Any, settings: Settings) -> str:
    """The address a request came from, as the throttle and the audit log name it (see the module)."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip() if forwarded else ""
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass  # no (or a malformed) header: the peer, as without the setting
    client = getattr(request, "client", None)
    return client.host if client is not None and client.host else "unknown"


class SignInThrottle:
    """Counters of failed sign-ins, by address and by key prefix."""

    def __init__(self, settings: Settings) -> None:
        self.storage = self._guard("reach its counters", storage_from_string, settings.broker_url or "memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.item = parse(settings.signin_failures)
        self.refusal_item = parse(REFUSAL_AUDIT_RATE)

    @staticmethod
    def _buckets(address: str, prefix: str | None) -> list[str]:
        return [f"address:{address}"] + ([f"prefix:{prefix}"] if prefix else [])

    @staticmethod
    def _guard(what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # redis errors come in several types; any of them means "cannot count"
            raise ThrottleUnavailable(f"the sign-in throttle cannot {what} ({type(exc).__name__})") from None

    def retry_after(self, address: str, prefix: str | None) -> int | None:
        """None when a sign-in may be tried; else the seconds until the address and prefix may try again."""
        waits = []
        for bucket in self._buckets(address, prefix):
            if not self._guard("read its counters", self.limiter.test, self.item, NAMESPACE, bucket):
                reset = self._guard("read its counters", self.limiter.get_window_stats, self.item, NAMESPACE,
                                    bucket).reset_time
                waits.append(max(1, math.ceil(reset - time.time())))
        return max(waits) if waits else None

    def failed(self, address: str, prefix: str | None) -> None:
        """Count one failed sign-in against the address and the prefix."""
        for bucket in self._buckets(address, prefix):
            self._guard("count a failure", self.limiter.hit, self.item, NAMESPACE, bucket)

    def first_refusal(self, address: str) -> bool:
        """Whether this refusal is the first for `address` in its audit window (then it is audited)."""
        return bool(self._guard("count a refusal", self.limiter.hit, self.refusal_item, NAMESPACE,
                                f"refused:{address}"))


__all__ = ["SignInThrottle", "ThrottleUnavailable", "client_address"]
