from db import engine, exchanges
from generated.models import Exchange, ExchangeList
from handlers import as_model, as_page, audit_trail, caller

UPDATABLE = ("name", "status", "info", "api_key", "api_secret")  # ExchangeUpdate's fields


def list_exchanges(token_info, limit=100, cursor=None, user_id=None):
    with engine.reading() as conn:
        return as_page(ExchangeList, Exchange,
                    exchanges.list_page(conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id))


def create_exchange(body, token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        exchange = exchanges.create(conn, who, name=body["name"], type_=body["type"], api_key=body["api_key"],
                                    api_secret=body["api_secret"], status=body.get("status", "active"),
                                    info=body.get("info"))
        audit_trail(conn, "exchange.created", user_id=who.id, info={"exchange_id": str(exchange["id"])})
        return as_model(Exchange, exchange), 201


def get_exchange(exchange_id, token_info):
    with engine.reading() as conn:
        return as_model(Exchange, exchanges.get(conn, caller(token_info), exchange_id))


def update_exchange(exchange_id, body, token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        exchange = exchanges.update(conn, who, exchange_id, **{k: body[k] for k in UPDATABLE if k in body})
        changed = sorted({"api_key", "api_secret"} & body.keys())
        if changed:  # which credentials changed, never their values
            audit_trail(conn, "exchange.keys_changed", user_id=who.id,
                        info={"exchange_id": str(exchange_id), "fields": changed})
        return as_model(Exchange, exchange)


def delete_exchange(exchange_id, token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        exchanges.delete(conn, who, exchange_id)
        audit_trail(conn, "exchange.deleted", user_id=who.id, info={"exchange_id": str(exchange_id)})
    return None, 204
