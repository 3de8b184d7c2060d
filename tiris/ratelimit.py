"""Rate limits per user (classes `api` and `trading`) and per client address (class `auth`).

An operation's class is its `x-rate-limit` in openapi.yaml (`api` for every other /v1 operation); its limit is a
setting (RATE_LIMIT_API, RATE_LIMIT_TRADING, RATE_LIMIT_AUTH). The algorithm is GCRA (the generic cell rate
algorithm): one stored number per key, the theoretical arrival time, which allows `limit` requests in a burst and
then one every `period / limit` seconds. With REDIS_URL the check-and-update is one Lua script, atomic on the Redis
server and timed by its clock, so every worker of every replica shares the counters; without it the state is in
the process (each worker limits on its own).
"""

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass

from tiris import config
from tiris.errors import RateLimited

log = logging.getLogger("tiris.ratelimit")
CLASSES = ("api", "trading", "auth")  # the values of `x-rate-limit`; each has its own setting


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until this request would be allowed (0 when allowed)
    reset: float  # seconds until the whole allowance is back

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(math.ceil(self.reset))}


def gcra(tat: float, now: float, limit: int, period: float) -> tuple[Decision, float]:
    """One request at `now` against the stored theoretical arrival time; returns the decision and the new time."""
    interval = period / limit
    tat = max(tat, now)
    new_tat = tat + interval
    allow_at = new_tat - period
    if now < allow_at:
        return Decision(False, limit, 0, allow_at - now, tat - now), tat
    remaining = int((period - (new_tat - now)) / interval + 1e-9)
    return Decision(True, limit, remaining, 0.0, new_tat - now), new_tat


# The same arithmetic as gcra(), run atomically inside Redis with Redis's clock.
GCRA_SCRIPT = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, tostring(allow_at - now), tostring(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000))
return {1, math.floor((period - (new_tat - now)) / interval + 1e-9), '0', tostring(new_tat - now)}
"""


class MemoryStore:
    def __init__(self):
        self.tats: dict[str, float] = {}
        self.lock = threading.Lock()

    async def hit(self, key: str, limit: int, period: int) -> Decision:
        with self.lock:
            now = time.monotonic()
            decision, self.tats[key] = gcra(self.tats.get(key, now), now, limit, period)
            if len(self.tats) > 100_000:  # forget keys whose allowance is whole again
                self.tats = {k: v for k, v in self.tats.items() if v > now}
            return decision


class RedisStore:
    def __init__(self, url: str):
        self.url = url
        self.clients: dict[int, object] = {}  # per event loop: an asyncio client is bound to the loop it runs on
        self.fallback = MemoryStore()

    def _script(self):
        loop = id(asyncio.get_running_loop())
        if loop not in self.clients:
            import redis.asyncio as redis

            client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
            self.clients = {loop: client.register_script(GCRA_SCRIPT)}
        return self.clients[loop]

    async def hit(self, key: str, limit: int, period: int) -> Decision:
        try:
            allowed, remaining, retry_after, reset = await self._script()(keys=[f"tiris:rl:{key}"],
                                                                          args=[limit, period])
        except Exception as error:  # noqa: BLE001 - Redis down: limit per process rather than refuse all traffic
            log.warning("rate-limit store unreachable (%s); limiting in this process meanwhile", type(error).__name__)
            return await self.fallback.hit(key, limit, period)
        return Decision(bool(allowed), limit, int(remaining), float(retry_after), float(reset))


def store_for(settings: config.Settings):
    return RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()


class RateLimitMiddleware:
    """Runs after routing and authentication (so it knows the operation and the user) and before validation.

    The decision's headers are left in the scope for the outer request middleware, which puts them on the
    response whatever it is (a 2xx, a 4xx raised later, or this 429).
    """

    def __init__(self, app, operations: dict, settings: config.Settings):
        self.app = app
        self.operations = operations
        self.limits = dict(zip(CLASSES, (settings.rate_limit_api, settings.rate_limit_trading,
                                         settings.rate_limit_auth)))
        self.store = store_for(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            extensions = scope.get("extensions", {})
            operation = self.operations.get(extensions.get("connexion_routing", {}).get("operation_id"))
            if operation is not None and operation.rate_limit is not None:
                await self._check(scope, extensions, operation.rate_limit)
        await self.app(scope, receive, send)

    async def _check(self, scope, extensions: dict, rate_class: str) -> None:
        if rate_class == "auth":
            who = (scope.get("client") or ("unknown",))[0]
        else:
            who = extensions.get("connexion_context", {}).get("user")
            if who is None:  # an operation without authentication: nobody to count against
                return
        limit, period = self.limits[rate_class]
        decision = await self.store.hit(f"{rate_class}:{who}", limit, period)
        extensions.setdefault("tiris", {})["rate_limit"] = decision.headers()
        if not decision.allowed:
            raise RateLimited(headers={"Retry-After": str(max(1, math.ceil(decision.retry_after)))},
                              details={"limit": limit, "period_seconds": period, "class": rate_class})
