"""Per-client quotas: requests per window on every authenticated route, generations per day.

Counted with `limits` (moving window for requests, fixed daily window for generations) in the
Redis of `CREDENCE_BROKER_URL` when it is set, so that every API process shares one count, and
in this process's memory otherwise. A quota store that cannot be reached refuses (503), it does
not wave requests through.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from provenance.errors import ProvenanceError

from .auth import Caller
from .settings import Settings


class QuotaUnavailable(ProvenanceError):
    """The quota counters (Redis) cannot be reached; the request is refused rather than uncounted."""


class Quotas:
    """The request and daily-generation counters of every client."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.broker_url or "memory://"
        self.storage = storage_from_string(uri)
        self.requests = MovingWindowRateLimiter(self.storage)
        self.daily = FixedWindowRateLimiter(self.storage)
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, text: str) -> RateLimitItem:
        if text not in self._items:
            self._items[text] = parse(text)
        return self._items[text]

    def _hit(self, limiter: MovingWindowRateLimiter | FixedWindowRateLimiter, item: RateLimitItem,
             key: str) -> int | None:
        try:
            if limiter.hit(item, "credence", key):
                return None
            reset = limiter.get_window_stats(item, "credence", key).reset_time
        except Exception as exc:  # redis errors come in several types; any of them means "cannot count"
            raise QuotaUnavailable(f"the quota store cannot be reached ({type(exc).__name__})") from None
        return max(1, math.ceil(reset - time.time()))

    def request(self, caller: Caller) -> int | None:
        """Count one request; None when allowed, else the seconds until the window allows another."""
        if not caller.rate_limit:
            return None
        return self._hit(self.requests, self._item(caller.rate_limit), f"req:{caller.client_id}")

    def generation(self, caller: Caller) -> int | None:
        """Count one generation against the client's daily quota; None, or seconds until it resets."""
        if caller.daily_generations is None:
            return None
        if caller.daily_generations <= 0:
            return 86_400
        return self._hit(self.daily, self._item(f"{caller.daily_generations}/day"), f"gen:{caller.client_id}")
