"""The live feed served to clients: Server-Sent Events (`GET /v1/stream`) and the WebSocket on the same path.

Both are served by `StreamMiddleware`, an async layer inside the Connexion app, so a connection costs a coroutine,
never a thread of Flask's pool. For SSE, Connexion has routed the request, checked its security (bearer token or a
stream ticket), its rate limit and its parameters before it gets here; errors are the one error envelope.

Each worker has one `Hub`: a PostgreSQL connection that LISTENs to the feed's channel (db/feed.py NOTIFYs at
commit, to every worker of every replica) and to the authentication notices (db/notices.py), and wakes the
connections of the user named. A woken connection reads its user's events after the last id it sent, from the
database, in order: what it sends is what committed, so a client that reconnects with the last id it saw (to any
worker or replica, after any restart) gets exactly what it missed, then the live ones. The connections of one user
woken together share one read (`Hub.read`): a user with five streams costs one query per commit, not five.

- An idle stream gets a comment line every STREAM_HEARTBEAT_SECONDS, so proxies keep it open.
- A client more than STREAM_MAX_LAG events behind is sent `stream.lagging` (with the last id it was sent) and
  disconnected, to reconnect from there; a client whose socket takes no data for SEND_TIMEOUT is disconnected.
  Nothing is ever skipped: events stay in the database until the retention job trims them, and a resume from an
  id already trimmed starts with `stream.truncated` saying so.
- A user disabled or a session revoked ends its streams within seconds (`stream.closed` with the reason): the
  notice wakes them at once; every AUTH_RECHECK seconds each stream asks again anyway.
- STREAM_MAX_PER_USER and STREAM_MAX_PER_WORKER bound the connections of this worker: a 429 beyond them.
"""

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import psycopg
from pydantic import ValidationError

from db import engine, feed, notices
from db.access import Caller
from db.urls import psycopg_kwargs
from generated.models import LiveFeedSubscribe
from tiris import auth, config, metrics
from tiris.errors import RateLimited, SwitchedOff, Unauthorized

log = logging.getLogger("tiris.stream")

PATH = "/v1/stream"
OPERATION = "handlers.stream.open_stream"
READ_BATCH = 500
SEND_TIMEOUT = 10.0  # seconds a client's socket may refuse data before it is disconnected
AUTH_RECHECK = 5.0
SAFETY_POLL = 30.0  # a stream reads even unwoken this often (a notification lost while the listener reconnected)


@dataclass(eq=False)
class Subscriber:
    caller: Caller
    cursor: int
    types: tuple[str, ...] | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    recheck: bool = False  # the user's standing changed: ask the database, not the cache
    gone: bool = False  # the client went away

    def hang_up(self) -> None:
        self.gone = True
        self.wake.set()


@dataclass
class _SharedRead:
    after: int  # the lowest cursor of the streams that joined
    done: asyncio.Future  # what `_read` returned


@dataclass(frozen=True)
class Batch:
    """A stream's part of a read: its events, the id up to which the read saw every event (the stream has then
    been sent all of its own up to there), and the user's last id."""
    events: list[feed.Event]
    complete_to: int
    head: int


class Hub:
    """This worker's connections by user, and the listener that wakes them."""

    def __init__(self):
        self.by_user: dict[uuid.UUID, set[Subscriber]] = {}
        self.count = 0
        self.next_read: dict[uuid.UUID, _SharedRead] = {}  # per user, the read that has not started yet
        self.reading: set[asyncio.Task] = set()  # the reads under way (the loop keeps only weak references)
        self.listener: asyncio.Task | None = None
        self.listening = asyncio.Event()

    def join(self, subscriber: Subscriber, settings: config.Settings) -> None:
        if not feed.enabled():
            raise SwitchedOff("The live feed is off on this service (FEED_ENABLED).", code="FEED_DISABLED")
        if self.count >= settings.stream_max_per_worker:
            raise RateLimited("This server holds as many streams as it may; retry shortly.",
                              code="TOO_MANY_STREAMS", headers={"Retry-After": "5"},
                              details={"limit": settings.stream_max_per_worker, "scope": "worker"})
        mine = self.by_user.setdefault(subscriber.caller.id, set())
        if len(mine) >= settings.stream_max_per_user:
            raise RateLimited("You have as many open streams as you may; close one first.",
                              code="TOO_MANY_STREAMS", headers={"Retry-After": "5"},
                              details={"limit": settings.stream_max_per_user, "scope": "user"})
        mine.add(subscriber)
        self.count += 1
        if self.listener is None or self.listener.done():
            self.listener = asyncio.create_task(self._listen(settings.database_url))

    def leave(self, subscriber: Subscriber) -> None:
        mine = self.by_user.get(subscriber.caller.id, set())
        if subscriber in mine:
            mine.discard(subscriber)
            self.count -= 1
        if not mine:
            self.by_user.pop(subscriber.caller.id, None)

    async def read(self, subscriber: Subscriber) -> Batch:
        """The subscriber's next events, read after it asked: it joins its user's read that has not started yet,
        or starts one. The read begins after every subscriber that joined it asked, so each sees what committed
        before it was woken; it reads from the lowest cursor of those, and each takes its own part."""
        user = subscriber.caller.id
        shared = self.next_read.get(user)
        if shared is None:
            shared = self.next_read[user] = _SharedRead(subscriber.cursor, asyncio.get_running_loop().create_future())
            task = asyncio.create_task(self._carry_out(user, shared))
            self.reading.add(task)
            task.add_done_callback(self.reading.discard)
        shared.after = min(shared.after, subscriber.cursor)
        events, complete_to, head = await asyncio.shield(shared.done)
        return Batch([event for event in events if event.id > subscriber.cursor
                      and (subscriber.types is None or event.type in subscriber.types)], complete_to, head)

    async def _carry_out(self, user: uuid.UUID, shared: _SharedRead) -> None:
        # A task's first step runs on the loop's next turn: the streams woken by the same notification, which
        # resume on this turn, have joined by then. From here on, a stream that asks starts the next read.
        del self.next_read[user]
        try:
            shared.done.set_result(await asyncio.to_thread(_read, user, shared.after))
        except asyncio.CancelledError:
            shared.done.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - each stream that joined gets the failure of its read
            shared.done.set_exception(error)
            shared.done.exception()  # retrieved: the streams raise it; no warning if they have all gone

    def _wake(self, user_id: uuid.UUID, *, recheck: bool = False) -> None:
        for subscriber in self.by_user.get(user_id, ()):
            subscriber.recheck = subscriber.recheck or recheck
            subscriber.wake.set()

    def _wake_all(self) -> None:
        for user_id in list(self.by_user):
            self._wake(user_id)

    async def _listen(self, database_url: str) -> None:
        delay = 0.5
        while self.count:
            try:
                conn = await psycopg.AsyncConnection.connect(**psycopg_kwargs(
                    database_url, autocommit=True, connect_timeout=5, application_name="tiris-stream-listener"))
                async with conn:
                    await conn.execute(f"LISTEN {feed.CHANNEL}")
                    await conn.execute(f"LISTEN {notices.CHANNEL}")
                    self.listening.set()
                    self._wake_all()  # whatever committed while nobody listened is read now
                    delay = 0.5
                    async for note in conn.notifies():
                        self._heard(note.channel, note.payload)
                        if not self.count:
                            break
            except (psycopg.Error, OSError) as error:
                log.warning("stream listener lost (%s); reconnecting", type(error).__name__)
            finally:
                self.listening.clear()
            if self.count:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    def _heard(self, channel: str, payload: str) -> None:
        try:
            if channel == feed.CHANNEL:
                user = payload.partition(":")[0]  # `user_id:last_id`
                self._wake(uuid.UUID(user))
            else:
                topic, key = notices.parse(payload)
                if topic == notices.USERS:
                    self._wake(uuid.UUID(key), recheck=True)
        except ValueError:
            log.warning("unreadable notification on %s: %r", channel, payload)


_hubs: dict[int, Hub] = {}  # per event loop (one per worker; tests may run several)


def hub() -> Hub:
    loop = id(asyncio.get_running_loop())
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]


# --- one connection's loop, whatever carries it

class Closed(Exception):
    """The client went away, or must (its reason was sent)."""


class Channel:
    """How events reach one client: SSE or WebSocket frames."""

    async def event(self, event: feed.Event) -> None: ...
    async def notice(self, kind: str, data: dict) -> None: ...
    async def heartbeat(self) -> None: ...


async def _send(coroutine) -> None:
    try:
        async with asyncio.timeout(SEND_TIMEOUT):  # not wait_for: that makes a task of every send
            await coroutine
    except (TimeoutError, OSError) as error:
        raise Closed("the client does not take data") from error


def _bounds(user_id: uuid.UUID) -> tuple[int | None, int]:
    """The user's oldest id kept and last id: where a resume can start (events trimmed before it are missing)."""
    with engine.reading() as conn:
        return feed.oldest(conn, user_id), feed.head(conn, user_id)


def _read(user_id: uuid.UUID, after: int) -> tuple[list[feed.Event], int, int]:
    """The user's events after `after`, of every type, up to the last id, which is read first: every event up to it
    has committed, so the read is complete up to it, or up to its last event when it is cut at READ_BATCH."""
    metrics.STREAM_READS.inc()
    with engine.reading() as conn:
        head = feed.head(conn, user_id)
        events = feed.read(conn, user_id, after, READ_BATCH, head)
    return events, events[-1].id if len(events) == READ_BATCH else head, head


def _still_admitted(subscriber: Subscriber) -> str | None:
    try:
        auth.admitted(subscriber.caller.id, subscriber.caller.session_id, cached=not subscriber.recheck)
    except Unauthorized as error:
        return error.code
    return None


async def start(subscriber: Subscriber) -> None:
    """A subscriber without a last id starts at the user's last event (what happens next); awaited before the
    client is told the stream is open, so nothing committed after that answer is missed."""
    if subscriber.cursor < 0:
        subscriber.cursor = (await asyncio.to_thread(_bounds, subscriber.caller.id))[1]


async def run(subscriber: Subscriber, channel: Channel, settings: config.Settings) -> None:
    """Sends the subscriber's events until the client leaves or must go; the subscriber has joined the hub."""
    oldest, head = await asyncio.to_thread(_bounds, subscriber.caller.id)
    if oldest is not None and subscriber.cursor < oldest - 1 or oldest is None and subscriber.cursor < head:
        kept = {"oldest_kept_id": oldest} if oldest is not None else {}  # absent, not null: nothing is kept
        await _send(channel.notice("stream.truncated", {"last_event_id": subscriber.cursor, **kept}))
        subscriber.cursor = (oldest - 1) if oldest is not None else head
    next_check = time.monotonic() + AUTH_RECHECK
    while not subscriber.gone:
        subscriber.wake.clear()
        if subscriber.recheck or time.monotonic() >= next_check:
            reason = await asyncio.to_thread(_still_admitted, subscriber)
            subscriber.recheck, next_check = False, time.monotonic() + AUTH_RECHECK
            if reason:
                await _send(channel.notice("stream.closed", {"code": reason}))
                return
        while True:
            batch = await hub().read(subscriber)
            if batch.head - subscriber.cursor > settings.stream_max_lag:
                await _send(channel.notice("stream.lagging", {"last_event_id": subscriber.cursor,
                                                              "head": batch.head}))
                return
            for event in batch.events:
                await _send(channel.event(event))
                subscriber.cursor = event.id
            subscriber.cursor = max(subscriber.cursor, batch.complete_to)  # the rest up to there: of other types
            if subscriber.cursor >= batch.head:
                break
        waited = time.monotonic()
        try:  # woken by a commit, a notice or the client leaving; no task made per wait (a thousand streams wait)
            async with asyncio.timeout(min(settings.stream_heartbeat, SAFETY_POLL)):
                await subscriber.wake.wait()
        except TimeoutError:
            if time.monotonic() - waited >= settings.stream_heartbeat:
                await _send(channel.heartbeat())


# --- Server-Sent Events

class SSE(Channel):
    def __init__(self, send):
        self.send = send

    async def _write(self, text: str) -> None:
        await self.send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def event(self, event: feed.Event) -> None:
        await self._write(f"id: {event.id}\nevent: {event.type}\ndata: {event.data}\n\n")

    async def notice(self, kind: str, data: dict) -> None:
        await self._write(f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n")

    async def heartbeat(self) -> None:
        await self._write(": heartbeat\n\n")


def _types(raw: list[str]) -> tuple[str, ...] | None:
    wanted = tuple(sorted({kind for item in raw for kind in item.split(",") if kind}))
    return wanted or None


def _last_id(scope) -> int:
    headers = dict(scope["headers"])
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    raw = headers.get(b"last-event-id", b"").decode("latin-1").strip() or (query.get("last_event_id") or [""])[0]
    return int(raw) if raw.isdigit() else -1


async def serve_sse(scope, receive, send, caller: Caller) -> None:
    settings = config.current()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    subscriber = Subscriber(caller, _last_id(scope), _types(query.get("types", [])))
    the_hub = hub()
    the_hub.join(subscriber, settings)  # 429 before anything is sent
    try:
        await start(subscriber)
    except BaseException:
        the_hub.leave(subscriber)
        raise

    async def watch_disconnect():
        while (await receive())["type"] != "http.disconnect":
            pass
        subscriber.hang_up()

    watcher = asyncio.create_task(watch_disconnect())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache, no-store"),
            (b"x-accel-buffering", b"no")]})
        await SSE(send).heartbeat()  # the headers and a first line reach the client now, not with the first event
        await run(subscriber, SSE(send), settings)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (Closed, OSError):
        pass
    finally:
        watcher.cancel()
        the_hub.leave(subscriber)


# --- WebSocket

class WebSocket(Channel):
    def __init__(self, send):
        self.send = send

    async def _json(self, value: dict) -> None:
        await self.send({"type": "websocket.send", "text": json.dumps(value, separators=(",", ":"))})

    async def event(self, event: feed.Event) -> None:
        await self.send({"type": "websocket.send",
                         "text": f'{{"type":"event","id":{event.id},"event":"{event.type}","data":{event.data}}}'})

    async def notice(self, kind: str, data: dict) -> None:
        await self._json({"type": kind, **data})

    async def heartbeat(self) -> None:
        await self._json({"type": "heartbeat"})


async def serve_websocket(scope, receive, send) -> None:
    """The client sends one `subscribe` message (`token` unless the Authorization header has it, or `ticket`;
    optional `types` and `last_event_id`), then receives events; the server only closes with a reason."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    channel, settings = WebSocket(send), config.current()
    try:
        message = await asyncio.wait_for(receive(), timeout=10)
        raw = message.get("text") or message.get("bytes") or "null"
        request = json.loads(raw)
        if message["type"] != "websocket.receive" or not isinstance(request, dict) or request.get("type") != "subscribe":
            raise _WsError(400, "VALIDATION_ERROR", 'The first message must be {"type": "subscribe", ...}.')
        subscribe = _subscribe(raw)
        caller = await asyncio.to_thread(_ws_caller, scope, subscribe)
        last, types = subscribe.last_event_id, [kind.value for kind in subscribe.types or ()]
        subscriber = Subscriber(caller, -1 if last is None else last, _types(types))
        try:
            hub().join(subscriber, settings)
        except RateLimited as error:
            raise _WsError(429, error.code, error.message) from None
        try:
            await start(subscriber)
        except BaseException:
            hub().leave(subscriber)
            raise
    except asyncio.TimeoutError:
        return await _ws_close(send, channel, 400, "VALIDATION_ERROR", "No subscribe message within 10 s.")
    except (json.JSONDecodeError, TypeError):
        return await _ws_close(send, channel, 400, "VALIDATION_ERROR", "Messages are JSON objects.")
    except _WsError as error:
        return await _ws_close(send, channel, error.status, error.code, error.message)

    async def watch_disconnect():
        while (await receive())["type"] != "websocket.disconnect":
            pass  # the client has nothing more to say; what it says is ignored
        subscriber.hang_up()

    watcher = asyncio.create_task(watch_disconnect())
    try:
        await channel.notice("subscribed", {**({} if last is None else {"last_event_id": last}),
                                            "types": list(subscriber.types or ())})
        await run(subscriber, channel, settings)
        if not subscriber.gone:
            await send({"type": "websocket.close", "code": 1000})
    except (Closed, OSError):
        pass
    finally:
        watcher.cancel()
        hub().leave(subscriber)


class _WsError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _subscribe(raw: str | bytes) -> LiveFeedSubscribe:
    """The first message as asyncapi.yaml's LiveFeedSubscribe (strictly: `"41"` is not an id, nor `true`)."""
    try:
        return LiveFeedSubscribe.model_validate_json(raw, strict=True)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(map(str, problem["loc"])) or "message"
        raise _WsError(400, "VALIDATION_ERROR", f"{where}: {problem['msg']}") from None


def _ws_caller(scope, subscribe: LiveFeedSubscribe) -> Caller:
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    token = header[7:].strip() if header.lower().startswith("bearer ") else subscribe.token
    try:
        if token:
            return auth.caller_from_token(token)
        if subscribe.ticket:
            return auth.caller_from_ticket(subscribe.ticket)
    except Unauthorized as error:
        raise _WsError(401, error.code, error.message) from None
    raise _WsError(401, "UNAUTHORIZED", "A bearer token (header or `token`) or a `ticket` is required.")


async def _ws_close(send, channel: WebSocket, status: int, code: str, message: str) -> None:
    await channel.notice("error", {"code": code, "message": message, "status": status})
    await send({"type": "websocket.close", "code": 4000 + status})  # 4400, 4401, 4429


# --- where both are served

class StreamMiddleware:
    """Answers `GET /v1/stream` (after Connexion's routing, security, rate limit and validation) and WebSocket
    connections to the same path; everything else goes on to the Flask app."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and scope["path"] == PATH:
            return await serve_websocket(scope, receive, send)
        if scope["type"] == "http":
            extensions = scope.get("extensions", {})
            if extensions.get("connexion_routing", {}).get("operation_id") == OPERATION:
                caller = extensions["connexion_context"]["token_info"]["caller"]
                return await serve_sse(scope, receive, send, caller)
        await self.app(scope, receive, send)
