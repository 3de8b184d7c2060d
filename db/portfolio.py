"""Portfolio analytics (DESIGN §9), read from what booking wrote (db/positions.py): a summary, PnL per day, week or
month with the equity curve's drawdown and ratios, and performance per pair and source.

Each read is a few index lookups per position and per day of the range, whatever the size of the ledger:
positions hold the running figures, `position_days` what each UTC day added and how it left each position, and
`position_sources` the totals per pair and source. Equity at an instant is the balance of the user's sub-accounts in
the quote currency at that instant (the closing-balance chain, db/balances.py) plus each position's quantity at its
last price, both as that instant left them.
"""

import datetime as dt
import uuid
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import sqlalchemy as sa

from db import pagination
from db.access import Caller
from db.balances import known_balance
from db.cost_basis import Position, rounded
from db.errors import Forbidden, Invalid, field_error
from db.legs import MONEY_CONTEXT
from db.schema import position_days, position_sources, positions, sub_accounts

DEFAULT_QUOTE = "USDT"  # for a user who has not traded yet
DEFAULT_BUCKETS = {"day": 30, "week": 12, "month": 12}
MAX_DAYS = 3660  # a range of at most ten years, whatever the bucket
MIN_RETURNS = 7  # the ratios need at least a week of daily returns
RATIO = Decimal("0.000001")  # ratios and relative figures: 6 places, half-even
DAYS_A_YEAR = 365  # crypto markets trade every day
WEEK_ORIGIN = dt.date(2000, 1, 3)  # a Monday: weeks start on Mondays (ISO 8601)
ZERO = Decimal(0)


def subject(caller: Caller, user_id) -> uuid.UUID:
    """Whose figures: the caller's own; an admin may name any user."""
    if user_id is None:
        return caller.id
    wanted = uuid.UUID(str(user_id))
    if wanted != caller.id and not caller.is_admin:
        raise Forbidden("Only admins may ask for another user's figures.")
    return wanted


def _quote(conn: sa.Connection, user: uuid.UUID, quote: str | None) -> str:
    """The quote asked for, else the user's most traded quote currency (most trades, then alphabetical)."""
    if quote:
        return quote
    p = positions.c
    found = conn.execute(sa.select(p.quote_symbol).where(p.user_id == user).group_by(p.quote_symbol)
                         .order_by(sa.func.sum(p.trades).desc(), p.quote_symbol).limit(1)).scalar()
    return found or DEFAULT_QUOTE


def _ratio(value: Decimal) -> Decimal:
    return value.quantize(RATIO, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


def _position(row) -> Position:
    return Position(row.quantity, row.cost, row.realized_pnl, row.fees, row.volume, row.trades, row.wins,
                    row.losses, row.last_price)


def summary(conn: sa.Connection, caller: Caller, quote: str | None = None, user_id=None) -> dict:
    user = subject(caller, user_id)
    quote = _quote(conn, user, quote)
    p, s = positions.c, sub_accounts.c
    rows = conn.execute(sa.select(positions).where(p.user_id == user, p.quote_symbol == quote)
                        .order_by(p.symbol, p.sub_account_id)).all()
    cash, as_of = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(s.balance), 0), sa.func.now()).where(
        s.user_id == user, s.symbol == quote, s.deleted_at.is_(None))).one()
    totals = {"realized_pnl": ZERO, "unrealized_pnl": ZERO, "fees": ZERO, "equity": cash, "trades": 0, "wins": 0,
              "losses": 0}
    shown = []
    with localcontext(MONEY_CONTEXT):
        for row in rows:
            position = _position(row)
            unrealized = position.unrealized_pnl(position.last_price)
            totals["realized_pnl"] += position.realized_pnl
            totals["unrealized_pnl"] += unrealized
            totals["fees"] += position.fees
            totals["equity"] += rounded(position.quantity * (position.last_price or ZERO))
            for name in ("trades", "wins", "losses"):
                totals[name] += getattr(position, name)
            if position.quantity > 0:
                shown.append({"sub_account_id": row.sub_account_id, "exchange_id": row.exchange_id,
                              "symbol": row.symbol, "quantity": position.quantity,
                              "average_cost": position.average_cost, "cost": position.cost,
                              "last_price": position.last_price, "unrealized_pnl": unrealized,
                              "realized_pnl": position.realized_pnl})
    return {"user_id": user, "quote": quote, **totals, "positions": shown, "as_of": as_of}


# --- PnL over time ---------------------------------------------------------------------------------------------------

def bucket_start(day: dt.date, bucket: str) -> dt.date:
    if bucket == "week":
        return day - dt.timedelta(days=(day - WEEK_ORIGIN).days % 7)
    if bucket == "month":
        return day.replace(day=1)
    return day


def next_bucket(day: dt.date, bucket: str) -> dt.date:
    if bucket == "week":
        return day + dt.timedelta(days=7)
    if bucket == "month":
        return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return day + dt.timedelta(days=1)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def window(bucket: str, start_time: str | None, end_time: str | None, now: dt.datetime) -> tuple[dt.date, dt.date]:
    """[start, end) as whole buckets (UTC days; weeks from Monday; calendar months)."""
    try:
        return _window(bucket, start_time, end_time, now)
    except OverflowError:  # a range that reaches past the dates this service handles once widened to buckets
        raise Invalid("The range reaches beyond the dates this service handles.",
                      details=[field_error("query/end_time", "out of range")]) from None


def _window(bucket: str, start_time: str | None, end_time: str | None, now: dt.datetime) -> tuple[dt.date, dt.date]:
    end = pagination.query_time("end_time", end_time) or now
    start = pagination.query_time("start_time", start_time)
    end = end.astimezone(dt.timezone.utc)
    end_day = bucket_start(end.date(), bucket)
    if _midnight(end_day) != end:
        end_day = next_bucket(end_day, bucket) if end_day < dt.date.max - dt.timedelta(days=31) else dt.date.max
    if start is None:
        start_day = end_day
        for _ in range(DEFAULT_BUCKETS[bucket]):
            start_day = bucket_start(start_day - dt.timedelta(days=1), bucket)
    else:
        start_day = bucket_start(start.astimezone(dt.timezone.utc).date(), bucket)
    if start_day >= end_day:
        raise Invalid("start_time must be before end_time.",
                      details=[field_error("query/start_time", "not before end_time")])
    if (end_day - start_day).days > MAX_DAYS:
        raise Invalid(f"At most {MAX_DAYS} days per request.",
                      details=[field_error("query/start_time", f"more than {MAX_DAYS} days before end_time")])
    return start_day, end_day


def _opening(conn: sa.Connection, user: uuid.UUID, quote: str, start: dt.date) -> dict[uuid.UUID, tuple]:
    """Each position as the days before `start` left it: (quantity, cost, cumulative realized, last price)."""
    p, d = positions.c, position_days.c
    before = (sa.select(d.quantity, d.cumulative_realized_pnl, d.last_price)
              .where(d.sub_account_id == p.sub_account_id, d.day < start)
              .order_by(d.day.desc()).limit(1).lateral("before"))
    rows = conn.execute(sa.select(p.sub_account_id, before.c.quantity, before.c.cumulative_realized_pnl,
                                  before.c.last_price)
                        .select_from(positions.outerjoin(before, sa.true()))
                        .where(p.user_id == user, p.quote_symbol == quote)).all()
    return {row.sub_account_id: (row.quantity or ZERO, row.cumulative_realized_pnl or ZERO, row.last_price)
            for row in rows}


def _cash_at_day_ends(conn: sa.Connection, user: uuid.UUID, quote: str, start: dt.date,
                      end: dt.date) -> list[Decimal]:
    """The sum of the quote sub-accounts' balances at `start` and at the end of each day of [start, end)."""
    s, at = sub_accounts.c, sa.literal_column("m.at")
    cash = sa.select(sa.func.coalesce(sa.func.sum(sa.func.coalesce(known_balance(s.id, at, inclusive=False), 0)), 0)
                     ).where(s.user_id == user, s.symbol == quote).scalar_subquery()
    moments = sa.text("generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz), interval '1 day') "
                      "AS m(at)").bindparams(start=_midnight(start), end=_midnight(end))
    return [row[1] for row in conn.execute(sa.select(at, cash).select_from(moments).order_by(at)).all()]


def pnl(conn: sa.Connection, caller: Caller, quote: str | None = None, bucket: str = "day",
        start_time: str | None = None, end_time: str | None = None, user_id=None) -> dict:
    user = subject(caller, user_id)
    quote = _quote(conn, user, quote)
    start, end = window(bucket, start_time, end_time, conn.execute(sa.select(sa.func.now())).scalar())
    held = _opening(conn, user, quote, start)
    d = position_days.c
    days: dict[dt.date, list] = {}
    for row in conn.execute(sa.select(position_days).where(
            d.user_id == user, d.quote_symbol == quote, d.day >= start, d.day < end).order_by(d.day)).all():
        days.setdefault(row.day, []).append(row)
    cash = _cash_at_day_ends(conn, user, quote, start, end)

    def state() -> tuple[Decimal, Decimal]:
        """(cumulative realized, value of the positions at their last prices), as `held` stands."""
        with localcontext(MONEY_CONTEXT):
            return (sum((c for _, c, _ in held.values()), ZERO),
                    sum((rounded(q * (price or ZERO)) for q, _, price in held.values()), ZERO))

    _, value = state()
    with localcontext(MONEY_CONTEXT):
        curve = [(_midnight(start), cash[0] + value)]  # equity at the start, then at each day's end
    items, current, day, index = [], None, start, 0
    while day < end:
        if current is None or bucket_start(day, bucket) != current["bucket_start"].date():
            current = {"bucket_start": _midnight(bucket_start(day, bucket)), "realized_pnl": ZERO, "fees": ZERO,
                       "volume": ZERO, "trades": 0, "wins": 0, "losses": 0}
            items.append(current)
        with localcontext(MONEY_CONTEXT):
            for row in days.get(day, []):
                for name in ("realized_pnl", "fees", "volume", "trades", "wins", "losses"):
                    current[name] += getattr(row, name)
                held[row.sub_account_id] = (row.quantity, row.cumulative_realized_pnl, row.last_price)
            cumulative, value = state()
            index += 1
            equity = cash[index] + value
        day += dt.timedelta(days=1)
        curve.append((_midnight(day), equity))
        current.update(bucket_end=_midnight(day), cumulative_realized_pnl=cumulative, equity=equity)
    return {"user_id": user, "quote": quote, "bucket": bucket, "start_time": _midnight(start),
            "end_time": _midnight(end), "opening_equity": curve[0][1], "items": items,
            "max_drawdown": max_drawdown(curve), **ratios([equity for _, equity in curve])}


def max_drawdown(curve: list[tuple[dt.datetime, Decimal]]) -> dict:
    """The largest fall of equity from a peak to a later trough (absolute), with its relative size (fall / peak,
    6 places) and instants; zero, without instants, when equity never fell."""
    worst = {"absolute": ZERO, "relative": ZERO, "peak_time": None, "trough_time": None}
    peak_at, peak = None, None
    with localcontext(MONEY_CONTEXT):
        for at, equity in curve:
            if peak is None or equity > peak:
                peak_at, peak = at, equity
                continue
            fall = peak - equity
            if fall > worst["absolute"]:
                worst = {"absolute": fall, "relative": _ratio(fall / peak) if peak > 0 else ZERO,
                         "peak_time": peak_at, "trough_time": at}
    return worst


def ratios(equities: list[Decimal]) -> dict:
    """Sharpe and Sortino ratios of the daily equity returns r = E(d) / E(d-1) - 1 (days after one with no equity
    are left out), annualised by sqrt(365), with a risk-free rate of 0:
    Sharpe = mean(r) / stdev(r) * sqrt(365), stdev with n - 1; Sortino = mean(r) / sqrt(sum(min(r, 0)^2) / n) *
    sqrt(365). None with fewer than MIN_RETURNS returns, or when the deviation is 0."""
    with localcontext(MONEY_CONTEXT):
        returns = [b / a - 1 for a, b in zip(equities, equities[1:]) if a > 0]
        if len(returns) < MIN_RETURNS:
            return {"sharpe_ratio": None, "sortino_ratio": None, "returns": len(returns)}
        n = len(returns)
        mean = sum(returns) / n
        stdev = (sum((r - mean) ** 2 for r in returns) / (n - 1)).sqrt()
        downside = (sum(min(r, 0) ** 2 for r in returns) / n).sqrt()
        year = Decimal(DAYS_A_YEAR).sqrt()
        sharpe = _ratio(mean / stdev * year) if stdev else None
        sortino = _ratio(mean / downside * year) if downside else None
    return {"sharpe_ratio": sharpe, "sortino_ratio": sortino, "returns": n}


# --- performance -----------------------------------------------------------------------------------------------------

def performance(conn: sa.Connection, caller: Caller, quote: str | None = None, user_id=None) -> dict:
    user = subject(caller, user_id)
    quote = _quote(conn, user, quote)
    s = position_sources.c
    rows = conn.execute(sa.select(position_sources).where(s.user_id == user, s.quote_symbol == quote)).all()
    lines: dict[tuple, dict] = {}
    for row in rows:
        for key in ((row.symbol, row.source), (row.symbol, None), (None, row.source)):
            line = lines.setdefault(key, {"trades": 0, "wins": 0, "losses": 0, "volume": ZERO,
                                          "realized_pnl": ZERO, "fees": ZERO})
            with localcontext(MONEY_CONTEXT):
                for name in line:
                    line[name] += getattr(row, name)

    def shown(key) -> dict:
        line = lines[key]
        closed = line["wins"] + line["losses"]
        named = {"symbol": key[0], "source": key[1]}
        return {**{k: v for k, v in named.items() if v is not None}, **line,
                "win_rate": _ratio(Decimal(line["wins"]) / closed) if closed else None}

    keys = sorted(lines, key=lambda k: (k[0] or "", k[1] or ""))
    return {"user_id": user, "quote": quote,
            "items": [shown(k) for k in keys if k[0] and k[1]],
            "pairs": [shown(k) for k in keys if k[1] is None],
            "sources": [shown(k) for k in keys if k[0] is None]}
