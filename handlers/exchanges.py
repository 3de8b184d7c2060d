from db import engine, exchanges
from generated.models import Exchange, ExchangeList
from handlers import caller, model, page


def list_exchanges(token_info, limit=100, cursor=None, user_id=None):
    with engine.reading() as conn:
        return page(ExchangeList, Exchange,
                    exchanges.list_page(conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id))


def create_exchange(body, token_info):
    with engine.transaction() as conn:
        return model(Exchange, exchanges.create(conn, caller(token_info), body)), 201


def get_exchange(exchange_id, token_info):
    with engine.reading() as conn:
        return model(Exchange, exchanges.get(conn, caller(token_info), exchange_id))


def update_exchange(exchange_id, body, token_info):
    with engine.transaction() as conn:
        return model(Exchange, exchanges.update(conn, caller(token_info), exchange_id, body))


def delete_exchange(exchange_id, token_info):
    with engine.transaction() as conn:
        exchanges.delete(conn, caller(token_info), exchange_id)
    return None, 204
