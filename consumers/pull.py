"""A partition's durable pull consumer, read through an inbox of its own.

nats-py's `fetch` waits for each message of a batch with a task of its own, named by a uuid4 (whose `os.urandom`
lets go of the GIL the booking threads share), and once a waiting pull has brought a first message it keeps waiting,
up to its whole timeout, for the batch to fill: at a moderate rate an event sat up to a second in a half-empty
batch. Here the subscription's callback keeps what arrives and a fetch hands over, at once, whatever is there:
- nothing is waiting and no request is open: a `no_wait` request takes what the consumer has now (its end is
  marked by a status message); if that is nothing, a waiting request for a whole batch is left open, `expires`
  long, and the fetch returns as soon as its first message is in;
- the messages of the open request that arrive while a batch is booked are the next fetch's, without a request;
- a fetch that finds a request open and sees it expire with nothing returns at once, and the next one asks again.
Each request is answered on a subject of its own, so only its own status message ends it.
A partition that stops asks for nothing more and books what the open request still brings (`drained`): a message
delivered here and left behind would wait out the acknowledgement wait while its user's later events went ahead.
So a batch is as large as what accumulated while the previous one was booked: one event when the stream is quiet,
a full batch under load. The consumer's `max_ack_pending` (the batch size) still bounds what is in hand.
"""

import asyncio
import json
import time

from nats.errors import ConnectionClosedError, NoServersError
from nats.js.client import JetStreamContext

HEARTBEAT = "100"
MARGIN = 0.5  # seconds past `expires` after which a request whose end never came is given up (a reconnect lost it)


class Pull:
    def __init__(self, nc, stream: str, durable: str):
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()  # each request is answered on a subject of its own under it
        self._requests = 0
        self._reply = ""  # the latest request's subject: only its end status ends it
        self._sub = None
        self._arrived: list = []
        self._owed = 0  # messages the open request may still bring; 0 when none is open
        self._asked = 0.0  # monotonic time the latest request was made
        self._until = 0.0  # monotonic time by which the open request is over, whatever arrives
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "Pull":
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_message)
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self._sub.unsubscribe()
        except (ConnectionClosedError, NoServersError):
            pass

    async def _on_message(self, msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            self._arrived.append(msg)
            self._owed = max(self._owed - 1, 0)
        elif status != HEARTBEAT and msg.subject == self._reply:
            self._owed = 0  # no messages (404), expired (408), or the consumer changed (409): it is over. (The end
            # of an earlier request, one given up on at `_until`, ends nothing: its subject is another.)
        self._changed.set()

    def _open(self) -> bool:
        return self._owed > 0 and time.monotonic() < self._until

    async def _request(self, batch: int, expires: float | None) -> None:
        body = {"batch": batch, **({"expires": int(expires * 1e9)} if expires else {"no_wait": True})}
        self._requests += 1
        self._reply = f"{self._inbox}.{self._requests}"
        self._asked = time.monotonic()
        self._owed, self._until = batch, self._asked + (expires or 0) + MARGIN
        await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._reply)

    async def _wait(self, done) -> None:
        while not done() and self._open():
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(self._until - time.monotonic(), 0))
            except asyncio.TimeoutError:
                return

    def drained(self) -> bool:
        """Nothing in hand and no request open: stopping now leaves no delivered message behind."""
        return not self._arrived and not self._open()

    async def fetch(self, batch: int, expires: float, *, ask: bool = True) -> list:
        """Up to `batch` messages, in the consumer's order; empty when the request waited on ended without any (at
        most `expires` after it was made). With `ask` false no request is made: what the open one still brings,
        until it is over (how a partition stops)."""
        if ask and not self._arrived and not self._open():
            await self._request(batch, None)
            await self._wait(lambda: False)  # until its end: the messages the consumer had
            if not self._arrived:
                await self._request(batch, expires)
        await self._wait(lambda: bool(self._arrived))
        if ask and not self._arrived:  # a request refused at once (no consumer, no JetStream): not a tight loop.
            # Counted from the request, not this fetch: one made earlier that expires under it is no refusal.
            await asyncio.sleep(max(self._asked + expires - time.monotonic(), 0))
        taken, self._arrived = self._arrived[:batch], self._arrived[batch:]
        return taken
