"""Time-series latency at 10^5, 10^6 and 10^7 transactions on plain PostgreSQL (`make bench-timeseries`).

Grows one database with `tiris seed-data` (same density per sub-account, more users), and at each size times,
through the same db/ functions the handlers call, on a warm connection:
- a 100-row page of GET /v1/transactions as a user (their newest rows) and as an admin (everyone's newest rows),
- a 30-day daily balance history of a sub-account.
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

from db import balance_history, transactions
from db.access import Caller
from tools import seed_data

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- timeseries:begin -->", "<!-- timeseries:end -->"
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")


def _timed(call, runs: int) -> dict:
    times = []
    for i in range(runs):
        began = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {"median": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


def measure(engine: sa.Engine, runs: int, sample: int) -> dict:
    with engine.connect() as conn:
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

        for call in (user_page, admin_page, history):  # warm the connection, the plans and the sample's pages
            for i in range(len(picks)):
                call(i)
        return {"user_page": _timed(user_page, runs), "admin_page": _timed(admin_page, runs),
                "history": _timed(history, runs)}


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
        "db/ functions the handlers call, on a machine shared with other work. `load` is the time to add the rows "
        "since the previous size (COPY, with all indexes in place).",
        "",
        "| transactions | load (s) | 100-row page, user | 100-row page, admin (all users) | 30-day daily history |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, seconds, r in results:
        cells = [f"{r[k]['median']:.2f} / {r[k]['p95']:.2f}" for k in ("user_page", "admin_page", "history")]
        lines.append(f"| {size:,} | {seconds:.0f} | " + " | ".join(cells) + " |")
    first, last = results[0][2], results[-1][2]
    lines += ["", "Ratio of the largest to the smallest size (medians; the goal is at most 2): " + ", ".join(
        f"{name} {last[key]['median'] / first[key]['median']:.2f}"
        for key, name in (("user_page", "user page"), ("admin_page", "admin page"), ("history", "history")))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "100000,1000000,10000000"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--database", default="tiris_bench_timeseries")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    from tools.cli import _migrate

    admin_url = f"{SERVER}/postgres".replace("postgresql+psycopg://", "postgresql://")
    url = f"{SERVER}/{args.database}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
        server_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    _migrate(url)
    engine = sa.create_engine(url, connect_args={"options": "-c timezone=UTC"})
    results, loaded = [], 0
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            began = time.monotonic()
            loaded += seed_data.load(url, size - loaded, seed=size)["transactions"]
            seconds = time.monotonic() - began
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE transactions, sub_accounts"))
                conn.execute(sa.text("CHECKPOINT"))  # the load's dirty pages written now, not while timing
            results.append((loaded, seconds, measure(engine, args.runs, args.sample)))
            print(report(results, args.runs, args.sample, server_version), flush=True)
    finally:
        engine.dispose()
        if not args.keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    write_section(report(results, args.runs, args.sample, server_version))


if __name__ == "__main__":
    main()
