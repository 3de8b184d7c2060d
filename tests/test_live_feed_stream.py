"""The live feed over the wire: `GET /v1/stream` (SSE) and the WebSocket on the same path, served by `tiris serve`
(gunicorn, two uvicorn workers) on a real database: resume across replicas, nothing rolled back, each client its
own events only, limits, tickets, and a disabled user or a revoked session disconnected within seconds."""

import asyncio
import contextlib
import json
import queue
import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest
import websockets.sync.client

from db import booking, engine, users
from db.commands import Entry, Transfer
from tests.helpers import create_exchange, create_sub_account
from tests.server import running_server
from tests.test_asyncapi import contract_errors
from tiris import auth


class Stream:
    """An SSE client in a thread: the events (id, type, data) and notices (None, type, data) it received."""

    def __init__(self, url: str, token: str | None = None, *, last_id: int | None = None, query: str = ""):
        self.received: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.body = b""
        self.opened = threading.Event()
        self.closed = threading.Event()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self.thread = threading.Thread(target=self._run, args=(f"{url}/v1/stream{query}", headers), daemon=True)
        self.client = httpx.Client(timeout=httpx.Timeout(5, read=60))
        self.thread.start()
        assert self.opened.wait(15), "the stream did not answer"

    def _run(self, url: str, headers: dict) -> None:
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.body = response.read()
                    return
                self.opened.set()
                fields: dict = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        continue
                    if not line:
                        if "event" in fields:
                            self.received.put((int(fields["id"]) if "id" in fields else None, fields["event"],
                                               json.loads(fields["data"])))
                        fields = {}
                        continue
                    name, _, value = line.partition(": ")
                    fields[name] = value
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self.opened.set()
            self.closed.set()

    def take(self, count: int, timeout: float = 10) -> list[tuple]:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            try:
                got.append(self.received.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{len(got)} of {count} events within {timeout} s: {got}") from None
        return got

    def nothing_more(self, wait: float = 1.0) -> None:
        time.sleep(wait)
        assert self.received.empty(), self.received.get()

    def close(self) -> None:
        self.client.close()
        self.thread.join(timeout=10)


@pytest.fixture
def replicas(service_env, tmp_path_factory):
    """Two `tiris serve` replicas on the same database."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running_server(service_env, tmp_path_factory.mktemp(f"replica{n}")))
               for n in range(2)]


class Rest:
    def __init__(self, url: str, token: str):
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def call(self, method, path, json=None):
        response = self.client.request(method, path, json=json)
        return response.status_code, (response.json() if response.content else None)

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, json=None):
        return self.call("POST", path, json)


def _user(settings, email=None, admin=False):
    with engine.transaction() as conn:
        user = users.ensure(conn, email or f"{uuid.uuid4().hex[:10]}@example.com", role="admin" if admin else "user")
    return user, auth.mint(user["id"])


def _funded(url: str, token: str) -> tuple[Rest, str]:
    rest = Rest(url, token)
    return rest, create_sub_account(rest, create_exchange(rest)["id"], "USDT")["id"]


def _deposit(rest: Rest, account: str, amount: str) -> dict:
    status, body = rest.post(f"/v1/sub-accounts/{account}/deposit", json={"amount": amount})
    assert status == 201, body
    return body


def test_a_stream_resumes_on_another_replica_with_exactly_what_it_missed_then_the_live_ones(settings, replicas):
    first, second = replicas
    _, token = _user(settings)
    rest, account = _funded(first.url, token)
    stream = Stream(first.url, token)
    deposited = _deposit(rest, account, "10")
    [(first_id, kind, data), (balance_id, balance_kind, balance)] = stream.take(2)
    assert (kind, data) == ("transaction.booked", rest.get(f"/v1/transactions/{deposited['id']}")[1])
    assert (balance_id, balance_kind, balance["balance"]) == (first_id + 1, "balance.changed", "10.000000000000000000")
    stream.close()

    missed = [_deposit(Rest(second.url, token), account, amount)["id"] for amount in ("1", "2")]
    resumed = Stream(second.url, token, last_id=balance_id)
    got = resumed.take(4)
    assert [event_id for event_id, _, _ in got] == list(range(balance_id + 1, balance_id + 5))
    assert [data["id"] for _, kind, data in got if kind == "transaction.booked"] == missed
    _deposit(rest, account, "3")  # booked through the other replica: its commit wakes this one
    assert [kind for _, kind, _ in resumed.take(2)] == ["transaction.booked", "balance.changed"]
    resumed.nothing_more()
    resumed.close()


def test_a_rolled_back_booking_never_appears_and_the_next_commit_does(settings, replicas):
    user, token = _user(settings)
    rest, account = _funded(replicas[0].url, token)
    stream = Stream(replicas[0].url, token, query="?types=transaction.booked")
    assert rest.post(f"/v1/sub-accounts/{account}/withdraw", json={"amount": "1"})[0] == 422
    with contextlib.suppress(RuntimeError), engine.transaction() as conn:
        booking.book_one(conn, Entry(user["id"], Transfer(uuid.UUID(account), "credit", Decimal(7), "deposit")))
        raise RuntimeError("rolled back")
    _deposit(rest, account, "5")
    [(_, kind, data)] = stream.take(1)
    assert (kind, data["amount"]) == ("transaction.booked", "5.000000000000000000")
    stream.nothing_more()
    stream.close()


def test_a_disabled_user_and_a_revoked_session_are_disconnected_within_seconds(settings, replicas):
    user, token = _user(settings)
    _, admin_token = _user(settings, admin=True)
    stream = Stream(replicas[0].url, token)
    status, _ = Rest(replicas[1].url, admin_token).post(f"/v1/users/{user['id']}/disable")
    assert status == 200
    [(event_id, kind, data)] = stream.take(1, timeout=5)
    assert (event_id, kind, data) == (None, "stream.closed", {"code": "ACCOUNT_DISABLED"})
    assert stream.closed.wait(5)


def test_streams_past_the_per_user_limit_are_refused_with_429_in_the_error_format(service_env, tmp_path, settings):
    with running_server({**service_env, "STREAM_MAX_PER_USER": "1"}, tmp_path) as server:
        _, token = _user(settings)
        streams = [Stream(server.url, token) for _ in range(3)]  # two workers: at least one refuses a second
        refused = [s for s in streams if s.status == 429]
        assert refused, [s.status for s in streams]
        error = json.loads(refused[0].body)["error"]
        assert error["code"] == "TOO_MANY_STREAMS" and error["details"]["scope"] == "user"
        for each in streams:
            each.close()


def test_a_ticket_opens_one_stream_as_its_user_and_only_once(settings, replicas):
    url = replicas[0].url
    _, token = _user(settings)
    rest, account = _funded(url, token)
    status, ticket = rest.post("/v1/stream/tickets")
    assert status == 201, ticket
    stream = Stream(url, query=f"?ticket={ticket['ticket']}")
    assert stream.status == 200
    _deposit(rest, account, "1")
    assert [kind for _, kind, _ in stream.take(2)] == ["transaction.booked", "balance.changed"]
    again = Stream(url, query=f"?ticket={ticket['ticket']}")
    assert again.status == 401 and json.loads(again.body)["error"]["code"] == "INVALID_TICKET"
    for each in (stream, again):
        each.close()


def test_an_unauthenticated_stream_and_an_unknown_type_are_refused_in_the_error_format(replicas):
    with httpx.Client(base_url=replicas[0].url, timeout=5) as client:
        assert client.get("/v1/stream").json()["error"]["code"] == "UNAUTHORIZED"
        refused = client.get("/v1/stream?types=everything", headers={"Authorization": "Bearer x"})
    assert refused.status_code in (400, 401)


_SCHEMAS = {"subscribed": "LiveFeedSubscribed", "heartbeat": "LiveFeedHeartbeat", "error": "LiveFeedError",
            "stream.lagging": "LiveFeedLagging", "stream.closed": "LiveFeedClosed",
            "stream.truncated": "LiveFeedTruncated"}


def _documented(frame: str) -> dict:
    """A WebSocket message, checked against its schema in asyncapi.yaml."""
    message = json.loads(frame)
    schema = _SCHEMAS.get(message["type"]) or "LiveFeed" + "".join(
        word.capitalize() for word in message["event"].replace(".", "_").split("_"))
    assert contract_errors(schema, message) == [], (schema, message)
    return message


def test_the_websocket_sends_the_same_events_resumes_by_id_and_filters_by_type(settings, replicas):
    first, second = replicas
    _, token = _user(settings)
    rest, account = _funded(first.url, token)
    ws_url = first.url.replace("http://", "ws://") + "/v1/stream"
    with websockets.sync.client.connect(ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "token": token}))
        assert _documented(ws.recv(timeout=5))["type"] == "subscribed"
        _deposit(rest, account, "4")
        booked, balance = _documented(ws.recv(timeout=10)), _documented(ws.recv(timeout=10))
    assert (booked["type"], booked["event"], balance["event"]) == ("event", "transaction.booked", "balance.changed")
    _deposit(rest, account, "6")
    with websockets.sync.client.connect(second.url.replace("http://", "ws://") + "/v1/stream",
                                        additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"type": "subscribe", "last_event_id": booked["id"], "types": ["transaction.booked"]}))
        assert _documented(ws.recv(timeout=5))["type"] == "subscribed"
        missed = _documented(ws.recv(timeout=10))
        assert (missed["event"], missed["data"]["amount"]) == ("transaction.booked", "6.000000000000000000")
    with websockets.sync.client.connect(ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "token": "not-a-token"}))
        refused = _documented(ws.recv(timeout=5))
        assert (refused["type"], refused["code"]) == ("error", "INVALID_TOKEN")
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 4401


def test_a_types_filter_naming_no_type_or_an_unknown_one_is_refused_with_400(settings, replicas):
    _, token = _user(settings)
    with httpx.Client(base_url=replicas[0].url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        for query in ("types=", "types=,", "types=everything", "types=transaction.booked,everything"):
            refused = client.get(f"/v1/stream?{query}")
            assert (refused.status_code, refused.json()["error"]["code"]) == (400, "VALIDATION_ERROR"), query


def test_a_last_event_id_beyond_what_the_contract_allows_is_refused_with_400_on_both_doors(settings, replicas):
    _, token = _user(settings)
    too_big = 10 ** 18  # 19 digits: beyond the contract's 18 (a bigint would overflow at 2 ** 63)
    with httpx.Client(base_url=replicas[0].url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        for value in (too_big, 2 ** 63):
            refused = client.get(f"/v1/stream?last_event_id={value}")
            assert (refused.status_code, refused.json()["error"]["code"]) == (400, "VALIDATION_ERROR"), refused.text
    ws_url = replicas[0].url.replace("http://", "ws://") + "/v1/stream"
    for value in (too_big, 2 ** 63, "41", True, 4.5):
        with websockets.sync.client.connect(ws_url) as ws:
            ws.send(json.dumps({"type": "subscribe", "token": token, "last_event_id": value}))
            refused = _documented(ws.recv(timeout=5))
            assert (refused["type"], refused["code"], refused["status"]) == ("error", "VALIDATION_ERROR", 400), value
            assert "last_event_id" in refused["message"], refused
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 4400


def test_ten_thousand_events_for_a_hundred_users_reach_a_hundred_clients_each_only_its_own(settings, replicas):
    people = [_user(settings) for _ in range(100)]
    accounts = {}
    for user, token in people:
        accounts[user["id"]] = _funded(replicas[len(accounts) % 2].url, token)[1]

    async def listen(url: str, token: str, count: int, ready: asyncio.Event, started: list) -> list[dict]:
        got = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=120)) as client:
            async with client.stream("GET", f"{url}/v1/stream?types=transaction.booked",
                                     headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status_code == 200
                started.append(1)
                if len(started) == len(people):
                    ready.set()
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        got.append(json.loads(line[6:]))
                        if len(got) == count:
                            return got
        return got

    async def main():
        ready, started = asyncio.Event(), []
        clients = [asyncio.create_task(listen(replicas[n % 2].url, token, 100, ready, started))
                   for n, (_, token) in enumerate(people)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1)  # every stream past its first read
        for round_ in range(100):
            entries = [Entry(user["id"], Transfer(uuid.UUID(accounts[user["id"]]), "credit", Decimal(round_ + 1),
                                                  "deposit")) for user, _ in people]
            await asyncio.to_thread(_book, entries)
        return await asyncio.wait_for(asyncio.gather(*clients), 240)

    results = asyncio.run(main())
    for (user, _), got in zip(people, results):
        assert [data["amount"] for data in got] == [f"{n}.000000000000000000" for n in range(1, 101)]
        assert {data["user_id"] for data in got} == {str(user["id"])}


def _book(entries) -> None:
    with engine.transaction() as conn:
        booking.book(conn, entries)
