import uuid
from typing import Callable

from pydantic import BaseModel

from db import booking, engine, replica, transactions
from db.access import Caller
from db.commands import Entry, Log, Reversal
from generated.models import ReversalRequest, TradingLogSource, TradingLogType, Transaction, TransactionList
from handlers import as_model, as_page, audit_trail, caller, idempotent_write


def list_transactions(token_info, limit=100, cursor=None, user_id=None, sub_account_id=None, exchange_id=None,
                      direction=None, reason=None, start_time=None, end_time=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_page(TransactionList, Transaction, transactions.list_page(
        conn, who, limit=limit, cursor=cursor, user_id=user_id, sub_account_id=sub_account_id,
        exchange_id=exchange_id, direction=direction, reason=reason, start_time=start_time, end_time=end_time)))


def get_transaction(transaction_id, token_info):
    with engine.reading() as conn:
        return as_model(Transaction, transactions.get(conn, caller(token_info), transaction_id))


def reverse_transaction(transaction_id, token_info, body=None):
    """Reverses the transaction with the other legs of its trading log; answers the leg that reverses it."""
    def reverse(conn, who: Caller, reason: str | None, info: dict) -> BaseModel:
        original = transactions.get(conn, who, transaction_id)  # 404 unless the caller's (or the caller is an admin)
        log_id = original["trading_log_id"]
        reverses = {"reverses_trading_log_id": str(log_id)} if log_id else {
            "reverses_transaction_id": str(original["id"])}
        booked = book_reversal(conn, who, original["user_id"], Reversal((original["id"],), reason, info), Log(
            TradingLogType.reversal, TradingLogSource.manual, original["exchange_id"],
            reason or f"Reversal of transaction {original['id']}",
            sub_account_id=None if log_id else original["sub_account_id"], info={**info, **reverses}))
        return as_model(Transaction, next(row for row in booked.transactions
                                          if row["reverses_transaction_id"] == original["id"]))
    return reversal_request(token_info, body, reverse)


def reversal_request(token_info, body: dict | None, reverse: Callable[..., BaseModel]):
    """A reversal through the HTTP door: `reverse(conn, caller, reason, info)` runs once per Idempotency-Key."""
    who, body = caller(token_info), body or {}
    asked = ReversalRequest.model_validate(body)
    return idempotent_write(who, body, 201, lambda conn: reverse(conn, who, asked.reason, body.get("info", {})))


def book_reversal(conn, who: Caller, owner: uuid.UUID, command: Reversal, log: Log) -> booking.Booked:
    """Books the reversal of the owner's transactions with its log, and audits it (the admin as the actor when an
    admin reversed a user's rows)."""
    booked = booking.book_one(conn, Entry(owner, command, log))
    audit_trail(conn, "transaction.reversed", user_id=owner, actor_id=None if who.id == owner else who.id, info={
        "transaction_ids": [str(row["reverses_transaction_id"]) for row in booked.transactions],
        "reversed_by": [str(row["id"]) for row in booked.transactions],
        "trading_log_id": str(booked.log["id"]), "reason": command.reason})
    return booked
