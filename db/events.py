"""The effects of the bot's events (asyncapi.yaml), each recorded exactly once.

`apply` claims the event id in processed_events and makes the event's effects in the caller's transaction, so
either both are committed or neither is. Money moves through the same operations as the REST door.
"""

import datetime as dt
import uuid
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert

from db import ledger, trading_logs
from db.access import Caller
from db.schema import bot_status, consumer_state, dead_letters, processed_events, sub_accounts
from tiris.errors import NotFound, Unprocessable

NOTE_TYPES = {"orders.created": "order_created", "orders.cancelled": "order_cancelled",
              "orders.failed": "order_failed", "errors": "error", "signals": "signal"}
ORDER_FIELDS = ("order_id", "symbol", "side", "order_type", "base_sub_account_id", "quote_sub_account_id", "amount",
                "price", "reason", "trade_id", "fee", "fee_asset")


def claim(conn: sa.Connection, event: dict, subject: str, stream_seq: int | None) -> bool:
    """Records the event id; False when it was already processed (a duplicate or a replay)."""
    return conn.execute(insert(processed_events).values(
        event_id=event["event_id"], event_type=event["event_type"], user_id=event["user_id"], subject=subject,
        stream_seq=stream_seq).on_conflict_do_nothing().returning(processed_events.c.event_id)).first() is not None


_claim_many = sa.text(
    "INSERT INTO processed_events (event_id, event_type, user_id, subject, stream_seq) "
    "SELECT * FROM unnest(:ids, :types, :users, :subjects, :seqs) ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(sa.bindparam("ids", type_=ARRAY(sa.Text)), sa.bindparam("types", type_=ARRAY(sa.Text)),
             sa.bindparam("users", type_=ARRAY(UUID(as_uuid=True))), sa.bindparam("subjects", type_=ARRAY(sa.Text)),
             sa.bindparam("seqs", type_=ARRAY(sa.BigInteger)))


def claim_many(conn: sa.Connection, claims: list[tuple[dict, str, int | None]]) -> set[str]:
    """Records these (event, subject, stream_seq) in one statement (arrays, not a bind per value); returns the ids
    that were new."""
    if not claims:
        return set()
    return set(conn.execute(_claim_many, {
        "ids": [e["event_id"] for e, _, _ in claims], "types": [e["event_type"] for e, _, _ in claims],
        "users": [uuid.UUID(e["user_id"]) for e, _, _ in claims], "subjects": [subject for _, subject, _ in claims],
        "seqs": [seq for _, _, seq in claims]}).scalars())


# Events that change balances or locks other than by a trade: a set of fills is booked before one of these is applied.
BALANCE_EVENTS = {"balance.updated", "balance.locked", "balance.unlocked"}


def apply_fills(conn: sa.Connection, fills: list[dict]) -> None:
    """Applies several orders.filled events at once, with the effects `apply` gives each, in their order.

    Raises ledger.Refused with the index of the first fill found that can never take effect (nothing is written).
    """
    trading_logs.create_trades(conn, [(_owner(event), _fill_body(event), event["event_id"], event["fee_asset"])
                                      for event in fills])


def _owner(event: dict) -> Caller:
    return Caller(id=uuid.UUID(event["user_id"]), role="user")


def apply(conn: sa.Connection, event: dict) -> dict:
    """Makes the event's effects; raises ApiError (4xx) for an event that can never take effect.

    Returns counters for the consumer's state, e.g. {"balance_drifts": 1}.
    """
    kind = event["event_type"]
    owner = _owner(event)
    if kind == "orders.filled":
        _fill(conn, owner, event)
    elif kind in NOTE_TYPES:
        _note(conn, owner, event, NOTE_TYPES[kind])
    elif kind == "balance.updated":
        return _balance_updated(conn, owner, event)
    elif kind in ("balance.locked", "balance.unlocked"):
        _lock(conn, owner, event, kind == "balance.locked")
    elif kind == "heartbeat":
        _heartbeat(conn, owner, event)
    return {}


def _order_message(event: dict, verb: str) -> str:
    words = [event["side"], event.get("amount"), event["symbol"], "order", event["order_id"], verb]
    return " ".join(word for word in words if word)


def _fill(conn, owner: Caller, event: dict) -> None:
    trading_logs.create(conn, owner, _fill_body(event), event_id=event["event_id"], fee_asset=event["fee_asset"])


def _fill_body(event: dict) -> dict:
    """The fill as the trading log (TradeLogCreate) it books."""
    return {
        "type": "long" if event["side"] == "buy" else "short", "source": "bot", "exchange_id": event["exchange_id"],
        "message": _order_message(event, "filled"), "event_time": event["timestamp"],
        "trade": {"base_sub_account_id": event["base_sub_account_id"],
                  "quote_sub_account_id": event["quote_sub_account_id"], "symbol": event["symbol"],
                  "volume": event["amount"], "price": event["price"], "fee": event["fee"]},
        "info": {"order_id": event["order_id"], "trade_id": event["trade_id"], "fee_asset": event["fee_asset"],
                 "bot": event["source"]},
    }


def _note(conn, owner: Caller, event: dict, log_type: str) -> None:
    if log_type.startswith("order_"):
        message = _order_message(event, log_type.removeprefix("order_"))
        info = {k: event[k] for k in ORDER_FIELDS if k in event}
    else:
        message = event["message"]
        info = {k: event[k] for k in ("code", "severity", "symbol", "signal", "strength") if k in event}
    info.update(event.get("info") or {}, bot=event["source"])
    trading_logs.create(conn, owner, {"type": log_type, "source": "bot", "exchange_id": event["exchange_id"],
                                      "message": message, "event_time": event["timestamp"], "info": info},
                        event_id=event["event_id"])


def _account(conn, owner: Caller, event: dict) -> ledger.Account:
    account_id = uuid.UUID(event["sub_account_id"])
    account = ledger.lock(conn, owner.id, [account_id])[account_id]
    if str(account.exchange_id) != event["exchange_id"] or account.symbol != event["symbol"]:
        raise NotFound("Sub-account not found with this exchange and symbol.",
                       details={"sub_account_id": str(account_id)})
    return account


def _balance_updated(conn, owner: Caller, event: dict) -> dict:
    """The bot's balance is the truth: an adjustment moves ours to it; a different starting point is drift."""
    account = _account(conn, owner, event)
    new_balance, reported_before = Decimal(event["new_balance"]), Decimal(event["previous_balance"])
    drift = reported_before - account.balance
    delta = new_balance - account.balance
    if delta != 0:
        leg = ledger.Leg(account.id, "credit" if delta > 0 else "debit", abs(delta), "adjustment")
        ledger.apply(conn, {account.id: account}, [leg], event_id=event["event_id"],
                     info={"reported_previous_balance": event["previous_balance"], "drift": str(drift)})
    return {"balance_drifts": 1} if drift != 0 else {}


def _lock(conn, owner: Caller, event: dict, locking: bool) -> None:
    account = _account(conn, owner, event)
    amount = Decimal(event["amount"])
    locked = account.locked + amount if locking else account.locked - amount
    if not 0 <= locked <= account.balance:
        raise Unprocessable("The lock would leave `locked` outside 0..balance.", code="LOCK_OUT_OF_RANGE",
                            details={"locked": account.locked, "balance": account.balance})
    conn.execute(sa.update(sub_accounts).where(sub_accounts.c.id == account.id)
                 .values(locked=locked, updated_at=sa.func.clock_timestamp()))


def _heartbeat(conn, owner: Caller, event: dict) -> None:
    values = {"user_id": owner.id, "bot_id": event["bot_id"], "exchange_id": event["exchange_id"],
              "status": event["status"], "version": event.get("version"),
              "last_seen_at": dt.datetime.fromisoformat(event["timestamp"]),
              "last_event_id": event["event_id"], "info": {"uptime_seconds": event.get("uptime_seconds"),
                                                           **(event.get("info") or {})}}
    statement = insert(bot_status).values(**values)
    # An older beat delivered late must not overwrite a newer one.
    conn.execute(statement.on_conflict_do_update(
        index_elements=[bot_status.c.user_id, bot_status.c.bot_id],
        set_={k: statement.excluded[k] for k in values if k not in ("user_id", "bot_id")},
        where=bot_status.c.last_seen_at <= statement.excluded.last_seen_at))


def dead_letter(conn: sa.Connection, *, event_id: str | None, subject: str, stream_seq: int | None, payload: str,
                reason: str, attempts: int) -> bool:
    """Keeps the message with its reason; False if this very message (same sequence and bytes) is kept already."""
    return conn.execute(insert(dead_letters).values(
        event_id=event_id, subject=subject, stream_seq=stream_seq, payload=payload, reason=reason,
        attempts=attempts).on_conflict_do_nothing().returning(dead_letters.c.id)).first() is not None


def count(conn: sa.Connection, consumer: str, **increments) -> None:
    """Adds the batch's counts to the consumer's state row (created on first use)."""
    statement = insert(consumer_state).values(consumer=consumer, **increments)
    set_ = {key: consumer_state.c[key] + statement.excluded[key] for key in increments
            if key in ("processed", "duplicates", "failed", "dead_lettered", "balance_drifts")}
    set_.update({key: statement.excluded[key] for key in increments if key not in set_})
    conn.execute(statement.on_conflict_do_update(index_elements=[consumer_state.c.consumer], set_=set_))


def heartbeat(conn: sa.Connection, consumers: list[str]) -> None:
    """Marks these consumers alive, so readiness can tell an idle consumer from a dead one."""
    for name in consumers:
        count(conn, name, seen_at=sa.func.now())
