from db import engine, transactions
from generated.models import Transaction, TransactionList
from handlers import as_model, as_page, caller


def list_transactions(token_info, limit=100, cursor=None, user_id=None, sub_account_id=None, exchange_id=None,
                      direction=None, reason=None, start_time=None, end_time=None):
    with engine.reading() as conn:
        return as_page(TransactionList, Transaction, transactions.list_page(
            conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id, sub_account_id=sub_account_id,
            exchange_id=exchange_id, direction=direction, reason=reason, start_time=start_time, end_time=end_time))


def get_transaction(transaction_id, token_info):
    with engine.reading() as conn:
        return as_model(Transaction, transactions.get(conn, caller(token_info), transaction_id))
