"""The invariants a chaos run must leave intact, checked with SQL against its database and compared with what was
published and acknowledged. Each check returns its problems, one line each; none means it holds."""

import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from tools.chaos.load import Operation

NAMES = ("ledger", "locked", "events once", "dead letters = poison", "acknowledged writes", "no 500")
SHOWN = 5  # problems listed per invariant; the rest are counted


@dataclass
class Expected:
    """What the run did, from the load's own records."""
    applied_events: set[str] = field(default_factory=set)  # event ids of the distinct valid events
    fills: set[str] = field(default_factory=set)  # those that are fills: two legs each
    poison: list[str] = field(default_factory=list)  # the Nats-Msg-Id of each poison message
    balances: dict[str, Decimal] = field(default_factory=dict)  # sub-account id -> balance, where it is known
    operations: list[Operation] = field(default_factory=list)  # the REST writes and how each ended


def expect_events(expected: Expected, plan: list[dict], events) -> None:
    """The bot's part: every distinct valid event applied once, the poison dead-lettered, and the balances its
    fills leave (the plan's funding plus each fill's legs: a buy adds the amount and pays amount * price + fee)."""
    for user in plan:
        expected.balances[user["base_sub_account_id"]] = Decimal(user["base_balance"])
        expected.balances[user["quote_sub_account_id"]] = Decimal(user["quote_balance"])
    for event in events:
        if event.kind == "invalid":
            expected.poison.append(event.headers["Nats-Msg-Id"])
        if event.kind != "valid":
            continue
        payload = json.loads(event.data)
        expected.applied_events.add(payload["event_id"])
        if payload["event_type"] == "orders.filled":
            expected.fills.add(payload["event_id"])
            amount, price, fee = (Decimal(payload[k]) for k in ("amount", "price", "fee"))
            sign = 1 if payload["side"] == "buy" else -1
            expected.balances[payload["base_sub_account_id"]] += sign * amount
            expected.balances[payload["quote_sub_account_id"]] -= sign * amount * price + fee


def expect_writes(expected: Expected, operations: list[Operation], opening: dict[str, Decimal]) -> None:
    """The REST part: the balances the acknowledged writes leave on top of `opening`. An unresolved write (no
    answer before the run gave up) may or may not have been booked, so its accounts are left out of the balances."""
    expected.operations = operations
    balances = dict(opening)
    unknown = set()
    for op in operations:
        if op.outcome == "acknowledged":
            for account, delta in op.effects().items():
                balances[account] += delta
        elif op.outcome != "refused":
            unknown |= set(op.effects())
    expected.balances.update({k: v for k, v in balances.items() if k not in unknown})


def _problems(rows, describe) -> list[str]:
    rows = list(rows)
    shown = [describe(row) for row in rows[:SHOWN]]
    return shown + ([f"... and {len(rows) - SHOWN} more"] if len(rows) > SHOWN else [])


def ledger(conn: psycopg.Connection, expected: Expected) -> list[str]:
    """Every balance is its credits minus its debits, and is what the load's records say it must be."""
    rows = conn.execute(
        "SELECT s.id::text, s.balance, coalesce(sum(CASE t.direction WHEN 'credit' THEN t.amount ELSE -t.amount END),"
        " 0) FROM sub_accounts s LEFT JOIN transactions t ON t.sub_account_id = s.id GROUP BY s.id").fetchall()
    problems = _problems([r for r in rows if r[1] != r[2]],
                         lambda r: f"sub-account {r[0]}: balance {r[1]} but credits - debits = {r[2]}")
    actual = {r[0]: r[1] for r in rows}
    problems += _problems([(k, v, actual.get(k)) for k, v in sorted(expected.balances.items()) if actual.get(k) != v],
                          lambda r: f"sub-account {r[0]}: balance {r[2]}, expected {r[1]}")
    return problems


def locked(conn: psycopg.Connection, expected: Expected) -> list[str]:
    """0 <= locked <= balance, and locked is what the open holds still hold."""
    rows = conn.execute(
        "SELECT s.id::text, s.locked, s.balance, coalesce(sum(h.remaining), 0) FROM sub_accounts s "
        "LEFT JOIN holds h ON h.sub_account_id = s.id AND h.status = 'open' GROUP BY s.id "
        "HAVING s.locked < 0 OR s.locked > s.balance OR s.locked <> coalesce(sum(h.remaining), 0)").fetchall()
    return _problems(rows, lambda r: f"sub-account {r[0]}: locked {r[1]}, balance {r[2]}, open holds {r[3]}")


def events_once(conn: psycopg.Connection, expected: Expected) -> list[str]:
    """Each distinct valid event applied, exactly those, and each fill booked exactly its two legs."""
    applied = {r[0] for r in conn.execute("SELECT event_id FROM processed_events WHERE outcome = 'applied'")}
    problems = _problems(sorted(expected.applied_events - applied), lambda e: f"event {e} published, not applied")
    problems += _problems(sorted(applied - expected.applied_events), lambda e: f"event {e} applied, never published")
    legs = dict(conn.execute("SELECT event_id, count(*) FROM transactions WHERE event_id IS NOT NULL "
                             "GROUP BY event_id").fetchall())

    def wanted(event_id: str) -> int:
        return 2 if event_id in expected.fills else 0

    wrong = sorted((e, legs.get(e, 0)) for e in expected.fills | set(legs) if legs.get(e, 0) != wanted(e))
    problems += _problems(wrong, lambda r: f"event {r[0]}: {r[1]} legs booked, expected {wanted(r[0])}")
    return problems


def dead_letters(conn: psycopg.Connection, expected: Expected) -> list[str]:
    """One dead letter for each poison message, and none for anything else."""
    rows = conn.execute("SELECT msg_id, reason FROM dead_letters").fetchall()
    found, wanted, reasons = Counter(r[0] for r in rows), Counter(expected.poison), dict(rows)
    return (_problems(sorted((wanted - found).elements()), lambda m: f"poison {m}: no dead letter")
            + _problems(sorted((found - wanted).elements(), key=str),
                        lambda m: f"dead letter {m} is no poison: {reasons[m]}"))


def acknowledged_writes(conn: psycopg.Connection, expected: Expected) -> list[str]:
    """Each acknowledged write is in the ledger exactly once, under the id its 201 named; each refused one is not;
    an unresolved one at most once. Writes are found by the Idempotency-Key the load put in their `info`."""
    booked = Counter(dict(conn.execute(
        "SELECT info->>'chaos', count(*) FROM transactions WHERE info ? 'chaos' AND trading_log_id IS NULL "
        "GROUP BY 1").fetchall()))
    booked.update(dict(conn.execute(
        "SELECT info->>'chaos', count(*) FROM trading_logs WHERE info ? 'chaos' GROUP BY 1").fetchall()))
    ids = {r[0] for r in conn.execute(
        "SELECT id::text FROM transactions WHERE info ? 'chaos' AND trading_log_id IS NULL "
        "UNION ALL SELECT id::text FROM trading_logs WHERE info ? 'chaos'")}
    wrong = []
    for op in expected.operations:
        times = booked.get(op.key, 0)
        if op.outcome == "acknowledged" and (times != 1 or not set(op.ids) <= ids):
            wrong.append(f"{op.kind} {op.key} acknowledged ({op.ids}), booked {times} times")
        elif op.outcome == "refused" and times:
            wrong.append(f"{op.kind} {op.key} refused, booked {times} times")
        elif op.outcome.startswith("unexpected"):
            wrong.append(f"{op.kind} {op.key} answered {op.outcome}")
        elif times > 1:
            wrong.append(f"{op.kind} {op.key} {op.outcome}, booked {times} times")
    known = {op.key for op in expected.operations}
    wrong += [f"write {key} booked, never sent" for key in sorted(set(booked) - known)]
    return _problems(wrong, str)


SQL_CHECKS = {"ledger": ledger, "locked": locked, "events once": events_once, "dead letters = poison": dead_letters,
              "acknowledged writes": acknowledged_writes}


def check(conn: psycopg.Connection, expected: Expected) -> dict[str, list[str]]:
    return {name: run(conn, expected) for name, run in SQL_CHECKS.items()}


def server_errors(errors: list[tuple[float, int, str]], pg_down: list[tuple[float, float]],
                  grace: float) -> list[str]:
    """A 503 is allowed while PostgreSQL is stopped and for `grace` seconds after it accepts connections again (each
    worker's pool finds its dead connections once); any other 5xx, or a 503 at another time, is a failure."""
    def allowed(at: float, status: int) -> bool:
        return status == 503 and any(start <= at <= end + grace for start, end in pg_down)
    return _problems([e for e in errors if not allowed(e[0], e[1])], lambda e: f"{e[1]} {e[2]}")
