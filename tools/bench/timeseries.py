"""Time-series latency at 10^5, 10^6 and 10^7 transactions on plain PostgreSQL (`make bench-timeseries`).

Fills one database per size with `tiris seed-data` (same density per sub-account, more users), then times, through
the same db/ functions the handlers call, on warm connections, in rounds that go round the sizes:
- a 100-row page of GET /v1/transactions as a user (their newest rows) and as an admin (everyone's newest rows),
- a 30-day daily balance history of a sub-account,
- a user's portfolio summary and 90-day daily PnL (db/portfolio.py). Seeded rows bypass booking, so each size's
  portfolio rows are laid out from its seeded ledger as booking would (`_seed_portfolio`: a position per non-quote
  sub-account, with the first sub-account's asset as the quote, one day row per position and day with trades).
Each figure is the median and p95 of RUNS calls spread over SAMPLE randomly chosen users / sub-accounts, after one
untimed pass over the sample (warm cache: the steady state of a server, not a cold start). The results
replace the section between the timeseries markers of BENCHMARKS.md; the rest of the file is kept.
"""

import argparse
import datetime as dt
import os
import platform
import statistics
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

from db import balance_history, migrate, portfolio, transactions
from db.access import Caller
from db.urls import psycopg_kwargs
from tools import seed_data

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- timeseries:begin -->", "<!-- timeseries:end -->"
KINDS = {"user_page": "user page", "admin_page": "admin page", "history": "history", "summary": "summary",
         "pnl": "90-day pnl"}
QUOTE = "S0"  # seed-data names a user's sub-accounts' assets S0..S9: S0 is the quote of the seeded positions
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")


def _stats(times: list[float]) -> dict:
    times = sorted(times)
    return {"median": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


def calls(conn: sa.Connection, sample: int) -> dict:
    """The three timed calls against one database, each taking the run number to pick its user or sub-account."""
    picks = conn.execute(sa.text("SELECT id, user_id FROM sub_accounts ORDER BY random() LIMIT :n"),
                         {"n": sample}).all()
    admin = Caller(uuid.uuid4(), "admin")
    now = conn.execute(sa.select(sa.func.now())).scalar()
    start, end = (now - dt.timedelta(days=30)).isoformat(), now.isoformat()

    def user_page(i):
        rows, _ = transactions.list_page(conn, Caller(picks[i % len(picks)].user_id, "user"), limit=100, cursor=None)
        assert len(rows) == 100

    def admin_page(i):
        rows, _ = transactions.list_page(conn, admin, limit=100, cursor=None)
        assert len(rows) == 100

    def history(i):
        body = balance_history.history(conn, admin, picks[i % len(picks)].id, "1d", start, end)
        assert len(body["items"]) in (30, 31)

    pnl_start = (now - dt.timedelta(days=90)).isoformat()

    def summary(i):
        body = portfolio.summary(conn, admin, QUOTE, user_id=picks[i % len(picks)].user_id)
        assert len(body["positions"]) > 0

    def pnl(i):
        body = portfolio.pnl(conn, admin, QUOTE, "day", pnl_start, end, user_id=picks[i % len(picks)].user_id)
        assert len(body["items"]) in (90, 91)

    kinds = {"user_page": user_page, "admin_page": admin_page, "history": history, "summary": summary, "pnl": pnl}
    for call in kinds.values():  # warm the connection, the plans and the sample's pages
        for i in range(len(picks)):
            call(i)
    return kinds


def measure(engines: dict[int, sa.Engine], runs: int, sample: int, rounds: int = 10) -> dict[int, dict]:
    """Rounds that visit every size in turn, so that a busy moment of the machine falls on all sizes alike."""
    times = {size: {kind: [] for kind in KINDS} for size in engines}
    conns = {size: engine.connect() for size, engine in engines.items()}
    try:
        prepared = {size: calls(conn, sample) for size, conn in conns.items()}
        for r in range(rounds):
            for size, kinds in prepared.items():
                for kind, call in kinds.items():
                    for i in range(r * runs // rounds, (r + 1) * runs // rounds):
                        began = time.perf_counter()
                        call(i)
                        times[size][kind].append((time.perf_counter() - began) * 1000)
    finally:
        for conn in conns.values():
            conn.close()
    return {size: {kind: _stats(values) for kind, values in kinds.items()} for size, kinds in times.items()}


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replaces only what lies between the markers (appends the section when they are absent)."""
    section = f"{BEGIN}\n{text.rstrip()}\n{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + section + old[old.index(END) + len(END):]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + section + "\n"
    path.write_text(new)


def report(results: list[tuple[int, float, dict]], runs: int, sample: int, server_version: str) -> str:
    lines = [
        "## Time series: transaction pages and balance history by table size (plain PostgreSQL)",
        "",
        f"`make bench-timeseries` on {platform.node() or 'this machine'} ({os.cpu_count()} cores), PostgreSQL "
        f"{server_version}, {dt.date.today().isoformat()}. Data from `tiris seed-data`: 1,000 transactions per "
        "sub-account over 365 days, 10 sub-accounts per user, so more rows means more users. Milliseconds, median / "
        f"p95 of {runs} calls over {sample} random users or sub-accounts (after one untimed pass over them), through the "
        "db/ functions the handlers call, on a machine shared with other work. Each size is its own database; "
        "`load` is the seconds `tiris seed-data` took to fill it (COPY, with all indexes in place). The timed calls "
        "go round the sizes in 10 rounds, so a busy moment of the machine falls on every size alike.",
        "",
        "The portfolio columns time `portfolio.summary` and a 90-day daily `portfolio.pnl` of a sampled user; their "
        "rows are laid out from the seeded ledger as booking writes them (a position per sub-account but the "
        "quote's, a day row per position and day with transactions).",
        "",
        "| transactions | load (s) | 100-row page, user | 100-row page, admin (all users) | 30-day daily history "
        "| portfolio summary | 90-day daily PnL |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, seconds, r in results:
        cells = [f"{r[k]['median']:.2f} / {r[k]['p95']:.2f}" for k in KINDS]
        load = f"{seconds:.0f}" if seconds is not None else "(reused)"
        lines.append(f"| {size:,} | {load} | " + " | ".join(cells) + " |")
    first, last = results[0][2], results[-1][2]
    lines += ["", "Ratio of the largest to the smallest size (medians; the goal is at most 2): " + ", ".join(
        f"{name} {last[key]['median'] / first[key]['median']:.2f}" for key, name in KINDS.items())]
    return "\n".join(lines)


def _seed_portfolio(conn: psycopg.Connection) -> None:
    """Positions, day rows and per-source rows for the seeded ledger, in the layout booking writes (the figures are
    placeholders: what is timed is reading them)."""
    conn.execute(
        "INSERT INTO positions (sub_account_id, user_id, exchange_id, symbol, quote_symbol, quantity, cost, "
        "realized_pnl, fees, volume, trades, wins, losses, last_price) "
        "SELECT id, user_id, exchange_id, symbol || '/' || %(quote)s, %(quote)s, balance, balance * 100, 0, 0, 0, 0, "
        "0, 0, 100 FROM sub_accounts WHERE symbol <> %(quote)s", {"quote": QUOTE})
    conn.execute(
        "INSERT INTO position_days (sub_account_id, day, user_id, quote_symbol, realized_pnl, fees, volume, trades, "
        "wins, losses, quantity, cost, cumulative_realized_pnl, last_price) "
        "SELECT t.sub_account_id, (t.\"timestamp\" AT TIME ZONE 'UTC')::date, t.user_id, %(quote)s, "
        "coalesce(sum(t.amount) FILTER (WHERE t.reason IN ('short', 'stop_loss')), 0) / 100, count(*) / 10.0, sum(t.amount) * 100, "
        "count(*), 0, 0, (array_agg(t.closing_balance ORDER BY t.\"timestamp\" DESC))[1], "
        "(array_agg(t.closing_balance ORDER BY t.\"timestamp\" DESC))[1] * 100, 0, 100 "
        "FROM transactions t JOIN positions p ON p.sub_account_id = t.sub_account_id "
        "GROUP BY t.sub_account_id, 2, t.user_id", {"quote": QUOTE})
    conn.execute(
        "INSERT INTO position_sources (sub_account_id, source, user_id, quote_symbol, symbol, trades, wins, losses, "
        "volume, realized_pnl, fees) SELECT sub_account_id, 'seed', user_id, quote_symbol, symbol, 0, 0, 0, 0, 0, 0 "
        "FROM positions")
    conn.commit()


def _load(admin: dict, name: str, size: int, reuse: bool) -> float | None:
    """A migrated database of `size` seeded transactions; the seconds its load took (None when reused)."""
    url = f"{SERVER}/{name}"
    if reuse:
        try:
            with psycopg.connect(**psycopg_kwargs(url)) as conn:
                if conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == size:
                    return None
        except psycopg.OperationalError:
            pass
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url)
    began = time.monotonic()
    seed_data.load(url, size, seed=size)
    seconds = time.monotonic() - began
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        _seed_portfolio(conn)
    with psycopg.connect(**psycopg_kwargs(url, autocommit=True)) as conn:
        conn.execute("VACUUM ANALYZE transactions, sub_accounts, positions, position_days, position_sources")
        conn.execute("CHECKPOINT")  # the load's dirty pages written now, not while timing
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "100000,1000000,10000000"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--database", default="tiris_bench_timeseries", help="prefix of the databases, one per size")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database that has the size's rows")
    args = parser.parse_args()

    admin = psycopg_kwargs(f"{SERVER}/postgres", autocommit=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = {size: f"{args.database}_{size}" for size in sizes}
    with psycopg.connect(**admin) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    loads = {size: _load(admin, names[size], size, args.reuse) for size in sizes}
    engines = {size: sa.create_engine(f"{SERVER}/{names[size]}", connect_args={"options": "-c timezone=UTC"})
               for size in sizes}
    try:
        measured = measure(engines, args.runs, args.sample)
    finally:
        for engine in engines.values():
            engine.dispose()
        if not args.keep:
            with psycopg.connect(**admin) as conn:
                for name in names.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    text = report([(size, loads[size], measured[size]) for size in sizes], args.runs, args.sample, server_version)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
