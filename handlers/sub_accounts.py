import uuid
from typing import Literal

from db import balance_history, booking, engine, replica, sub_accounts
from db.commands import Entry, Transfer
from generated.models import (BalanceHistory, Deposit, SubAccount, SubAccountCreate, SubAccountList, Transaction,
                              Withdrawal)
from handlers import as_model, as_page, caller, idempotent_write
from tiris import metrics


def list_sub_accounts(token_info, limit=100, cursor=None, user_id=None, exchange_id=None, symbol=None):
    with engine.reading() as conn:
        return as_page(SubAccountList, SubAccount, sub_accounts.list_page(
            conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id, exchange_id=exchange_id,
            symbol=symbol))


def create_sub_account(body, token_info):
    who, new = caller(token_info), SubAccountCreate.model_validate(body)
    return idempotent_write(who, body, 201, lambda conn: as_model(SubAccount, sub_accounts.create(
        conn, who, exchange_id=new.exchange_id, name=new.name, symbol=new.symbol.root,
        opening_balance=new.balance.root if new.balance else 0, info=body.get("info", {}))))


def get_sub_account(sub_account_id, token_info):
    with engine.reading() as conn:
        return as_model(SubAccount, sub_accounts.get(conn, caller(token_info), sub_account_id))


def update_sub_account(sub_account_id, body, token_info):
    with engine.transaction() as conn:
        return as_model(SubAccount, sub_accounts.update(conn, caller(token_info), sub_account_id,
                                                     name=body.get("name"), info=body.get("info")))


def delete_sub_account(sub_account_id, token_info):
    with engine.transaction() as conn:
        sub_accounts.delete(conn, caller(token_info), sub_account_id)
    return None, 204


def _transfer(sub_account_id, body, token_info, asked: Deposit | Withdrawal, direction: Literal["credit", "debit"]):
    """A deposit (credit) or withdrawal (debit) through the sub-account's own endpoint; answers its transaction."""
    who = caller(token_info)
    command = Transfer(uuid.UUID(sub_account_id), direction, asked.amount.root, str(asked.reason),  # the contract's default
                       info=body.get("info", {}))
    return idempotent_write(who, body, 201, lambda conn: as_model(
        Transaction, booking.book_one(conn, Entry(who.id, command)).transactions[0]))


def deposit_to_sub_account(sub_account_id, body, token_info):
    result = _transfer(sub_account_id, body, token_info, Deposit.model_validate(body), "credit")
    metrics.DEPOSITS.inc()
    return result


def withdraw_from_sub_account(sub_account_id, body, token_info):
    return _transfer(sub_account_id, body, token_info, Withdrawal.model_validate(body), "debit")


def get_sub_account_balance_history(sub_account_id, bucket, token_info, start_time=None, end_time=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_model(BalanceHistory, balance_history.history(
        conn, who, sub_account_id, bucket, start_time, end_time)))
