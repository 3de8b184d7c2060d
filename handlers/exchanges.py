from db import engine, exchanges
from generated.models import Exchange, ExchangeList
from handlers import audit_trail, caller, model, page


def list_exchanges(token_info, limit=100, cursor=None, user_id=None):
    with engine.reading() as conn:
        return page(ExchangeList, Exchange,
                    exchanges.list_page(conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id))


def create_exchange(body, token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        exchange = exchanges.create(conn, who, body)
        audit_trail(conn, "exchange.created", user_id=who.id, info={"exchange_id": str(exchange["id"])})
        return model(Exchange, exchange), 201


def get_exchange(exchange_id, token_info):
    with engine.reading() as conn:
        return model(Exchange, exchanges.get(conn, caller(token_info), exchange_id))


def update_exchange(exchange_id, body, token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        exchange = exchanges.update(conn, who, exchange_id, body)
        changed = sorted({"api_key", "api_secret"} & body.keys())
        if changed:  # which credentials changed, never their values
            audit_trail(conn, "exchange.keys_changed", user_id=who.id,
                        info={"exchange_id": str(exchange_id), "fields": changed})
        return model(Exchange, exchange)


def delete_exchange(exchange_id, token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        exchanges.delete(conn, who, exchange_id)
        audit_trail(conn, "exchange.deleted", user_id=who.id, info={"exchange_id": str(exchange_id)})
    return None, 204
