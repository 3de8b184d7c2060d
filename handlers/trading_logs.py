from dataclasses import replace

from db import booking, engine, replica, trading_logs
from db.commands import Entry, Log, Reversal, Trade, Transfer
from generated.models import (NoteLogCreate, TradeLogCreate, TradingLog, TradingLogCreate, TradingLogList,
                              TradingLogSource, TradingLogType, TransferLogCreate, TransferType)
from handlers import as_model, as_page, caller, idempotent_write
from handlers.transactions import book_reversal, reversal_request
from tiris import metrics


def list_trading_logs(token_info, limit=100, cursor=None, user_id=None, sub_account_id=None, exchange_id=None,
                      type=None, source=None, start_time=None, end_time=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_page(TradingLogList, TradingLog, trading_logs.list_page(
        conn, who, limit=limit, cursor=cursor, user_id=user_id, sub_account_id=sub_account_id,
        exchange_id=exchange_id, type=type, source=source, start_time=start_time, end_time=end_time)))


def create_trading_log(body, token_info):
    who = caller(token_info)
    entry = _entry(who.id, TradingLogCreate.model_validate(body).root, body)
    result = idempotent_write(who, body, 201, lambda conn: as_model(TradingLog, booking.book_one(conn, entry).log))
    if isinstance(entry.command, Trade):
        metrics.TRADES.inc()
    return result


def _entry(user_id, asked: TradeLogCreate | TransferLogCreate | NoteLogCreate, body: dict) -> Entry:
    """The log and what it books: a trade, a transfer, or nothing (a note)."""
    log = Log(type=TradingLogType(asked.type.value), source=asked.source, exchange_id=asked.exchange_id,
              message=asked.message, event_time=asked.event_time, info=body.get("info", {}))
    if isinstance(asked, TradeLogCreate):
        trade = asked.trade
        return Entry(user_id, Trade(asked.type, asked.exchange_id, trade.base_sub_account_id,
                                    trade.quote_sub_account_id, trade.volume.root, trade.price.root, trade.fee.root,
                                    symbol=trade.symbol), replace(log, trade=body["trade"]))
    if isinstance(asked, TransferLogCreate):
        direction = "credit" if asked.type == TransferType.deposit else "debit"
        transfer = Transfer(asked.sub_account_id, direction, asked.amount.root, asked.type.value,
                            exchange_id=asked.exchange_id)
        return Entry(user_id, transfer, replace(log, sub_account_id=asked.sub_account_id, amount=asked.amount.root))
    return Entry(user_id, None, replace(log, sub_account_id=asked.sub_account_id))


def get_trading_log(trading_log_id, token_info):
    with engine.reading() as conn:
        return as_model(TradingLog, trading_logs.get(conn, caller(token_info), trading_log_id))


def delete_trading_log(trading_log_id, token_info):
    with engine.transaction() as conn:
        trading_logs.delete(conn, caller(token_info), trading_log_id)
    return None, 204


def reverse_trading_log(trading_log_id, token_info, body=None):
    """Reverses every leg the log booked; answers the reversal log."""
    def reverse(conn, who, reason: str | None, info: dict):
        original = trading_logs.get(conn, who, trading_log_id)  # 404 unless the caller's (or the caller is an admin)
        command = Reversal(tuple(original["transaction_ids"]), reason, info)
        booked = book_reversal(conn, who, original["user_id"], command, Log(
            TradingLogType.reversal, TradingLogSource.manual, original["exchange_id"],
            reason or f"Reversal of trading log {original['id']}", sub_account_id=original["sub_account_id"],
            info={**info, "reverses_trading_log_id": str(original["id"])}))
        return as_model(TradingLog, booked.log)
    return reversal_request(token_info, body, reverse)
