"""Balance history and balance checkpoints on plain PostgreSQL (the date_bin path).

Ledger rows are immutable for the service; here the test moves their timestamps itself (a direct UPDATE) to lay
them out on chosen days, which is what a ledger built over weeks would look like.
"""

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from db import balance_history, checkpoints, engine
from tools import seed_data
from tests.conftest import expect_error
from tests.helpers import create_exchange, create_sub_account, trade

DAY0 = dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc)


def _move(transaction_id: str, when: dt.datetime) -> None:
    with engine.transaction() as conn:
        conn.execute(sa.text('UPDATE transactions SET "timestamp" = :when WHERE id = :id'),
                     {"when": when, "id": transaction_id})


def _ledger_over_days(api):
    """USDT account: opening 1000 on day 0, deposit 500 on day 2, a long of 2 ETH at 100 (fee 1) on day 2 later."""
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT", "1000")
    eth = create_sub_account(api, exchange["id"], "ETH")
    status, page = api.get(f"/v1/transactions?sub_account_id={usdt['id']}")
    _move(page["items"][0]["id"], DAY0 + dt.timedelta(hours=3))
    status, deposit = api.post(f"/v1/sub-accounts/{usdt['id']}/deposit", json={"amount": "500"})
    _move(deposit["id"], DAY0 + dt.timedelta(days=2, hours=1))
    status, log = trade(api, exchange["id"], "long", eth["id"], usdt["id"], "2", "100", "1", symbol="ETH/USDT")
    assert status == 201, log
    for transaction_id in log["transaction_ids"]:
        _move(transaction_id, DAY0 + dt.timedelta(days=2, hours=5))
    return usdt, eth


def test_daily_history_sums_each_day_and_carries_the_closing_balance_through_empty_days(api):
    usdt, _ = _ledger_over_days(api)
    status, body = api.get(f"/v1/sub-accounts/{usdt['id']}/balance-history?bucket=1d"
                           f"&start_time=2026-01-09T12:00:00Z&end_time=2026-01-13T00:00:00Z")
    assert status == 200, body
    assert body["start_time"] == "2026-01-09T00:00:00Z" and body["end_time"] == "2026-01-13T00:00:00Z"
    assert body["opening_balance"] == "0.000000000000000000" and body["symbol"] == "USDT"
    got = [(p["bucket_start"][:10], Decimal(p["net_flow"]), Decimal(p["volume"]), Decimal(p["fees"]),
            p["trade_count"], p["transaction_count"], Decimal(p["closing_balance"])) for p in body["items"]]
    assert got == [
        ("2026-01-09", 0, 0, 0, 0, 0, 0),
        ("2026-01-10", 1000, 0, 0, 0, 1, 1000),
        ("2026-01-11", 0, 0, 0, 0, 0, 1000),  # no transactions: the balance carries forward
        ("2026-01-12", 500 - 201, 201, 1, 1, 2, 1299),  # the long's fee of 1 was paid from USDT
    ]


def test_hourly_history_starts_from_the_balance_before_the_range(api):
    usdt, eth = _ledger_over_days(api)
    status, body = api.get(f"/v1/sub-accounts/{usdt['id']}/balance-history?bucket=1h"
                           f"&start_time=2026-01-12T04:30:00Z&end_time=2026-01-12T06:00:00Z")
    assert status == 200, body
    assert body["opening_balance"] == "1500.000000000000000000"
    assert [(p["bucket_start"], p["closing_balance"]) for p in body["items"]] == [
        ("2026-01-12T04:00:00Z", "1500.000000000000000000"),
        ("2026-01-12T05:00:00Z", "1299.000000000000000000")]
    status, body = api.get(f"/v1/sub-accounts/{eth['id']}/balance-history?bucket=1h"
                           f"&start_time=2026-01-12T05:00:00Z&end_time=2026-01-12T06:00:00Z")
    assert [(p["volume"], p["fees"], p["closing_balance"]) for p in body["items"]] == [
        ("2.000000000000000000", "0.000000000000000000", "2.000000000000000000")]  # the fee was in USDT


def test_history_defaults_to_the_last_30_buckets_ending_now(api):
    usdt = create_sub_account(api, create_exchange(api)["id"], "USDT", "7")
    status, body = api.get(f"/v1/sub-accounts/{usdt['id']}/balance-history?bucket=1d")
    assert status == 200, body
    assert len(body["items"]) == 30
    assert body["items"][-1]["closing_balance"] == "7.000000000000000000"
    assert body["items"][-1]["transaction_count"] == 1


def test_history_of_more_than_1000_buckets_an_empty_range_or_past_year_9999_is_400(api):
    usdt = create_sub_account(api, create_exchange(api)["id"], "USDT")
    path = f"/v1/sub-accounts/{usdt['id']}/balance-history"
    expect_error(api.get(f"{path}?bucket=1h&start_time=2026-01-01T00:00:00Z&end_time=2026-03-01T00:00:00Z"), 400)
    expect_error(api.get(f"{path}?bucket=1d&start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z"), 400)
    expect_error(api.get(f"{path}?bucket=1w"), 400)
    expect_error(api.get(f"{path}?bucket=1h&start_time=9999-12-31T22:00:00Z&end_time=9999-12-31T23:30:00Z"), 400)
    expect_error(api.get(f"{path}?bucket=1h&start_time=2026-01-01T00:00:00"), 400)  # no offset: no instant
    status, body = api.get(f"{path}?bucket=1d&start_time=2023-04-07T00:00:00Z&end_time=2026-01-01T00:00:00Z")
    assert status == 200 and len(body["items"]) == 1000, body


def test_history_of_another_users_sub_account_is_404(api, make_api):
    usdt = create_sub_account(api, create_exchange(api)["id"], "USDT", "5")
    expect_error(make_api().get(f"/v1/sub-accounts/{usdt['id']}/balance-history?bucket=1d"), 404, "NOT_FOUND")


def test_checkpoint_keeps_balance_checkable_after_older_transactions_are_gone(api):
    usdt, eth = _ledger_over_days(api)
    cutoff = DAY0 + dt.timedelta(days=2, hours=3)  # after the opening credit and the deposit, before the trade
    with engine.transaction() as conn:
        assert checkpoints.record(conn, DAY0 + dt.timedelta(days=1)) == 1  # only USDT had rows by then
        assert checkpoints.record(conn, cutoff) == 1  # chains onto the first
        assert checkpoints.record(conn, cutoff) == 0  # idempotent
        row = conn.execute(sa.text("SELECT balance, credits, debits, transaction_count FROM balance_checkpoints "
                                   "WHERE sub_account_id = :id AND as_of = :cutoff"),
                           {"id": usdt["id"], "cutoff": cutoff}).one()
        assert tuple(row) == (Decimal(1500), Decimal(1500), Decimal(0), 2)
        # what an archive does once the checkpoint is there: the rows before it leave
        assert conn.execute(sa.text('DELETE FROM transactions WHERE "timestamp" < :cutoff'),
                            {"cutoff": cutoff}).rowcount == 2
        assert checkpoints.drifts(conn) == []
        conn.execute(sa.text("DELETE FROM balance_checkpoints"))  # without it, the invariant is no longer checkable
        assert [str(d["id"]) for d in checkpoints.drifts(conn)] == [usdt["id"]]


def test_history_after_archiving_opens_from_the_checkpoint(api):
    usdt, _ = _ledger_over_days(api)
    cutoff = DAY0 + dt.timedelta(days=2)
    with engine.transaction() as conn:
        checkpoints.record(conn, cutoff)
        conn.execute(sa.text('DELETE FROM transactions WHERE "timestamp" < :cutoff'), {"cutoff": cutoff})
    status, body = api.get(f"/v1/sub-accounts/{usdt['id']}/balance-history?bucket=1d"
                           f"&start_time=2026-01-12T00:00:00Z&end_time=2026-01-13T00:00:00Z")
    assert status == 200, body
    assert Decimal(body["opening_balance"]) == 1000 and Decimal(body["items"][0]["closing_balance"]) == 1299


def test_plain_postgresql_serves_history_from_rows_not_aggregates(api):
    with engine.reading() as conn:
        assert balance_history.uses_aggregates(conn) is False


def test_seed_data_loads_consistent_ledgers_with_copy(database_url, settings):
    result = seed_data.load(database_url, 2500, per_sub_account=500, sub_accounts_per_user=2, days=10, seed=1,
                            progress=False)
    assert (result["transactions"], result["sub_accounts"], result["users"]) == (2500, 5, 3)
    with engine.reading() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar() == 2500
        assert checkpoints.drifts(conn) == []  # every seeded balance = its credits - its debits
        broken_chains = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT closing_balance, lag(closing_balance) OVER w AS before, amount, direction "
            'FROM transactions WINDOW w AS (PARTITION BY sub_account_id ORDER BY "timestamp")) t '
            "WHERE before IS NOT NULL AND closing_balance <> before + CASE WHEN direction = 'credit' THEN amount "
            "ELSE -amount END")).scalar()
        assert broken_chains == 0
