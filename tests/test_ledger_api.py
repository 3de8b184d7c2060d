"""The ledger over HTTP: trades and transfers move money atomically, exactly, and refuse what would go short."""

from decimal import Decimal

import sqlalchemy as sa

from db import engine
from tests.conftest import expect_error
from tests.helpers import balance_of, create_exchange, create_sub_account, trade


def _pair(api, usdt="0", eth="0"):
    exchange = create_exchange(api)
    usdt_account = create_sub_account(api, exchange["id"], "USDT", usdt)
    eth_account = create_sub_account(api, exchange["id"], "ETH", eth)
    return exchange["id"], eth_account["id"], usdt_account["id"]


def _transactions(api, sub_account_id):
    status, body = api.get(f"/v1/transactions?sub_account_id={sub_account_id}")
    assert status == 200, body
    return body["items"]


def test_worked_example_deposit_then_long_leaves_eth_2_and_usdt_3988(api):
    exchange_id, eth, usdt = _pair(api)
    status, deposit = api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "10000"})
    assert status == 201, deposit
    assert deposit["direction"] == "credit" and Decimal(deposit["closing_balance"]) == 10000

    status, log = trade(api, exchange_id, "long", eth, usdt, "2", "3000", "12", symbol="ETH/USDT")
    assert status == 201, log
    assert len(log["transaction_ids"]) == 2

    assert balance_of(api, eth) == Decimal("2")
    assert balance_of(api, usdt) == Decimal("3988")
    status, page = api.get("/v1/transactions")
    assert [(t["reason"], t["direction"], Decimal(t["amount"])) for t in sorted(page["items"], key=lambda t: t["amount"])] \
        == sorted([("deposit", "credit", Decimal(10000)), ("long", "credit", Decimal(2)),
                   ("long", "debit", Decimal(6012))], key=lambda r: str(r[2]))
    leg_ids = {t["id"] for t in page["items"] if t["reason"] == "long"}
    assert leg_ids == set(log["transaction_ids"])
    for t in page["items"]:
        if t["reason"] == "long":
            assert t["trading_log_id"] == log["id"] and t["price"].startswith("3000") and t["quote_symbol"] == "USDT"
    # The fee is recorded on the leg of the sub-account that paid it.
    assert {t["sub_account_id"]: t.get("fee") for t in page["items"] if t["reason"] == "long"} == {
        usdt: "12.000000000000000000", eth: None}


def test_short_and_stop_loss_debit_base_and_credit_quote_less_fee(api):
    exchange_id, eth, usdt = _pair(api, usdt="0", eth="3")
    assert trade(api, exchange_id, "short", eth, usdt, "1.5", "3000", "9")[0] == 201
    assert trade(api, exchange_id, "stop_loss", eth, usdt, "1", "2500", "5")[0] == 201
    assert balance_of(api, eth) == Decimal("0.5")
    assert balance_of(api, usdt) == Decimal("4491") + Decimal("2495")


def test_long_without_enough_quote_is_refused_with_422_and_writes_nothing(api):
    exchange_id, eth, usdt = _pair(api, usdt="6011.999999999999999999")
    error = expect_error(trade(api, exchange_id, "long", eth, usdt, "2", "3000", "12"), 422, "INSUFFICIENT_BALANCE")
    assert error["details"]["sub_account_id"] == usdt
    assert balance_of(api, eth) == 0 and balance_of(api, usdt) == Decimal("6011.999999999999999999")
    assert len(_transactions(api, eth)) == 0 and len(_transactions(api, usdt)) == 1  # only the opening credit
    assert api.get("/v1/trading-logs")[1]["items"] == []


def test_withdraw_more_than_available_is_422_and_exact_balance_is_allowed(api):
    _, _, usdt = _pair(api, usdt="100.5")
    expect_error(api.post(f"/v1/sub-accounts/{usdt}/withdraw", json={"amount": "100.500000000000000001"}), 422,
                 "INSUFFICIENT_BALANCE")
    status, tx = api.post(f"/v1/sub-accounts/{usdt}/withdraw", json={"amount": "100.5"})
    assert status == 201 and tx["direction"] == "debit" and Decimal(tx["closing_balance"]) == 0


def test_trade_amounts_keep_18_decimal_places_exactly(api):
    exchange_id, eth, usdt = _pair(api, usdt="1")
    status, _ = trade(api, exchange_id, "long", eth, usdt, "0.000000000000000001", "0.333333333333333333", "0")
    assert status == 201
    # 1e-18 * 0.333... rounds up to 1e-18 for the debit: rounding never takes less than the cost
    assert balance_of(api, usdt) == Decimal("0.999999999999999999")
    assert balance_of(api, eth) == Decimal("0.000000000000000001")


def test_trade_symbol_must_match_the_sub_accounts(api):
    exchange_id, eth, usdt = _pair(api, usdt="10000")
    expect_error(trade(api, exchange_id, "long", eth, usdt, "1", "1", "0", symbol="BTC/USDT"), 422, "SYMBOL_MISMATCH")


def test_trade_on_another_exchanges_sub_account_is_404(api):
    exchange_id, eth, usdt = _pair(api, usdt="10000")
    other = create_exchange(api, name="Other", api_key="OTHERKEY0000000000001")
    other_eth = create_sub_account(api, other["id"], "ETH")
    expect_error(trade(api, exchange_id, "long", other_eth["id"], usdt, "1", "1", "0"), 404, "NOT_FOUND")


def test_deposit_and_withdraw_trading_logs_move_money_with_the_log(api):
    exchange_id, _, usdt = _pair(api)
    status, log = api.post("/v1/trading-logs", json={"type": "deposit", "source": "api", "message": "funding",
                                                     "exchange_id": exchange_id, "sub_account_id": usdt,
                                                     "amount": "250"})
    assert status == 201 and len(log["transaction_ids"]) == 1 and Decimal(log["amount"]) == 250
    status, log = api.post("/v1/trading-logs", json={"type": "withdraw", "source": "api", "message": "payout",
                                                     "exchange_id": exchange_id, "sub_account_id": usdt,
                                                     "amount": "50"})
    assert status == 201
    assert balance_of(api, usdt) == Decimal("200")


def test_trading_log_type_needs_its_fields_and_lists_every_missing_one(api):
    exchange_id, _, usdt = _pair(api)
    error = expect_error(api.post("/v1/trading-logs", json={"type": "withdraw", "source": "api", "message": "x",
                                                            "exchange_id": exchange_id}), 400, "VALIDATION_ERROR")
    assert {d["field"] for d in error["details"]} == {"sub_account_id", "amount"}
    error = expect_error(api.post("/v1/trading-logs", json={"type": "long", "source": "api", "message": "x",
                                                            "exchange_id": exchange_id}), 400)
    assert [d["field"] for d in error["details"]] == ["trade"]


def test_note_logs_move_no_money_and_can_be_deleted_but_ledger_logs_cannot(api):
    exchange_id, eth, usdt = _pair(api, usdt="100")
    status, note = api.post("/v1/trading-logs", json={"type": "signal", "source": "bot", "message": "RSI < 30",
                                                      "exchange_id": exchange_id, "sub_account_id": eth})
    assert status == 201 and note["transaction_ids"] == []
    status, long_log = trade(api, exchange_id, "long", eth, usdt, "1", "10", "0")
    assert status == 201
    expect_error(api.delete(f"/v1/trading-logs/{long_log['id']}"), 409, "LEDGER_ENTRY")
    assert api.delete(f"/v1/trading-logs/{note['id']}")[0] == 204
    expect_error(api.get(f"/v1/trading-logs/{note['id']}"), 404)
    assert api.get(f"/v1/trading-logs/{long_log['id']}")[0] == 200


def test_idempotency_key_replays_the_first_result_and_refuses_another_body(api):
    _, _, usdt = _pair(api)
    headers = {"Idempotency-Key": "deposit-0001"}
    first = api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "10"}, headers=headers)
    again = api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "10"}, headers=headers)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert balance_of(api, usdt) == Decimal("10")
    expect_error(api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "11"}, headers=headers), 409,
                 "IDEMPOTENCY_KEY_REUSED")


def test_refused_attempt_does_not_consume_its_idempotency_key(api):
    _, _, usdt = _pair(api)
    headers = {"Idempotency-Key": "withdraw-0001"}
    expect_error(api.post(f"/v1/sub-accounts/{usdt}/withdraw", json={"amount": "5"}, headers=headers), 422)
    api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "5"})
    assert api.post(f"/v1/sub-accounts/{usdt}/withdraw", json={"amount": "5"}, headers=headers)[0] == 201


def test_amounts_that_are_numbers_zero_or_too_precise_are_400(api):
    _, _, usdt = _pair(api)
    for amount in (10, "0", "0.000", "-1", "1e3", "1.0000000000000000001", "123456789012345678901"):
        error = expect_error(api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": amount}), 400)
        assert error["details"][0]["field"] == "amount", (amount, error)


def test_balance_past_the_ledger_limit_is_422_not_500(api):
    _, _, usdt = _pair(api, usdt="99999999999999999999")
    expect_error(api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "1"}), 422, "AMOUNT_OUT_OF_RANGE")


def test_database_balance_always_equals_credits_minus_debits(api):
    exchange_id, eth, usdt = _pair(api, usdt="5000", eth="1")
    trade(api, exchange_id, "long", eth, usdt, "0.5", "2000.123", "1.5")
    trade(api, exchange_id, "short", eth, usdt, "0.25", "2100", "0.75")
    api.post(f"/v1/sub-accounts/{usdt}/withdraw", json={"amount": "12.34"})
    with engine.reading() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.id, s.balance, COALESCE(SUM(CASE t.direction WHEN 'credit' THEN t.amount ELSE -t.amount END), 0)"
            " AS net FROM sub_accounts s LEFT JOIN transactions t ON t.sub_account_id = s.id GROUP BY s.id")).all()
    assert rows and all(row.balance == row.net for row in rows)


def test_a_decimal_has_one_written_form_in_every_response(api):
    exchange_id, eth, usdt = _pair(api, usdt="100.5")
    status, deposit = api.post(f"/v1/sub-accounts/{usdt}/deposit", json={"amount": "10000.50"})
    assert status == 201 and deposit["amount"] == "10000.500000000000000000", deposit
    assert api.get(f"/v1/transactions/{deposit['id']}")[1]["amount"] == deposit["amount"]
    status, log = trade(api, exchange_id, "long", eth, usdt, "2", "3000.5", "1.25", symbol="ETH/USDT")
    assert status == 201, log
    expected = {"volume": "2.000000000000000000", "price": "3000.500000000000000000", "fee": "1.250000000000000000"}
    assert {k: log["trade"][k] for k in expected} == expected
    assert {k: api.get(f"/v1/trading-logs/{log['id']}")[1]["trade"][k] for k in expected} == expected
    assert api.get(f"/v1/sub-accounts/{eth}")[1]["balance"] == "2.000000000000000000"


def test_stats_sum_balances_beyond_twenty_integer_digits_and_conform_to_the_contract(app, api):
    import schemathesis

    exchange = create_exchange(api)
    for name in ("one", "two"):
        create_sub_account(api, exchange["id"], "USDT", "99999999999999999999", name=name)
    operation = schemathesis.openapi.from_asgi("/v1/openapi.json", app)["/v1/users/me/stats"]["GET"]
    response = operation.Case().call_and_validate(headers={"Authorization": f"Bearer {api.token}"})
    assert response.json()["balances"] == [{"symbol": "USDT", "balance": "199999999999999999998.000000000000000000"}]
