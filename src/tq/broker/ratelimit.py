"""Rate limits per API key: a token bucket per (key, permission class), refilled at the
class's rate up to its burst. A key's own limits override ``auth.rate_limits``; a class with
no limit anywhere is unlimited. Time is an argument (monotonic seconds), so tests drive it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tq.broker.access import Permission, Principal
from tq.core.layout import RateLimit
from tq.errors import RateLimitedError


class RateLimiter:
    def __init__(self, defaults: Mapping[str, RateLimit | None]) -> None:
        self._defaults = dict(defaults)
        #: (key id, class) -> [tokens, when last refilled]. Bounded by keys x classes.
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def limit_of(self, principal: Principal, permission: Permission) -> RateLimit | None:
        own = principal.rate_limits or {}
        return own.get(permission) or self._defaults.get(permission)

    def take(self, principal: Principal, permission: Permission, now: float) -> None:
        """Spend one token of ``principal``'s bucket for ``permission``, or raise
        RateLimitedError with the seconds until one is there."""
        if principal.key_id is None:
            return  # auth disabled: nobody to limit
        limit = self.limit_of(principal, permission)
        if limit is None:
            return
        slot = (principal.key_id, permission.value)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = [float(limit.burst), now]
        tokens = min(float(limit.burst), bucket[0] + (now - bucket[1]) * limit.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        retry_after = (1.0 - tokens) / limit.rate
        raise RateLimitedError(
            f"{principal} is over its {permission} rate limit of {limit.rate:g}/s "
            f"(burst {limit.burst}): retry in {retry_after:.3f} s",
            retry_after=retry_after,
        )

    def forget(self, key_id: str) -> None:
        """Drop a revoked key's buckets."""
        for permission in Permission:
            self._buckets.pop((key_id, permission.value), None)
