"""`tiris deliver`: sends the users' webhook deliveries, never inside a request.

Each round: fan out the new feed events of webhooks that have some (db/webhook_deliveries.py: deliveries made, in
one transaction per batch of webhooks), claim as many due deliveries as there are free slots
(WEBHOOK_CONCURRENCY), and send each in its own task, with one time-out for the whole attempt
(WEBHOOK_TIMEOUT_MS). Any number of deliverers may run: fan-out and claims skip rows another one holds, and an
attempt's outcome is recorded only by the claim that made it.

Before connecting, the URL is checked again and its host resolved here; every address must pass
db/webhook_targets.py, and the request goes to the address that was checked (the URL's name still in the Host
header and the TLS server name, so the certificate is verified for it). A name that re-resolves to an internal
address after the webhook was created (DNS rebinding) is refused at this point. Redirects are not followed.
"""

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import signal
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from db import engine
from db import webhook_deliveries as deliveries
from db.webhook_targets import Allowed, TargetRefused, check_addresses, check_url, resolve

log = logging.getLogger("tiris.deliver")
TRIM_EVERY = 60.0  # seconds between two trims of the delivery log past its retention
LEASE_MARGIN = dt.timedelta(seconds=30)  # beyond the attempt's time-out, before another deliverer may claim it


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`Tiris-Signature`: t=TIMESTAMP,v1=hex(HMAC-SHA256(secret, TIMESTAMP "." BODY))."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class Options:
    allowed: Allowed
    timeout: float  # seconds for one attempt: resolving, connecting, sending, the answer's status line
    concurrency: int
    poll: float  # seconds an idle round waits
    schedule: deliveries.Schedule
    retention: dt.timedelta

    @classmethod
    def from_settings(cls, settings) -> "Options":
        return cls(allowed=Allowed.parse(settings.webhook_allowed_hosts), timeout=settings.webhook_timeout_ms / 1000,
                   concurrency=settings.webhook_concurrency, poll=settings.webhook_poll_ms / 1000,
                   schedule=deliveries.Schedule(base=dt.timedelta(milliseconds=settings.webhook_retry_base_ms),
                                                cap=dt.timedelta(seconds=settings.webhook_retry_cap_seconds),
                                                give_up_after=dt.timedelta(seconds=settings.webhook_retry_for_seconds)),
                   retention=dt.timedelta(hours=settings.webhook_log_retention_hours))

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.timeout) + LEASE_MARGIN


def client() -> httpx.AsyncClient:
    # No proxies from the environment (they would connect to the name, not the checked address), no redirects, no
    # kept connections (one is tied to the name it was opened for).
    return httpx.AsyncClient(follow_redirects=False, trust_env=False,
                             limits=httpx.Limits(max_keepalive_connections=0))


def _pinned(url: str, host: str, port: int, address) -> tuple[str, str]:
    """(the URL with the checked address in place of the host, the Host header)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}[parts.scheme]
    literal = f"[{address}]" if address.version == 6 else str(address)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, "")), host_header


async def _send(http: httpx.AsyncClient, claim: deliveries.Claim, options: Options) -> deliveries.Outcome:
    try:
        target = check_url(claim.url, options.allowed)
        addresses = await asyncio.get_running_loop().run_in_executor(None, resolve, target.host, target.port)
        check_addresses(target, addresses)
    except TargetRefused as refused:
        return deliveries.Outcome(None, f"target refused: {refused.details['reason']}")
    except (OSError, UnicodeError) as error:
        return deliveries.Outcome(None, f"could not resolve the host: {error}")
    if not addresses:
        return deliveries.Outcome(None, "the host has no address")
    url, host_header = _pinned(claim.url, target.host, target.port, addresses[0])
    body = claim.body.encode()
    now = int(time.time())
    headers = {"Host": host_header, "Content-Type": "application/json", "User-Agent": "tiris-webhooks/1",
               "Tiris-Event-Id": claim.event_id, "Tiris-Timestamp": str(now),
               "Tiris-Signature": signature(claim.secret, now, body)}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with http.stream("POST", url, content=body, headers=headers, extensions=extensions,
                               timeout=options.timeout) as response:  # the answer's body is never read
            status = response.status_code
    except httpx.TimeoutException:
        return deliveries.Outcome(None, f"no answer within {options.timeout:g} s")
    except httpx.HTTPError as error:
        return deliveries.Outcome(None, f"{type(error).__name__}: {error}"[:500])
    return deliveries.Outcome(status, None if 200 <= status < 300 else f"HTTP {status}")


async def attempt(http: httpx.AsyncClient, claim: deliveries.Claim, options: Options) -> str | None:
    """One attempt of a claimed delivery, bounded by the time-out as a whole; returns the recorded status."""
    try:
        outcome = await asyncio.wait_for(_send(http, claim, options), options.timeout)
    except asyncio.TimeoutError:
        outcome = deliveries.Outcome(None, f"no answer within {options.timeout:g} s")
    try:
        status = await asyncio.to_thread(_record, claim, outcome, options.schedule)
    except Exception:  # noqa: BLE001 - unrecorded: the row is claimed again when its lease ends (at least once)
        log.warning("could not record webhook delivery %s", claim.id, exc_info=True)
        return None
    log.info("webhook delivery attempted", extra={"delivery_id": str(claim.id), "webhook_id": str(claim.webhook_id),
                                                  "attempt": claim.attempt, "status_code": outcome.status_code,
                                                  "error": outcome.error, "status": status})
    return status


def _record(claim, outcome, schedule) -> str | None:
    with engine.transaction() as conn:
        return deliveries.record(conn, claim, outcome, schedule)


def fan_out() -> int:
    with engine.transaction() as conn:
        return deliveries.fan_out(conn)


def claim_due(count: int, lease: dt.timedelta) -> list[deliveries.Claim]:
    with engine.transaction() as conn:
        return deliveries.claim(conn, count, lease)


def trim(retention: dt.timedelta) -> int:
    with engine.transaction() as conn:
        return deliveries.trim(conn, retention)


async def deliver_once(options: Options, http: httpx.AsyncClient | None = None) -> int:
    """One round, waiting for its attempts: fan-out, then the due deliveries claimed; returns how many were tried.
    (The tests drive the deliverer round by round with it.)"""
    async with (http or client()) as http:
        await asyncio.to_thread(fan_out)
        claims = await asyncio.to_thread(claim_due, options.concurrency, options.lease)
        await asyncio.gather(*(attempt(http, claim, options) for claim in claims))
        return len(claims)


async def deliver(options: Options, stop: asyncio.Event) -> None:
    """Rounds until `stop`; attempts in flight are finished and recorded before it returns."""
    in_flight: set[asyncio.Task] = set()
    next_trim = 0.0
    async with client() as http:
        while not stop.is_set():
            busy = False
            try:
                busy = await asyncio.to_thread(fan_out) > 0
                free = options.concurrency - len(in_flight)
                for claim in await asyncio.to_thread(claim_due, free, options.lease) if free else []:
                    busy = True
                    task = asyncio.create_task(attempt(http, claim, options))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if time.monotonic() >= next_trim:
                    await asyncio.to_thread(trim, options.retention)
                    next_trim = time.monotonic() + TRIM_EVERY
            except Exception as error:  # noqa: BLE001 - the database away: claimed rows come back after their lease
                if not engine.transient(error):
                    raise
                log.warning("deliverer round failed (%s); retrying", type(error).__name__, exc_info=error)
            if not busy or len(in_flight) >= options.concurrency:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=options.poll)
                except asyncio.TimeoutError:
                    pass
        await asyncio.gather(*in_flight, return_exceptions=True)


def run(options: Options) -> None:
    """Runs until SIGTERM/SIGINT; attempts in flight are finished and recorded before exiting."""

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("delivering webhooks", extra={"concurrency": options.concurrency})
        await deliver(options, stop)

    asyncio.run(main())
