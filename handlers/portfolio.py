from db import portfolio, replica
from generated.models import PortfolioPerformance, PortfolioPnl, PortfolioSummary
from handlers import as_model, caller


def get_portfolio_summary(token_info, quote=None, user_id=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_model(PortfolioSummary, portfolio.summary(conn, who, quote, user_id)))


def get_portfolio_pnl(token_info, quote=None, bucket="day", start_time=None, end_time=None, user_id=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_model(PortfolioPnl, portfolio.pnl(
        conn, who, quote, bucket, start_time, end_time, user_id)))


def get_portfolio_performance(token_info, quote=None, user_id=None):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_model(PortfolioPerformance, portfolio.performance(
        conn, who, quote, user_id)))
