from db import balances, replica
from generated.models import Balance, BalanceList
from handlers import as_model, as_page, caller


def get_sub_account_balance(sub_account_id, token_info, at=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_model(Balance, balances.get(conn, who, sub_account_id, at)))


def list_balances(token_info, at=None, limit=100, cursor=None, user_id=None, exchange_id=None, symbol=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_page(BalanceList, Balance, balances.list_page(
        conn, who, at=at, limit=limit, cursor=cursor, user_id=user_id, exchange_id=exchange_id, symbol=symbol)))
