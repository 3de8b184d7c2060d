from db import balances, engine
from generated.models import Balance, BalanceList
from handlers import as_model, as_page, caller


def get_sub_account_balance(sub_account_id, token_info, at=None):
    with engine.reading() as conn:
        return as_model(Balance, balances.get(conn, caller(token_info), sub_account_id, at))


def list_balances(token_info, at=None, limit=100, cursor=None, user_id=None, exchange_id=None, symbol=None):
    with engine.reading() as conn:
        return as_page(BalanceList, Balance, balances.list_page(
            conn, caller(token_info), at=at, limit=limit, cursor=cursor, user_id=user_id, exchange_id=exchange_id,
            symbol=symbol))
