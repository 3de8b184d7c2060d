from db import engine, portfolio
from generated.models import PortfolioPerformance, PortfolioPnl, PortfolioSummary
from handlers import as_model, caller


def get_portfolio_summary(token_info, quote=None, user_id=None):
    with engine.reading() as conn:
        return as_model(PortfolioSummary, portfolio.summary(conn, caller(token_info), quote, user_id))


def get_portfolio_pnl(token_info, quote=None, bucket="day", start_time=None, end_time=None, user_id=None):
    with engine.reading() as conn:
        return as_model(PortfolioPnl, portfolio.pnl(conn, caller(token_info), quote, bucket, start_time, end_time,
                                                    user_id))


def get_portfolio_performance(token_info, quote=None, user_id=None):
    with engine.reading() as conn:
        return as_model(PortfolioPerformance, portfolio.performance(conn, caller(token_info), quote, user_id))
