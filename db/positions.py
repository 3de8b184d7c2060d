"""Positions, written with the bookings that change them: DESIGN §9's figures cost the same to read at any size.

db/booking.py reads the positions of the sub-accounts it locks (`reading`, with its other reads) and the effects of
the legs its reversals name (`reading_effects`), and calls `apply` once in its write phase, in the same
transaction, with what it booked and what they found. From the booked legs alone (so the migration's backfill,
`rebuild`, goes the same way):
- a trade's base leg (a trade leg whose sub-account is not in the quote currency) buys or sells for its position,
  which it opens if there is none (with the sub-account's balance before it, at no cost);
- any other leg on a sub-account that has a position (a deposit, a withdrawal, an adjustment, a leg of another
  pair) is a transfer of the base asset, and a reversing leg applies the opposite of what the leg it reverses did.
What each leg did is kept (`position_effects`, by transaction id), so that a reversal undoes exactly that. A
position's quantity is always its sub-account's balance; `apply` checks it.

One statement reads the positions of the sub-accounts locked (and a second one the effects of the legs reversed,
only when the batch reverses something); an insert per table writes the effects, the positions, the day rows and
the per-source rows of the whole batch. The rules themselves are db/cost_basis.py.
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from db import bulk, engine
from db.cost_basis import Effect, Position, buy, rounded, sell, transfer
from db.legs import MONEY_CONTEXT
from generated.models import TradeType

TRADE_REASONS = frozenset(kind.value for kind in TradeType)
EFFECT_FIGURES = ("quantity", "cost", "realized_pnl", "fees", "volume", "trades", "wins", "losses")
FIGURES = ("quantity", "cost", "realized_pnl", "fees", "volume", "trades", "wins", "losses", "last_price")


@dataclass
class Held:
    """A position with what it belongs to."""
    sub_account_id: uuid.UUID
    user_id: uuid.UUID
    exchange_id: uuid.UUID
    symbol: str
    quote_symbol: str
    position: Position


@dataclass(frozen=True)
class Group:
    """The legs one entry booked (a trade's base and quote, a transfer's one leg, a reversal's legs)."""
    rows: list[dict]
    source: str | None = None


@dataclass
class Changes:
    """What a batch did to positions: the effects in booking order, and the positions as it left them."""
    effects: list[tuple[dict, Effect, str | None]] = field(default_factory=list)  # (leg, effect, source)
    held: dict[uuid.UUID, Held] = field(default_factory=dict)
    days: dict[tuple[uuid.UUID, dt.date], dict] = field(default_factory=dict)
    sources: dict[tuple[uuid.UUID, str], dict] = field(default_factory=dict)


def _base_leg(rows: list[dict], symbols: dict[uuid.UUID, str]) -> dict | None:
    return next((row for row in rows if row["reason"] in TRADE_REASONS and row["price"] is not None
                 and symbols.get(row["sub_account_id"]) != row["quote_symbol"]), None)


def _delta(row: dict) -> Decimal:
    return row["amount"] if row["direction"] == "credit" else -row["amount"]


def trade_effect(position: Position, base: dict, quote: dict | None) -> Effect:
    """What a trade's legs do to the base's position. A base fee is on the base leg, a quote fee on the quote leg;
    a sell whose quote fee took all of the proceeds booked no quote leg (its fee is then the whole notional)."""
    price, base_fee = base["price"], base["fee"] or Decimal(0)
    with localcontext(MONEY_CONTEXT):
        if base["direction"] == "credit":
            notional = rounded(price * (base["amount"] + base_fee))
            quote_fee = quote["fee"] or Decimal(0)
            return buy(position, received=base["amount"], paid=quote["amount"],
                       fee_value=quote_fee + rounded(base_fee * price), notional=notional, price=price)
        notional = rounded(price * (base["amount"] - base_fee))
        proceeds = quote["amount"] if quote else Decimal(0)
        quote_fee = (quote["fee"] or Decimal(0)) if quote else notional
        return sell(position, delivered=base["amount"], proceeds=proceeds,
                    fee_value=quote_fee + rounded(base_fee * price), notional=notional, price=price)


def plan(groups: list[Group], symbols: dict[uuid.UUID, str], held: dict[uuid.UUID, Held],
         recorded: dict[uuid.UUID, tuple[Effect, str | None]]) -> Changes:
    """The effects of the booked groups on the positions `held` (pure). `symbols` gives each sub-account's asset;
    `recorded` the effects of the legs that reversing legs reverse."""
    changes = Changes(held=held)
    with localcontext(MONEY_CONTEXT):
        for group in groups:
            base = _base_leg(group.rows, symbols)
            for row in group.rows:
                account_id = row["sub_account_id"]
                current = changes.held.get(account_id)
                source = group.source
                if row is base:
                    if current is None:
                        current = Held(account_id, row["user_id"], row["exchange_id"],
                                       f"{symbols[account_id]}/{row['quote_symbol']}", row["quote_symbol"],
                                       Position(quantity=row["closing_balance"] - _delta(row)))
                        changes.held[account_id] = current
                    quote = next((r for r in group.rows if r is not row and r["reason"] == row["reason"]), None)
                    effect = trade_effect(current.position, row, quote)
                elif current is None:
                    continue
                elif (undone := recorded.get(row.get("reverses_transaction_id"))) is not None:
                    effect, source = undone[0].undone(), undone[1]
                else:
                    effect, source = transfer(current.position, _delta(row)), None
                current.position = current.position.apply(effect)
                if current.position.quantity != row["closing_balance"]:
                    raise RuntimeError(f"position drift on sub-account {account_id}")
                changes.effects.append((row, effect, source))
                sums = (effect.realized_pnl, effect.fees, effect.volume, effect.trades, effect.wins, effect.losses)
                day = _day(changes, row, current)
                day["sums"] = [a + b for a, b in zip(day["sums"], sums)]
                position = current.position
                day.update(quantity=position.quantity, cost=position.cost,
                           cumulative_realized_pnl=position.realized_pnl, last_price=position.last_price)
                if effect.trades and source is not None:
                    line = changes.sources.setdefault((account_id, source), {
                        "sub_account_id": account_id, "source": source, "user_id": current.user_id,
                        "quote_symbol": current.quote_symbol, "symbol": current.symbol, "sums": [0] * 6})
                    line["sums"] = [a + b for a, b in zip(line["sums"], sums)]
    for row in (*changes.days.values(), *changes.sources.values()):
        row.update(zip(SUMS, row.pop("sums")))
    return changes


SUMS = ("realized_pnl", "fees", "volume", "trades", "wins", "losses")


def _day(changes: Changes, row: dict, held: Held) -> dict:
    key = (held.sub_account_id, row["timestamp"].astimezone(dt.timezone.utc).date())
    day = changes.days.get(key)
    if day is None:
        day = changes.days[key] = {"sub_account_id": key[0], "day": key[1], "user_id": held.user_id,
                                   "quote_symbol": held.quote_symbol, "sums": [0] * 6}
    return day


# --- the database side ---------------------------------------------------------------------------------------------

_UUID = UUID(as_uuid=True)
_READ_POSITIONS = sa.text("SELECT sub_account_id, user_id, exchange_id, symbol, quote_symbol, " + ", ".join(FIGURES)
                          + " FROM positions WHERE sub_account_id = ANY(:ids)").bindparams(
    sa.bindparam("ids", type_=bulk.Array(_UUID)))
_READ_EFFECTS = sa.text("SELECT transaction_id, source, " + ", ".join(EFFECT_FIGURES)
                        + " FROM position_effects WHERE transaction_id = ANY(:ids)").bindparams(
    sa.bindparam("ids", type_=bulk.Array(_UUID)))


def reading(account_ids) -> engine.Read:
    """The positions of these sub-accounts (read with them locked: only a booking that holds them writes them)."""
    if not account_ids:
        return engine.nothing({})
    return engine.Read(_READ_POSITIONS, {"ids": list(account_ids)}, lambda rows: {
        row.sub_account_id: Held(row.sub_account_id, row.user_id, row.exchange_id, row.symbol, row.quote_symbol,
                                 Position(*(getattr(row, f) for f in FIGURES))) for row in rows})


def reading_effects(transaction_ids) -> engine.Read:
    """What each of these legs did to its position, as recorded (the legs a batch's reversals may undo)."""
    if not transaction_ids:
        return engine.nothing({})
    return engine.Read(_READ_EFFECTS, {"ids": list(transaction_ids)}, lambda rows: {
        row.transaction_id: (Effect(*(getattr(row, f) for f in EFFECT_FIGURES)), row.source) for row in rows})


def _unnest(prefix: str, columns: dict[str, str]) -> tuple[str, str]:
    """(column list, SELECT ... FROM unnest(...)) for arrays bound as %(prefix_column)s."""
    names = ", ".join(columns)
    arrays = ", ".join(f"%({prefix}_{name})s::{kind}[]" for name, kind in columns.items())
    return names, f"SELECT * FROM unnest({arrays}) AS u({names})"


_TYPES = {"uuid": UUID(as_uuid=True), "text": sa.Text(), "numeric": sa.Numeric(), "bigint": sa.BigInteger(),
          "date": sa.Date(), "timestamptz": sa.DateTime(timezone=True)}
_SUMS = {"realized_pnl": "numeric", "fees": "numeric", "volume": "numeric", "trades": "bigint", "wins": "bigint",
         "losses": "bigint"}
_EFFECTS = {"transaction_id": "uuid", "timestamp": "timestamptz", "user_id": "uuid", "sub_account_id": "uuid",
            "source": "text", "quantity": "numeric", "cost": "numeric", **_SUMS}
_POSITIONS = {"sub_account_id": "uuid", "user_id": "uuid", "exchange_id": "uuid", "symbol": "text",
              "quote_symbol": "text", "quantity": "numeric", "cost": "numeric", **_SUMS, "last_price": "numeric"}
_DAYS = {"sub_account_id": "uuid", "day": "date", "user_id": "uuid", "quote_symbol": "text", **_SUMS,
         "quantity": "numeric", "cost": "numeric", "cumulative_realized_pnl": "numeric", "last_price": "numeric"}
_SOURCES = {"sub_account_id": "uuid", "source": "text", "user_id": "uuid", "quote_symbol": "text", "symbol": "text",
            **_SUMS}


def _write_statements() -> dict[str, str]:
    """An insert per table, by prefix. Four statements rather than one: one would bind more arrays than psycopg
    remembers the conversion of (50), so each batch paid for parsing its text again; in a booking's pipeline four
    cost no more round trips than one."""
    def added(table: str) -> str:
        return ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in _SUMS)

    statements = {}
    for prefix, table, columns, conflict in (
            ("e", "position_effects", _EFFECTS, ""),
            ("p", "positions", _POSITIONS, "ON CONFLICT (sub_account_id) DO UPDATE SET " + ", ".join(
                f"{name} = excluded.{name}" for name in ("quantity", "cost", *_SUMS, "last_price"))
             + ", updated_at = now()"),
            ("d", "position_days", _DAYS, "ON CONFLICT (sub_account_id, day) DO UPDATE SET " + added("position_days")
             + ", " + ", ".join(f"{name} = excluded.{name}"
                                for name in ("quantity", "cost", "cumulative_realized_pnl", "last_price"))),
            ("s", "position_sources", _SOURCES, "ON CONFLICT (sub_account_id, source) DO UPDATE SET "
             + added("position_sources"))):
        names, select = _unnest(prefix, columns)
        statements[prefix] = f"INSERT INTO {table} ({names}) {select} {conflict}"
    return statements


_WRITES = _write_statements()


def write(conn: sa.Connection, changes: Changes, touched: set[uuid.UUID] | None = None) -> None:
    """Writes the batch's effects, the positions it changed, its day rows and its per-source rows, at once."""
    if not changes.effects:
        return
    touched = touched if touched is not None else {row["sub_account_id"] for row, _, _ in changes.effects}
    effects = [{**{name: row[name] for name in ("timestamp", "user_id", "sub_account_id")},
                "transaction_id": row["id"], "source": source,
                **{name: getattr(effect, name) for name in EFFECT_FIGURES}}
               for row, effect, source in changes.effects]
    held = [{"sub_account_id": h.sub_account_id, "user_id": h.user_id, "exchange_id": h.exchange_id,
             "symbol": h.symbol, "quote_symbol": h.quote_symbol,
             **{name: getattr(h.position, name) for name in FIGURES}}
            for account_id, h in changes.held.items() if account_id in touched]
    for prefix, columns, rows in (("e", _EFFECTS, effects), ("p", _POSITIONS, held),
                                  ("d", _DAYS, list(changes.days.values())),
                                  ("s", _SOURCES, list(changes.sources.values()))):
        if rows:
            arrays = {f"{prefix}_{name}": bulk.literal([row[name] for row in rows], _TYPES[kind])
                      for name, kind in columns.items()}
            conn.exec_driver_sql(_WRITES[prefix], arrays)


def apply(conn: sa.Connection, entries, outcomes, accounts, found: tuple[dict[uuid.UUID, Held], dict]) -> None:
    """The positions' side of a booked batch (db/booking.py calls it once, after the ledger rows are written, with
    what `reading` and `reading_effects` found for the sub-accounts it locked and the legs its reversals name)."""
    groups = []
    for entry, outcome in zip(entries, outcomes):
        rows = getattr(outcome, "transactions", None)
        if rows:
            groups.append(Group(rows, _source(entry)))
    if not groups:
        return
    symbols = {row["sub_account_id"]: accounts[row["sub_account_id"]].symbol for group in groups for row in group.rows}
    write(conn, plan(groups, symbols, *found))


def _source(entry) -> str | None:
    fill = getattr(entry.command, "fill", None)
    if fill is not None:
        return fill.order.source
    return entry.log.source.value if entry.log else None


def rebuild(conn: sa.Connection, chunk: int = 10000) -> None:
    """Positions from the whole ledger, oldest leg first, through the same rules (the migration's backfill)."""
    symbols = dict(conn.execute(sa.text("SELECT id, symbol FROM sub_accounts")).all())
    rows = conn.execute(sa.text(
        "SELECT t.id, t.timestamp, t.user_id, t.exchange_id, t.sub_account_id, t.direction, t.reason, t.amount, "
        "t.closing_balance, t.price, t.quote_symbol, t.fee, t.trading_log_id, r.transaction_id AS "
        "reverses_transaction_id, coalesce(l.info ->> 'bot', l.source) AS source "
        "FROM transactions t LEFT JOIN reversals r ON r.reversed_by = t.id "
        "LEFT JOIN trading_logs l ON l.id = t.trading_log_id AND l.timestamp = t.timestamp "
        # only the sub-accounts that took part in a priced trade can hold or pay for a position
        "WHERE t.sub_account_id IN (SELECT DISTINCT sub_account_id FROM transactions WHERE price IS NOT NULL) "
        "ORDER BY t.timestamp, t.trading_log_id, t.id").execution_options(stream_results=True, yield_per=chunk)
    ).mappings()
    reversed_ids = set(conn.execute(sa.text("SELECT transaction_id FROM reversals")).scalars())
    held: dict[uuid.UUID, Held] = {}
    recorded: dict[uuid.UUID, tuple[Effect, str | None]] = {}  # only of the legs that were reversed
    pending: list[Group] = []
    group: list[dict] = []

    def flush() -> None:
        changes = plan(pending, symbols, held, recorded)
        recorded.update((row["id"], (effect, source)) for row, effect, source in changes.effects
                        if row["id"] in reversed_ids)
        write(conn, changes, {row["sub_account_id"] for row, _, _ in changes.effects})
        pending.clear()

    for row in rows:
        row = dict(row)
        if group and not (row["trading_log_id"] and (row["timestamp"], row["trading_log_id"]) == (
                group[0]["timestamp"], group[0]["trading_log_id"])):
            pending.append(Group(group, group[0]["source"]))
            group = []
            if len(pending) >= chunk:
                flush()
        group.append(row)
    if group:
        pending.append(Group(group, group[0]["source"]))
    flush()
