from db import balance_history, engine, sub_accounts
from generated.models import BalanceHistory, SubAccount, SubAccountList, Transaction
from handlers import caller, model, money_post, page
from tiris import metrics


def list_sub_accounts(token_info, limit=100, cursor=None, user_id=None, exchange_id=None, symbol=None):
    with engine.reading() as conn:
        return page(SubAccountList, SubAccount, sub_accounts.list_page(
            conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id, exchange_id=exchange_id,
            symbol=symbol))


def create_sub_account(body, token_info):
    who = caller(token_info)
    return money_post(who, body, 201, lambda conn: model(SubAccount, sub_accounts.create(conn, who, body)))


def get_sub_account(sub_account_id, token_info):
    with engine.reading() as conn:
        return model(SubAccount, sub_accounts.get(conn, caller(token_info), sub_account_id))


def update_sub_account(sub_account_id, body, token_info):
    with engine.transaction() as conn:
        return model(SubAccount, sub_accounts.update(conn, caller(token_info), sub_account_id, body))


def delete_sub_account(sub_account_id, token_info):
    with engine.transaction() as conn:
        sub_accounts.delete(conn, caller(token_info), sub_account_id)
    return None, 204


def deposit_to_sub_account(sub_account_id, body, token_info):
    who = caller(token_info)
    result = money_post(who, body, 201, lambda conn: model(
        Transaction, sub_accounts.move(conn, who, sub_account_id, "deposit", body)))
    metrics.DEPOSITS.inc()
    return result


def withdraw_from_sub_account(sub_account_id, body, token_info):
    who = caller(token_info)
    return money_post(who, body, 201, lambda conn: model(
        Transaction, sub_accounts.move(conn, who, sub_account_id, "withdraw", body)))


def get_sub_account_balance_history(sub_account_id, bucket, token_info, start_time=None, end_time=None):
    with engine.reading() as conn:
        return model(BalanceHistory, balance_history.history(
            conn, caller(token_info), sub_account_id, bucket, start_time, end_time))
