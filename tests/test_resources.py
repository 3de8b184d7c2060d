"""Exchanges, sub-accounts and users: their CRUD rules, conflicts and soft deletes."""

import base64
from decimal import Decimal

import sqlalchemy as sa

from db import engine
from db.schema import exchanges
from tests.conftest import expect_error
from tests.helpers import balance_of, create_exchange, create_sub_account


def test_exchange_keys_are_write_only_masked_and_sealed_at_rest(api):
    created = create_exchange(api, api_key="AKIAEXAMPLEKEY123456", api_secret="very-secret-value")
    assert "api_key" not in created and "api_secret" not in created
    assert created["api_key_masked"] == "AKIA...3456"
    with engine.reading() as conn:
        row = conn.execute(sa.select(exchanges)).one()
    stored = b"".join(v for v in row if isinstance(v, bytes))
    assert b"very-secret-value" not in stored and b"AKIAEXAMPLEKEY123456" not in stored
    assert row.key_id == "k1"


def test_exchange_name_and_api_key_are_unique_per_user_among_live_rows(api, make_api):
    first = create_exchange(api, name="Main", api_key="KEY-AAAAAAAAAAAAAAAA")
    expect_error(api.post("/v1/exchanges", json={"name": "Main", "type": "okx", "api_key": "KEY-BBBBBBBBBBBBBBBB",
                                                 "api_secret": "s"}), 409, "DUPLICATE_NAME")
    expect_error(api.post("/v1/exchanges", json={"name": "Second", "type": "okx", "api_key": "KEY-AAAAAAAAAAAAAAAA",
                                                 "api_secret": "s"}), 409, "DUPLICATE_API_KEY")
    create_exchange(make_api("bob@example.com"), name="Main", api_key="KEY-AAAAAAAAAAAAAAAA")  # other user: fine
    assert api.delete(f"/v1/exchanges/{first['id']}")[0] == 204
    create_exchange(api, name="Main", api_key="KEY-AAAAAAAAAAAAAAAA")  # the deleted one no longer counts


def test_exchange_patch_changes_fields_and_reseals_keys(api):
    created = create_exchange(api)
    status, updated = api.patch(f"/v1/exchanges/{created['id']}", json={
        "name": "Renamed", "status": "inactive", "api_key": "NEWKEY-1234567890XYZ"})
    assert status == 200, updated
    assert (updated["name"], updated["status"], updated["api_key_masked"]) == ("Renamed", "inactive", "NEWK...0XYZ")
    expect_error(api.patch(f"/v1/exchanges/{created['id']}", json={}), 400)


def test_exchange_with_live_sub_accounts_cannot_be_deleted(api):
    exchange = create_exchange(api)
    account = create_sub_account(api, exchange["id"], "USDT")
    expect_error(api.delete(f"/v1/exchanges/{exchange['id']}"), 409, "EXCHANGE_HAS_SUB_ACCOUNTS")
    assert api.delete(f"/v1/sub-accounts/{account['id']}")[0] == 204
    assert api.delete(f"/v1/exchanges/{exchange['id']}")[0] == 204
    expect_error(api.get(f"/v1/exchanges/{exchange['id']}"), 404)


def test_rotate_keys_reseals_rows_under_the_new_active_key(api, settings):
    from db import exchanges as exchange_ops
    from db import crypto

    created = create_exchange(api, api_secret="rotate-me-secret")
    new_key = base64.b64decode(base64.b64encode(b"\x03" * 32))
    crypto.configure(settings.__class__(**{**settings.__dict__, "active_key_id": "k2",
                                           "encryption_keys": {"k2": new_key, **settings.encryption_keys}}))
    try:
        with engine.transaction() as conn:
            assert exchange_ops.rotate_keys(conn, "k2") == 1
        with engine.reading() as conn:
            row = conn.execute(sa.select(exchanges).where(exchanges.c.id == created["id"])).one()
        assert row.key_id == "k2"
        assert crypto.open_sealed(row.api_secret_ciphertext, "k2", row.user_id, "api_secret") == "rotate-me-secret"
    finally:
        crypto.configure(settings)


def test_sub_account_initial_balance_is_an_opening_credit(api):
    exchange = create_exchange(api)
    account = create_sub_account(api, exchange["id"], "USDT", "1500.25")
    assert (Decimal(account["balance"]), Decimal(account["available"]), Decimal(account["locked"])) == \
        (Decimal("1500.25"), Decimal("1500.25"), 0)
    status, page = api.get(f"/v1/transactions?sub_account_id={account['id']}")
    assert [(t["reason"], t["direction"], Decimal(t["amount"])) for t in page["items"]] == \
        [("opening_balance", "credit", Decimal("1500.25"))]


def test_sub_account_with_a_balance_cannot_be_deleted(api):
    exchange = create_exchange(api)
    account = create_sub_account(api, exchange["id"], "USDT", "1")
    expect_error(api.delete(f"/v1/sub-accounts/{account['id']}"), 409, "SUB_ACCOUNT_HAS_BALANCE")
    api.post(f"/v1/sub-accounts/{account['id']}/withdraw", json={"amount": "1"})
    assert api.delete(f"/v1/sub-accounts/{account['id']}")[0] == 204
    expect_error(api.get(f"/v1/sub-accounts/{account['id']}"), 404)


def test_sub_account_names_are_unique_per_exchange_and_patch_cannot_touch_balance(api):
    exchange = create_exchange(api)
    account = create_sub_account(api, exchange["id"], "USDT", name="wallet")
    expect_error(api.post("/v1/sub-accounts", json={"exchange_id": exchange["id"], "name": "wallet",
                                                    "symbol": "ETH"}), 409, "DUPLICATE_NAME")
    expect_error(api.patch(f"/v1/sub-accounts/{account['id']}", json={"balance": "100"}), 400)
    status, renamed = api.patch(f"/v1/sub-accounts/{account['id']}", json={"name": "spot", "info": {"tier": 1}})
    assert status == 200 and renamed["name"] == "spot" and renamed["info"] == {"tier": 1}
    assert balance_of(api, account["id"]) == 0


def test_sub_account_on_a_missing_exchange_is_404(api):
    expect_error(api.post("/v1/sub-accounts", json={"exchange_id": "00000000-0000-4000-8000-000000000000",
                                                    "name": "x", "symbol": "USDT"}), 404)


def test_user_patch_merges_settings_and_refuses_a_taken_username(api, make_api):
    make_api("bob@example.com")
    assert api.patch("/v1/users/me", json={"settings": {"theme": "dark", "lang": "en"}})[0] == 200
    status, me = api.patch("/v1/users/me", json={"settings": {"lang": "zh"}, "avatar": "https://a.example/x.png"})
    assert status == 200 and me["settings"] == {"theme": "dark", "lang": "zh"}
    assert me["avatar"] == "https://a.example/x.png"
    expect_error(api.patch("/v1/users/me", json={"username": "bob"}), 409, "USERNAME_TAKEN")


def test_user_stats_count_rows_and_sum_balances_per_symbol(api):
    exchange = create_exchange(api)
    create_sub_account(api, exchange["id"], "USDT", "10", name="a")
    create_sub_account(api, exchange["id"], "USDT", "5.5", name="b")
    status, stats = api.get("/v1/users/me/stats")
    assert status == 200
    assert (stats["exchange_count"], stats["sub_account_count"], stats["transaction_count"]) == (1, 2, 2)
    assert [(b["symbol"], Decimal(b["balance"])) for b in stats["balances"]] == [("USDT", Decimal("15.5"))]


def test_admin_lists_gets_disables_and_enables_users(make_api):
    admin = make_api("root@example.com", admin=True)
    user = make_api("carol@example.com")
    status, page = admin.get("/v1/users?limit=1000")
    assert status == 200 and {u["email"] for u in page["items"]} >= {"root@example.com", "carol@example.com"}
    assert admin.get(f"/v1/users/{user.user['id']}")[1]["email"] == "carol@example.com"
    assert admin.post(f"/v1/users/{user.user['id']}/disable")[1]["status"] == "disabled"
    expect_error(user.get("/v1/users/me"), 401, "ACCOUNT_DISABLED")  # at once, not when the token expires
    assert admin.post(f"/v1/users/{user.user['id']}/enable")[1]["status"] == "active"
    assert user.get("/v1/users/me")[0] == 200
    expect_error(admin.get("/v1/users/00000000-0000-4000-8000-000000000000"), 404)


def test_admin_operations_are_403_for_users(api):
    for method, path in (("GET", "/v1/users"), ("GET", f"/v1/users/{api.user['id']}"),
                         ("POST", f"/v1/users/{api.user['id']}/disable"),
                         ("POST", f"/v1/users/{api.user['id']}/enable")):
        expect_error(api.call(method, path), 403, "FORBIDDEN")
