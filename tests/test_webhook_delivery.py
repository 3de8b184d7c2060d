"""Webhook delivery end to end: real PostgreSQL, the deliverer's rounds (consumers/deliver.py) and `tiris deliver`
processes, and a loopback receiver (tests/webhook_receiver.py) listed in WEBHOOK_ALLOWED_HOSTS.

Signed deliveries the receiver verifies; retries after 500s and time-outs with the same event id and body; failed
once the retry window ends; a monitor that fires once per crossing; targets refused at delivery after resolving
(a name that resolves to loopback); and each delivery's transitions at most once, with two deliverers at work."""

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from consumers import deliver
from db import engine, webhook_deliveries
from db.schema import webhook_deliveries as deliveries_table
from db.webhook_targets import Allowed
from tests.helpers import create_exchange, create_sub_account
from tests.jetstream import wait_for
from tests.webhook_receiver import Receiver, verify
from tiris import config

ROOT = Path(__file__).resolve().parent.parent


def _options(**changes) -> deliver.Options:
    """Short delays and time-outs, so that retries happen within the test."""
    options = deliver.Options(
        allowed=Allowed.parse(["127.0.0.1"]), timeout=0.5, concurrency=8, poll=0.02,
        schedule=webhook_deliveries.Schedule(base=dt.timedelta(milliseconds=20), cap=dt.timedelta(milliseconds=100),
                                             give_up_after=dt.timedelta(seconds=60)),
        retention=dt.timedelta(hours=1))
    return dataclasses.replace(options, **changes)


def _rounds_until(options: deliver.Options, condition, what: str, rounds: int = 300):
    for _ in range(rounds):
        asyncio.run(deliver.deliver_once(options))
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"after {rounds} rounds, still waiting for {what}")


@pytest.fixture
def receiver():
    made = []

    def make(*answers, default=(200, 0.0)) -> Receiver:
        made.append(Receiver(answers, default))
        return made[-1]

    yield make
    for one in made:
        one.stop()


@pytest.fixture
def hooks(api, settings):
    """Webhooks of `api`'s user: WEBHOOK_ALLOWED_HOSTS lists the loopback receiver's address (and "*")."""
    config.use(dataclasses.replace(config.current(), webhook_allowed_hosts=("*", "127.0.0.1")))

    def create(url: str, events=("transaction.booked",), monitors=()) -> dict:
        status, body = api.post("/v1/webhooks", json={"url": url, "events": list(events), "monitors": list(monitors)})
        assert status == 201, body
        return body
    return create


def _usdt(api, balance=None) -> dict:
    return create_sub_account(api, create_exchange(api)["id"], "USDT", balance)


def _deposit(api, account, amount: str) -> dict:
    status, body = api.post(f"/v1/sub-accounts/{account['id']}/deposit", json={"amount": amount})
    assert status == 201, body
    return body


def _withdraw(api, account, amount: str) -> None:
    status, body = api.post(f"/v1/sub-accounts/{account['id']}/withdraw", json={"amount": amount})
    assert status == 201, body


def _log(api, webhook) -> list[dict]:
    status, body = api.get(f"/v1/webhooks/{webhook['id']}/deliveries")
    assert status == 200, body
    return body["items"]


def test_a_delivery_is_signed_and_the_receiver_verifies_it(api, hooks, receiver):
    target = receiver()
    usdt = _usdt(api)
    webhook = hooks(target.url)
    transaction = _deposit(api, usdt, "10")

    [got] = _rounds_until(_options(), target.requests, "the delivery")
    assert verify(webhook["secret"], got.headers, got.body)
    assert not verify(webhook["secret"], got.headers, got.body.replace(b"10.0", b"99.0"))  # a forged body fails
    body = got.json()
    assert (body["type"], body["user_id"], body["webhook_id"], body["data"]) == (
        "transaction.booked", str(api.user["id"]), webhook["id"], transaction)
    assert body["id"] == got.event_id and got.headers["Content-Type"] == "application/json"
    [logged] = _log(api, webhook)
    assert (logged["status"], logged["attempts"], logged["last_status_code"], logged["event_id"],
            logged["next_attempt_at"]) == ("succeeded", 1, 200, got.event_id, None)


def test_only_subscribed_events_after_the_webhooks_creation_are_delivered(api, hooks, receiver):
    target = receiver()
    usdt = _usdt(api)
    _deposit(api, usdt, "1")  # before the webhook: never delivered
    hooks(target.url, events=["balance.changed"])
    _deposit(api, usdt, "2")
    [got] = _rounds_until(_options(), target.requests, "the delivery")
    assert (got.json()["type"], got.json()["data"]["balance"]) == ("balance.changed", "3.000000000000000000")
    asyncio.run(deliver.deliver_once(_options()))
    assert len(target.requests()) == 1


def test_a_500_is_retried_with_the_same_event_id_and_body_until_it_succeeds(api, hooks, receiver):
    target = receiver((500, 0), (503, 0))
    usdt = _usdt(api)
    webhook = hooks(target.url)
    _deposit(api, usdt, "10")

    got = _rounds_until(_options(), lambda: len(target.requests()) == 3 and target.requests(), "three attempts")
    assert len({(r.event_id, r.body) for r in got}) == 1  # at least once, always the same event
    assert all(verify(webhook["secret"], r.headers, r.body) for r in got)
    [logged] = _log(api, webhook)
    assert (logged["status"], logged["attempts"], logged["last_status_code"], logged["last_error"]) == (
        "succeeded", 3, 200, None)


def test_a_time_out_is_retried_with_the_same_event_id(api, hooks, receiver):
    target = receiver((200, 2.0))  # answers after the deliverer stopped waiting: not delivered
    usdt = _usdt(api)
    webhook = hooks(target.url)
    _deposit(api, usdt, "10")

    got = _rounds_until(_options(timeout=0.3), lambda: len(target.requests()) == 2 and target.requests(),
                        "the retry after the time-out")
    assert got[0].event_id == got[1].event_id and got[0].body == got[1].body
    wait_for(lambda: _log(api, webhook)[0]["status"] == "succeeded", what="the retry recorded")
    [logged] = _log(api, webhook)
    assert logged["attempts"] == 2


def test_a_delivery_still_failing_when_the_retry_window_ends_is_failed_and_tried_no_more(api, hooks, receiver):
    target = receiver(default=(500, 0))
    usdt = _usdt(api)
    webhook = hooks(target.url)
    _deposit(api, usdt, "10")
    options = _options(schedule=webhook_deliveries.Schedule(
        base=dt.timedelta(milliseconds=20), cap=dt.timedelta(milliseconds=40), give_up_after=dt.timedelta(seconds=1)))

    _rounds_until(options, lambda: _log(api, webhook)[0]["status"] == "failed", "the delivery to fail")
    [logged] = _log(api, webhook)
    tried = len(target.requests())
    assert (logged["attempts"], logged["last_status_code"], logged["last_error"], logged["next_attempt_at"]) == (
        tried, 500, "HTTP 500", None)
    assert tried >= 3
    for _ in range(5):
        asyncio.run(deliver.deliver_once(options))
    assert len(target.requests()) == tried
    assert [d["id"] for d in api.get(f"/v1/webhooks/{webhook['id']}/deliveries?status=failed")[1]["items"]] == [
        logged["id"]]


def test_a_balance_monitor_fires_once_per_crossing(api, hooks, receiver):
    target = receiver()
    usdt = _usdt(api, "150")
    webhook = hooks(target.url, events=[], monitors=[
        {"sub_account_id": usdt["id"], "threshold": "100", "direction": "below"},
        {"sub_account_id": usdt["id"], "threshold": "120", "direction": "above"}])
    options = _options()
    asyncio.run(deliver.deliver_once(options))
    # 150 -> 90 (below 100: fires) -> 80 (still below) -> 130 (above 120: fires; back over 100) -> 90 (fires again)
    # -> 95 (still below).
    for move, amount in ((_withdraw, "60"), (_withdraw, "10"), (_deposit, "50"), (_withdraw, "40"),
                         (_deposit, "5")):
        move(api, usdt, amount)
        asyncio.run(deliver.deliver_once(options))
    _rounds_until(options, lambda: all(d["status"] == "succeeded" for d in _log(api, webhook)), "every delivery")

    crossings = sorted((r.json() for r in target.requests()), key=lambda body: int(body["id"].split(":")[0]))
    assert [(c["type"], c["data"]["direction"], c["data"]["threshold"], c["data"]["available"]) for c in crossings] == [
        ("balance.threshold_crossed", "below", "100.000000000000000000", "90.000000000000000000"),
        ("balance.threshold_crossed", "above", "120.000000000000000000", "130.000000000000000000"),
        ("balance.threshold_crossed", "below", "100.000000000000000000", "90.000000000000000000")]
    assert all(c["data"]["sub_account"]["id"] == usdt["id"] for c in crossings)
    assert len({c["id"] for c in crossings}) == 3
    monitors = api.get(f"/v1/webhooks/{webhook['id']}")[1]["monitors"]
    assert [(m["direction"], m["beyond"], m["last_crossed_at"] is not None) for m in monitors] == [
        ("below", True, True), ("above", False, True)]


def test_a_monitor_created_beyond_its_threshold_fires_only_on_a_new_crossing(api, hooks, receiver):
    target = receiver()
    usdt = _usdt(api, "50")
    hooks(target.url, events=[], monitors=[{"sub_account_id": usdt["id"], "threshold": "100", "direction": "below"}])
    _withdraw(api, usdt, "10")  # 40: below already, no crossing
    _deposit(api, usdt, "100")  # 140: back above
    _withdraw(api, usdt, "60")  # 80: crosses
    [got] = _rounds_until(_options(), target.requests, "the crossing")
    assert got.json()["data"]["available"] == "80.000000000000000000"
    asyncio.run(deliver.deliver_once(_options()))
    assert len(target.requests()) == 1


def test_a_name_that_resolves_to_loopback_at_delivery_is_refused_unless_listed(api, hooks, receiver, monkeypatch):
    """DNS rebinding: the name resolved to nothing (or a public address) when the webhook was made, and resolves to
    the service's own loopback when the deliverer connects."""
    target = receiver()
    usdt = _usdt(api)
    port = target.server.server_address[1]
    webhook = hooks(f"https://rebound.example.com:{port}/hook")  # no such name here: accepted, checked at delivery
    monkeypatch.setattr(deliver, "resolve", lambda host, port: [__import__("ipaddress").ip_address("127.0.0.1")])
    _deposit(api, usdt, "10")

    options = _options(allowed=Allowed.parse(["*", "127.0.0.1"]))
    _rounds_until(options, lambda: _log(api, webhook) and _log(api, webhook)[0]["attempts"] >= 2, "two attempts")
    [logged] = _log(api, webhook)
    assert logged["status"] == "retrying" and logged["last_status_code"] is None
    assert logged["last_error"] == ("target refused: rebound.example.com resolves to 127.0.0.1, which is not a "
                                    "public address")
    assert target.requests() == []


def test_a_target_allowed_when_made_but_no_longer_listed_is_refused_at_delivery(api, hooks, receiver):
    """`localhost` listed by itself when the webhook was made; the deployment's list no longer names it: the
    deliverer resolves it (127.0.0.1, loopback) and refuses to connect."""
    target = receiver()
    usdt = _usdt(api)
    config.use(dataclasses.replace(config.current(), webhook_allowed_hosts=("*", "localhost")))
    webhook = hooks(target.url.replace("127.0.0.1", "localhost"))
    _deposit(api, usdt, "10")

    _rounds_until(_options(allowed=Allowed.parse(["*"])), lambda: _log(api, webhook)[0]["attempts"] >= 1,
                  "an attempt")
    [logged] = _log(api, webhook)
    assert logged["status"] == "retrying" and logged["last_error"].startswith("target refused: ")
    assert target.requests() == []
    # Listed again: delivered.
    _rounds_until(_options(allowed=Allowed.parse(["localhost"])), target.requests, "the delivery once listed")


def test_each_transition_happens_at_most_once_per_attempt(api, hooks, receiver):
    """Two claims never hold one delivery; an outcome is recorded once, only by the attempt that made it, and not
    after the delivery ended (deleted webhook)."""
    usdt = _usdt(api)
    webhook = hooks(receiver().url)
    _deposit(api, usdt, "10")
    lease = dt.timedelta(seconds=30)
    schedule = _options().schedule
    with engine.transaction() as conn:
        assert webhook_deliveries.fan_out(conn) == 1
    with engine.transaction() as conn:
        [first] = webhook_deliveries.claim(conn, 10, lease)
    with engine.transaction() as conn:
        assert webhook_deliveries.claim(conn, 10, lease) == []  # leased: nobody else takes it
        assert webhook_deliveries.fan_out(conn) == 0  # and fan-out does not make it twice
    failed = webhook_deliveries.Outcome(500, "HTTP 500")
    with engine.transaction() as conn:
        assert webhook_deliveries.record(conn, first, failed, schedule) == "retrying"
        assert webhook_deliveries.record(conn, first, failed, schedule) is None
        conn.execute(sa.update(deliveries_table).values(next_attempt_at=sa.func.now()))  # due again at once
    with engine.transaction() as conn:
        [second] = webhook_deliveries.claim(conn, 10, lease)
    assert second.attempt == first.attempt + 1
    with engine.transaction() as conn:  # a stale attempt (its lease ran out) records nothing over the newer one
        assert webhook_deliveries.record(conn, first, webhook_deliveries.Outcome(200, None), schedule) is None
        assert webhook_deliveries.record(conn, second, webhook_deliveries.Outcome(200, None), schedule) == "succeeded"
        assert webhook_deliveries.record(conn, second, webhook_deliveries.Outcome(200, None), schedule) is None
    [logged] = _log(api, webhook)
    assert (logged["status"], logged["attempts"]) == ("succeeded", 2)

    _deposit(api, usdt, "5")
    with engine.transaction() as conn:
        webhook_deliveries.fan_out(conn)
        [third] = webhook_deliveries.claim(conn, 10, lease)
    assert api.delete(f"/v1/webhooks/{webhook['id']}")[0] == 204
    with engine.transaction() as conn:  # the deletion ended it: the attempt in flight records nothing
        assert webhook_deliveries.record(conn, third, webhook_deliveries.Outcome(200, None), schedule) is None
        assert conn.execute(sa.select(deliveries_table.c.status, deliveries_table.c.last_error)
                            .where(deliveries_table.c.id == third.id)).one() == ("failed", "the webhook was deleted")


def test_two_deliverer_processes_never_send_one_delivery_twice(api, hooks, receiver, service_env, tmp_path):
    target = receiver(default=(200, 0.02))
    usdt = _usdt(api)
    webhooks = [hooks(target.url, events=["transaction.booked", "balance.changed"]) for _ in range(3)]
    env = {**os.environ, **service_env, "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_POLL_MS": "20",
           "WEBHOOK_CONCURRENCY": "4", "WEBHOOK_TIMEOUT_MS": "5000", "LOG_LEVEL": "WARNING"}
    logs = [tmp_path / f"deliver-{i}.log" for i in range(2)]
    processes = [subprocess.Popen([sys.executable, "-m", "tools.cli", "deliver"], cwd=ROOT, env=env,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT) for log in logs]
    try:
        for i in range(20):
            _deposit(api, usdt, str(i + 1))
        expected = 3 * 20 * 2  # 3 webhooks x 20 deposits x (transaction.booked, balance.changed)
        wait_for(lambda: len(target.requests()) >= expected, what=f"{expected} deliveries", timeout=120,
                 log=lambda: "".join(log.read_text() for log in logs))
        time.sleep(0.5)  # anything sent twice would arrive by now
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in processes]
    assert codes == [0, 0], "".join(log.read_text() for log in logs)
    got = target.requests()
    sent = [(r.json()["webhook_id"], r.event_id) for r in got]
    assert len(sent) == expected and len(set(sent)) == expected
    with engine.reading() as conn:
        states = conn.execute(sa.select(deliveries_table.c.status, deliveries_table.c.attempts, sa.func.count())
                              .group_by(deliveries_table.c.status, deliveries_table.c.attempts)).all()
    assert states == [("succeeded", 1, expected)]
    assert {w["id"] for w in webhooks} == {webhook for webhook, _ in sent}
