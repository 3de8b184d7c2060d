"""Portfolio analytics through both doors: DESIGN §9's worked example as REST trading logs and as the bot's fills,
reversals, the per-day and per-source figures, the backfill of an existing ledger, and who may read whose figures.
"""

import random
import uuid
from decimal import Decimal as D

import sqlalchemy as sa

from db import engine, positions
from tests.conftest import expect_error
from tests.helpers import create_exchange, create_sub_account, trade
from tests.jetstream import jetstream, publish, settled, start_consumer, wait_for  # noqa: F401
from tests.test_events import Bot

WORKED = {"realized_pnl": D(487), "fees": D(19), "unrealized_pnl": D(494), "equity": D(10981), "trades": 2,
          "wins": 1, "losses": 0}


def _figures(summary: dict) -> dict:
    return {k: (D(v) if isinstance(v, str) else v) for k, v in summary.items() if k in WORKED}


def _pair(api, usdt="10000", eth=None):
    exchange = create_exchange(api, name=f"Exchange {uuid.uuid4()}", api_key=f"KEY-{uuid.uuid4()}")["id"]
    return (exchange, create_sub_account(api, exchange, "ETH", eth)["id"],
            create_sub_account(api, exchange, "USDT", usdt)["id"])


def _ok(status_body):
    status, body = status_body
    assert status in (200, 201), body
    return body


def _check_worked_example(api, eth):
    summary = _ok(api.get("/v1/portfolio/summary"))
    assert summary["quote"] == "USDT"
    assert _figures(summary) == WORKED
    [position] = summary["positions"]
    assert position["sub_account_id"] == eth and position["symbol"] == "ETH/USDT"
    assert (D(position["quantity"]), D(position["average_cost"]), D(position["last_price"])) == (1, 3006, 3500)
    assert D(position["unrealized_pnl"]) == 494
    return summary


def test_worked_example_through_rest_trading_logs(api):
    exchange, eth, usdt = _pair(api)
    _ok(trade(api, exchange, "long", eth, usdt, "2", "3000", "12"))
    _ok(trade(api, exchange, "short", eth, usdt, "1", "3500", "7"))
    _check_worked_example(api, eth)
    performance = _ok(api.get("/v1/portfolio/performance?quote=USDT"))
    [line] = performance["items"]
    assert (line["symbol"], line["source"], line["trades"], line["wins"], line["win_rate"]) == (
        "ETH/USDT", "manual", 2, 1, "1.000000000000000000")
    assert (D(line["realized_pnl"]), D(line["fees"]), D(line["volume"])) == (487, 19, 9500)


def test_worked_example_through_the_bots_fills(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    consumer = start_consumer()
    publish(jetstream, [bot.fill("buy", "2", "3000", "12"), bot.fill("sell", "1", "3500", "7")])
    wait_for(settled(engine.reading, 2), what="the fills", log=consumer.log)
    _check_worked_example(api, bot.eth)
    performance = _ok(api.get("/v1/portfolio/performance"))
    assert [(s["source"], s["trades"], D(s["realized_pnl"])) for s in performance["sources"]] == [("bot-1", 2, 487)]


def test_pnl_buckets_add_up_to_the_summary_and_equity_is_cash_plus_positions(api):
    exchange, eth, usdt = _pair(api)
    _ok(trade(api, exchange, "long", eth, usdt, "2", "3000", "12"))
    _ok(trade(api, exchange, "short", eth, usdt, "1", "3500", "7"))
    pnl = _ok(api.get("/v1/portfolio/pnl?bucket=day"))
    assert len(pnl["items"]) == 30
    today = pnl["items"][-1]
    assert (D(today["realized_pnl"]), D(today["fees"]), today["trades"]) == (487, 19, 2)
    assert (D(today["cumulative_realized_pnl"]), D(today["equity"])) == (487, 10981)
    assert D(pnl["opening_equity"]) == 0 and pnl["sharpe_ratio"] is None
    for bucket in ("week", "month"):
        items = _ok(api.get(f"/v1/portfolio/pnl?bucket={bucket}"))["items"]
        assert sum(D(i["realized_pnl"]) for i in items) == 487 and D(items[-1]["equity"]) == 10981


def test_reversing_a_sell_restores_the_position_and_takes_back_its_pnl(api):
    exchange, eth, usdt = _pair(api)
    _ok(trade(api, exchange, "long", eth, usdt, "2", "3000", "12"))
    sold = _ok(trade(api, exchange, "short", eth, usdt, "1", "3500", "7"))
    _ok(api.post(f"/v1/trading-logs/{sold['id']}/reversal", json={"reason": "booked twice"}))
    summary = _ok(api.get("/v1/portfolio/summary"))
    assert (D(summary["realized_pnl"]), D(summary["fees"]), summary["trades"], summary["wins"]) == (0, 12, 1, 0)
    [position] = summary["positions"]
    assert (D(position["quantity"]), D(position["average_cost"]), D(position["cost"])) == (2, 3006, 6012)
    today = _ok(api.get("/v1/portfolio/pnl"))["items"][-1]
    assert (D(today["realized_pnl"]), today["trades"]) == (0, 1)


def test_deposits_and_withdrawals_of_the_base_asset_keep_the_average_cost(api):
    exchange, eth, usdt = _pair(api)
    _ok(trade(api, exchange, "long", eth, usdt, "2", "3000", "12"))
    _ok(api.post(f"/v1/sub-accounts/{eth}/deposit", json={"amount": "1"}))
    _ok(api.post(f"/v1/sub-accounts/{eth}/withdraw", json={"amount": "2.5"}))
    [position] = _ok(api.get("/v1/portfolio/summary"))["positions"]
    assert (D(position["quantity"]), D(position["average_cost"]), D(position["cost"])) == (D("0.5"), 3006, 1503)


def test_random_trades_keep_bucket_sums_equal_to_the_summary_and_equity_to_cash_plus_positions(api):
    rng = random.Random(14)
    exchange, eth, usdt = _pair(api, usdt="1000000")
    btc = create_sub_account(api, exchange, "BTC")["id"]
    create_sub_account(api, _pair(api, usdt="500000")[0], "USDT", "1", name="spare")  # more cash, on another exchange
    held = {eth: D(0), btc: D(0)}
    for _ in range(40):
        base = rng.choice([eth, btc])
        price = D(rng.randint(10000, 500000)) / 100
        volume = D(rng.randint(1, 300)) / 100
        fee = D(rng.randint(0, 500)) / 1000
        if held[base] >= volume and rng.random() < 0.45:
            _ok(trade(api, exchange, "short", base, usdt, str(volume), str(price), str(fee)))
            held[base] -= volume
        else:
            _ok(trade(api, exchange, "long", base, usdt, str(volume), str(price), str(fee)))
            held[base] += volume
    summary = _ok(api.get("/v1/portfolio/summary?quote=USDT"))
    pnl = _ok(api.get("/v1/portfolio/pnl?quote=USDT&bucket=week"))
    assert sum(D(item["realized_pnl"]) for item in pnl["items"]) == D(summary["realized_pnl"])
    assert sum(D(item["fees"]) for item in pnl["items"]) == D(summary["fees"])
    assert D(pnl["items"][-1]["cumulative_realized_pnl"]) == D(summary["realized_pnl"])
    cash = sum(D(a["balance"]) for a in _ok(api.get("/v1/sub-accounts?symbol=USDT"))["items"])
    value = sum((D(p["quantity"]) * D(p["last_price"])).quantize(D("1e-18")) for p in summary["positions"])
    assert D(summary["equity"]) == cash + value == D(pnl["items"][-1]["equity"])
    assert {p["sub_account_id"]: D(p["quantity"]) for p in summary["positions"]} == {
        k: v for k, v in held.items() if v > 0}


def test_backfill_rebuilds_the_figures_that_booking_wrote(api):
    exchange, eth, usdt = _pair(api)
    _ok(trade(api, exchange, "long", eth, usdt, "2", "3000", "12"))
    sold = _ok(trade(api, exchange, "short", eth, usdt, "1", "3500", "7"))
    _ok(trade(api, exchange, "short", eth, usdt, "0.5", "2800", "1"))
    _ok(api.post(f"/v1/sub-accounts/{eth}/deposit", json={"amount": "1"}))
    _ok(api.post(f"/v1/trading-logs/{sold['id']}/reversal", json={}))
    tables = ("positions", "position_effects", "position_days", "position_sources")

    def snapshot(conn):
        return {table: sorted(map(tuple, conn.execute(sa.text(
            f"SELECT * FROM {table}" if table != "positions" else
            "SELECT sub_account_id, quantity, cost, realized_pnl, fees, volume, trades, wins, losses, last_price "
            "FROM positions")).all()), key=str) for table in tables}

    with engine.transaction() as conn:
        booked = snapshot(conn)
        for table in tables:
            conn.execute(sa.text(f"DELETE FROM {table}"))
        positions.rebuild(conn, chunk=2)
        assert snapshot(conn) == booked


def test_a_user_sees_only_their_own_figures_and_an_admin_anyones(make_api):
    alice, bob, admin = make_api("alice@example.com"), make_api("bob@example.com"), make_api("root@example.com",
                                                                                            admin=True)
    exchange, eth, usdt = _pair(alice)
    _ok(trade(alice, exchange, "long", eth, usdt, "2", "3000", "12"))
    _ok(trade(alice, exchange, "short", eth, usdt, "1", "3500", "7"))
    assert _ok(bob.get("/v1/portfolio/summary"))["positions"] == []
    for path in ("summary", "pnl", "performance"):
        expect_error(bob.get(f"/v1/portfolio/{path}?user_id={alice.user['id']}"), 403, "FORBIDDEN")
    assert _figures(_ok(admin.get(f"/v1/portfolio/summary?user_id={alice.user['id']}"))) == WORKED


def test_a_pnl_range_the_wrong_way_round_or_too_long_is_a_400(api):
    expect_error(api.get("/v1/portfolio/pnl?start_time=2026-02-01T00:00:00Z&end_time=2026-01-01T00:00:00Z"), 400)
    expect_error(api.get("/v1/portfolio/pnl?start_time=2000-01-01T00:00:00Z&end_time=2026-01-01T00:00:00Z"), 400)
    expect_error(api.get("/v1/portfolio/pnl?start_time=2026-01-01T00:00:00"), 400)  # no UTC offset
    expect_error(api.get("/v1/portfolio/pnl?end_time=0001-01-02T00:00:00Z"), 400)  # 30 days before year 1
