from db import engine, orders, replica
from generated.models import Order, OrderList
from handlers import as_model, as_page, caller


def list_orders(token_info, limit=100, cursor=None, user_id=None, exchange_id=None, sub_account_id=None,
                status=None, symbol=None, start_time=None, end_time=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_page(OrderList, Order, orders.list_page(
        conn, who, limit=limit, cursor=cursor, user_id=user_id, exchange_id=exchange_id,
        sub_account_id=sub_account_id, status=status, symbol=symbol, start_time=start_time, end_time=end_time)))


def get_order(order_id, token_info):
    with engine.reading() as conn:
        return as_model(Order, orders.get(conn, caller(token_info), order_id))
