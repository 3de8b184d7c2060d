"""Lists page by keyset cursor with every filter, and a user never sees another user's rows."""

import datetime as dt
import uuid
from decimal import Decimal

from tests.conftest import expect_error
from tests.helpers import create_exchange, create_sub_account, trade


def _walk(api, path: str, limit: int) -> list[dict]:
    """Follows next_cursor as a client would; capped so a cursor that never ends fails instead of hanging."""
    items, url = [], f"{path}{'&' if '?' in path else '?'}limit={limit}"
    for _ in range(100):
        status, body = api.get(url)
        assert status == 200, body
        items.extend(body["items"])
        if "next_cursor" not in body:
            return items
        assert len(body["items"]) == limit
        url = f"{path}{'&' if '?' in path else '?'}limit={limit}&cursor={body['next_cursor']}"
    raise AssertionError("pagination did not end")


def test_transaction_pages_cover_every_row_once_newest_first(api):
    exchange = create_exchange(api)
    account = create_sub_account(api, exchange["id"], "USDT")
    for i in range(1, 24):
        assert api.post(f"/v1/sub-accounts/{account['id']}/deposit", json={"amount": str(i)})[0] == 201
    for limit in (1, 5, 23, 1000):
        rows = _walk(api, "/v1/transactions", limit)
        assert [Decimal(r["amount"]) for r in rows] == [Decimal(i) for i in range(23, 0, -1)]
        assert len({r["id"] for r in rows}) == 23


def test_unreadable_cursor_is_400(api):
    for cursor in ("garbage", "WyJ4Il0", "e30"):
        error = expect_error(api.get(f"/v1/transactions?cursor={cursor}"), 400, "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "query/cursor"


def test_transaction_filters_narrow_the_list(api):
    exchange = create_exchange(api)
    eth = create_sub_account(api, exchange["id"], "ETH", "1")
    usdt = create_sub_account(api, exchange["id"], "USDT", "5000")
    trade(api, exchange["id"], "long", eth["id"], usdt["id"], "1", "100", "1")
    api.post(f"/v1/sub-accounts/{usdt['id']}/withdraw", json={"amount": "10"})

    def count(query):
        status, body = api.get(f"/v1/transactions?{query}")
        assert status == 200, body
        return len(body["items"])

    assert count(f"sub_account_id={usdt['id']}") == 3
    assert count(f"sub_account_id={usdt['id']}&direction=debit") == 2
    assert count("reason=long") == 2 and count("reason=withdraw") == 1
    assert count(f"exchange_id={exchange['id']}") == 5
    assert count(f"exchange_id={uuid.uuid4()}") == 0
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert count(f"start_time={future}") == 0 and count(f"end_time={future}") == 5
    status, logs = api.get(f"/v1/trading-logs?sub_account_id={eth['id']}&type=long&source=manual")
    assert status == 200 and len(logs["items"]) == 1


def test_another_users_rows_answer_404_everywhere(api, make_api):
    exchange = create_exchange(api)
    eth = create_sub_account(api, exchange["id"], "ETH", "2")
    usdt = create_sub_account(api, exchange["id"], "USDT", "10000")
    status, log = trade(api, exchange["id"], "long", eth["id"], usdt["id"], "1", "10", "0")
    tx_id = log["transaction_ids"][0]
    mallory = make_api("mallory@example.com")
    for path in (f"/v1/exchanges/{exchange['id']}", f"/v1/sub-accounts/{usdt['id']}", f"/v1/transactions/{tx_id}",
                 f"/v1/trading-logs/{log['id']}"):
        expect_error(mallory.get(path), 404)
        expect_error(mallory.delete(path), 404) if "transactions" not in path else None
    expect_error(mallory.patch(f"/v1/exchanges/{exchange['id']}", json={"name": "mine"}), 404)
    expect_error(mallory.patch(f"/v1/sub-accounts/{usdt['id']}", json={"name": "mine"}), 404)
    expect_error(mallory.post(f"/v1/sub-accounts/{usdt['id']}/withdraw", json={"amount": "1"}), 404)
    expect_error(mallory.post(f"/v1/sub-accounts/{usdt['id']}/deposit", json={"amount": "1"}), 404)
    own = create_exchange(mallory, api_key="MALLORYKEY0000000001")
    expect_error(trade(mallory, own["id"], "long", eth["id"], usdt["id"], "1", "1", "0"), 404)
    expect_error(mallory.post("/v1/sub-accounts", json={"exchange_id": exchange["id"], "name": "x",
                                                        "symbol": "ETH"}), 404)
    for path in ("/v1/exchanges", "/v1/sub-accounts", "/v1/transactions", "/v1/trading-logs"):
        assert mallory.get(path)[1]["items"] == [] or path == "/v1/exchanges"
    assert [e["id"] for e in mallory.get("/v1/exchanges")[1]["items"]] == [own["id"]]
    expect_error(mallory.get(f"/v1/transactions?user_id={api.user['id']}"), 403)
    assert api.get(f"/v1/sub-accounts/{usdt['id']}")[1]["balance"].startswith("9990")


def test_admin_reads_everyone_and_filters_by_user(api, make_api):
    exchange = create_exchange(api)
    create_sub_account(api, exchange["id"], "USDT", "7")
    other = make_api("dave@example.com")
    create_sub_account(other, create_exchange(other, api_key="DAVEKEY0000000000001")["id"], "USDT", "3")
    admin = make_api("root@example.com", admin=True)
    assert len(admin.get("/v1/transactions")[1]["items"]) == 2
    only_alice = admin.get(f"/v1/transactions?user_id={api.user['id']}")[1]["items"]
    assert [Decimal(t["amount"]) for t in only_alice] == [Decimal(7)]
    assert admin.get(f"/v1/exchanges/{exchange['id']}")[0] == 200
