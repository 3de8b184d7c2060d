from db import engine, trading_logs
from generated.models import TradeType, TradingLog, TradingLogList
from handlers import caller, model, money_post, page
from tiris import metrics


def list_trading_logs(token_info, limit=100, cursor=None, user_id=None, sub_account_id=None, exchange_id=None,
                      type=None, source=None, start_time=None, end_time=None):
    with engine.reading() as conn:
        return page(TradingLogList, TradingLog, trading_logs.list_page(
            conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id, sub_account_id=sub_account_id,
            exchange_id=exchange_id, type=type, source=source, start_time=start_time, end_time=end_time))


def create_trading_log(body, token_info):
    who = caller(token_info)
    result = money_post(who, body, 201, lambda conn: model(TradingLog, trading_logs.create(conn, who, body)))
    if body["type"] in set(TradeType):
        metrics.TRADES.inc()
    return result


def get_trading_log(trading_log_id, token_info):
    with engine.reading() as conn:
        return model(TradingLog, trading_logs.get(conn, caller(token_info), trading_log_id))


def delete_trading_log(trading_log_id, token_info):
    with engine.transaction() as conn:
        trading_logs.delete(conn, caller(token_info), trading_log_id)
    return None, 204
