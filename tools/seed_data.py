"""`tiris seed-data`: loads a large, consistent ledger with COPY, for benchmarks and capacity checks.

Each seeded user has one `simulator` exchange and `--sub-accounts-per-user` sub-accounts; each sub-account gets
`--per-sub-account` transactions spread over the last `--days` days: an opening credit, then trades and transfers
whose closing balances chain (each row's closing_balance = the previous one's +/- its amount, never below zero), and
the sub-account's balance is the last closing balance, so "balance = credits - debits" holds for seeded data too.
The number of users grows with --transactions; the density per sub-account stays the same. Rows are marked
`info = {"seed": true}`. Running it again adds more users; it never touches existing rows.
"""

import argparse
import io
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg

from db.urls import psycopg_kwargs

SCALE = 10 ** 8  # amounts are drawn in units of 1e-8 and written as decimals
REASONS = ("long", "short", "stop_loss", "deposit", "withdraw")
SEED_INFO = '{"seed": true}'


def _money(units: int) -> str:
    return f"{units // SCALE}.{units % SCALE:08d}"


def _ledger_rows(rng: random.Random, user_id: str, exchange_id: str, sub_account_id: str, count: int,
                 start: datetime, span: float) -> tuple[list[str], int]:
    """COPY text lines of one sub-account's transactions, oldest first, and its closing balance."""
    times = sorted(rng.random() * span for _ in range(count))
    balance = rng.randrange(1000, 100000) * SCALE
    lines = []
    for i, offset in enumerate(times):
        when = (start + timedelta(seconds=offset)).isoformat()
        if i == 0:
            direction, reason, amount = "credit", "opening_balance", balance
        else:
            reason = rng.choice(REASONS)
            amount = rng.randrange(1, 50 * SCALE)
            direction = "credit" if reason in ("long", "deposit") or amount > balance else "debit"
            balance += amount if direction == "credit" else -amount
        lines.append(f"{uuid.uuid4()}\t{when}\t{user_id}\t{exchange_id}\t{sub_account_id}\t{direction}\t{reason}\t"
                     f"{_money(amount)}\t{_money(balance)}\t{SEED_INFO}\n")
    return lines, balance


def load(database_url: str, transactions: int, *, per_sub_account: int = 1000, sub_accounts_per_user: int = 10,
         days: int = 365, seed: int | None = None, progress: bool = True) -> dict:
    """Adds about `transactions` rows (whole sub-accounts); returns counts and the first seeded sub-account."""
    rng = random.Random(seed)
    sub_account_total = max(1, transactions // per_sub_account)
    users_total = -(-sub_account_total // sub_accounts_per_user)
    end = datetime.now(timezone.utc)
    start, span = end - timedelta(days=days), days * 86400.0
    written, first, began, shown = 0, None, time.monotonic(), 0.0
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(**psycopg_kwargs(database_url)) as conn:
        for u in range(users_total):
            user_id, exchange_id = str(uuid.uuid4()), str(uuid.uuid4())
            accounts = min(sub_accounts_per_user, sub_account_total - u * sub_accounts_per_user)
            ledger, balances = io.StringIO(), []
            for a in range(accounts):
                sub_account_id = str(uuid.uuid4())
                lines, balance = _ledger_rows(rng, user_id, exchange_id, sub_account_id, per_sub_account, start, span)
                ledger.writelines(lines)
                balances.append((sub_account_id, balance))
                first = first or {"user_id": user_id, "sub_account_id": sub_account_id}
            with conn.cursor() as cur:
                cur.execute("INSERT INTO users (id, username, email, info) VALUES (%s, %s, %s, %s)",
                            (user_id, f"seed-{tag}-{u}", f"seed-{tag}-{u}@example.com", SEED_INFO))
                cur.execute("INSERT INTO exchanges (id, user_id, name, type, api_key_ciphertext, api_secret_ciphertext,"
                            " key_id, api_key_hash, api_key_masked, info) VALUES (%s, %s, 'seed', 'simulator', "
                            "'\\x00', '\\x00', 'seed', %s, 'seed...seed', %s)",
                            (exchange_id, user_id, uuid.UUID(exchange_id).bytes, SEED_INFO))
                with cur.copy("COPY sub_accounts (id, user_id, exchange_id, name, symbol, balance, info) "
                              "FROM STDIN") as copy:
                    for a, (sub_account_id, balance) in enumerate(balances):
                        copy.write(f"{sub_account_id}\t{user_id}\t{exchange_id}\tseed-{a}\tS{a}\t{_money(balance)}\t"
                                   f"{SEED_INFO}\n")
                with cur.copy("COPY transactions (id, \"timestamp\", user_id, exchange_id, sub_account_id, direction, "
                              "reason, amount, closing_balance, info) FROM STDIN") as copy:
                    copy.write(ledger.getvalue())
            conn.commit()
            written += accounts * per_sub_account
            if progress and (time.monotonic() - shown > 0.5 or u == users_total - 1):
                shown = time.monotonic()
                rate = written / max(shown - began, 1e-9)
                bar = "#" * int(30 * written / (sub_account_total * per_sub_account))
                print(f"\rseed-data: [{bar:<30}] {written:,}/{sub_account_total * per_sub_account:,} transactions, "
                      f"{rate:,.0f}/s, eta {(sub_account_total * per_sub_account - written) / max(rate, 1):,.0f}s",
                      end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {"transactions": written, "sub_accounts": sub_account_total, "users": users_total,
            "seconds": round(time.monotonic() - began, 1), "first": first}


def add_parser(sub) -> None:
    parser = sub.add_parser("seed-data", help="load a large consistent ledger with COPY (benchmarks)")
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--per-sub-account", type=int, default=1000)
    parser.add_argument("--sub-accounts-per-user", type=int, default=10)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from tiris import config

    result = load(config.database_url_from(os.environ), args.transactions, per_sub_account=args.per_sub_account,
                  sub_accounts_per_user=args.sub_accounts_per_user, days=args.days, seed=args.seed)
    print(f"seed-data: {result['transactions']:,} transactions on {result['sub_accounts']:,} sub-accounts of "
          f"{result['users']:,} users in {result['seconds']}s", file=sys.stderr)
