"""Building blocks the API tests share: an exchange with funded sub-accounts, as a client would make them."""

from decimal import Decimal

from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.oauth_provider import REDIRECT_URI


def create_exchange(api, name="Main", api_key="AKIAEXAMPLEKEY123456", api_secret="s3cr3t-value-0001"):
    status, body = api.post("/v1/exchanges", json={"name": name, "type": "binance", "api_key": api_key,
                                                    "api_secret": api_secret})
    assert status == 201, body
    return body


def create_sub_account(api, exchange_id, symbol, balance=None, name=None):
    payload = {"exchange_id": exchange_id, "name": name or f"{symbol} wallet", "symbol": symbol}
    if balance is not None:
        payload["balance"] = balance
    status, body = api.post("/v1/sub-accounts", json=payload)
    assert status == 201, body
    return body


def balance_of(api, sub_account_id) -> Decimal:
    status, body = api.get(f"/v1/sub-accounts/{sub_account_id}")
    assert status == 200, body
    return Decimal(body["balance"])


def trade(api, exchange_id, kind, base_id, quote_id, volume, price, fee="0", **extra):
    return api.post("/v1/trading-logs", json={
        "type": kind, "source": "manual", "message": f"{kind} {volume} at {price}", "exchange_id": exchange_id,
        "trade": {"base_sub_account_id": base_id, "quote_sub_account_id": quote_id, "volume": volume,
                  "price": price, "fee": fee, **extra}})


def call_as_each(case, tokens, **kwargs) -> list:
    """Calls a Schemathesis case with every token, validates it with every check, and returns the responses.

    A generated cursor is schema-valid but was never issued by the service, a generated login `redirect_uri`
    is schema-valid but not on the deployment's allow-list (configuration, which no schema can state), and a
    replay's start may lie beyond the stream's end: their documented 400s are right, so the positive-data check is
    off for such cases only. A negative case whose point is the missing Authorization
    header is sent without a token (adding one would turn it into a false "schema-violating request accepted").
    """
    off_allow_list = case.operation.path == "/v1/auth/login" and isinstance(case.body, dict) and case.body.get(
        "redirect_uri") != REDIRECT_URI
    # A replay's start must not lie beyond the stream's end (400): the stream's state, not the schema, decides.
    replay = case.operation.path == "/v1/events/replay"
    # A PnL range of at most 3660 days (400 beyond) is a rule between two parameters, which no schema states.
    ranged = case.operation.path == "/v1/portfolio/pnl" and {"start_time", "end_time"} & set(case.query or {})
    excluded = [positive_data_acceptance] if "cursor" in (case.query or {}) or off_allow_list or replay or ranged \
        else []
    if case.operation.schema.is_security_param_negated(case):
        return [case.call_and_validate(excluded_checks=excluded, **kwargs)]
    return [case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded, **kwargs)
            for token in tokens]
