"""Clients generated from openapi.yaml, at test time, work against the real service and type-check their callers.

- TypeScript: types from openapi-typescript, calls through openapi-fetch. clients/typescript/worked_example.ts must
  pass `tsc --noEmit`; copies of it with one deliberate mistake each (an amount as a number, an unknown trade type,
  a misspelt path, a missing path parameter) must not; and compiled, it runs the worked example against the server.
- Python: openapi-python-client, generated into a temporary directory and imported, runs the worked example.

Nothing generated is committed: it goes to pytest's temporary directories, except the compiled TypeScript program,
which must sit under node_modules (git-ignored) for Node to resolve `openapi-fetch`; it is removed afterwards.
"""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tests.server import live_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "node_modules" / ".bin"
TS_DIR = ROOT / "clients" / "typescript"
TOOL_TIMEOUT = 120  # each tool takes 0.2-3 s; this only bounds a hang
TSC_ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+): (?P<message>.*)$", re.M)


def _run(command: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          **kw)


def _token(service_env: dict, email: str) -> str:
    """An access token as an operator gets one: `tiris token`, against the test's database."""
    result = _run([sys.executable, "-m", "tools.cli", "token", "--email", email], env={**os.environ, **service_env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---------------------------------------------------------------- TypeScript


@pytest.fixture(scope="module")
def ts_types(tmp_path_factory) -> Path:
    """schema.d.ts generated from openapi.yaml."""
    out = tmp_path_factory.mktemp("ts-types") / "schema.d.ts"
    # openapi-typescript 7 makes a property with a `default` required (`defaultNonNullable`), also in request
    # bodies, so `{amount}` would not be a valid Deposit (its `reason` defaults to deposit). Off: optional stays so.
    result = _run([BIN / "openapi-typescript", "openapi.yaml", "-o", out, "--default-non-nullable", "false"])
    assert result.returncode == 0 and out.exists(), result.stdout + result.stderr
    return out


def _tsconfig(where: Path, files: list[Path], types: Path, **options) -> Path:
    """A tsconfig extending clients/typescript's, with `tiris-api` pointing at the generated types; files outside
    the repository also need `openapi-fetch` mapped to the project's node_modules."""
    config = where / f"tsconfig.{uuid.uuid4().hex[:8]}.json"
    config.write_text(json.dumps({
        "extends": str(TS_DIR / "tsconfig.json"),
        "compilerOptions": {"paths": {"tiris-api": [str(types)], "openapi-fetch": [str(ROOT / "node_modules" /
                                                                                      "openapi-fetch")]}, **options},
        "files": [str(f) for f in files]}))
    return config


def test_typescript_worked_example_type_checks(ts_types, tmp_path):
    result = _run([BIN / "tsc", "--noEmit", "-p", _tsconfig(tmp_path, [TS_DIR / "worked_example.ts"], ts_types)])
    assert result.returncode == 0, result.stdout + result.stderr


# (name, text in worked_example.ts, its wrong replacement, the TypeScript error expected on that line)
WRONG_CALLS = [
    ("amount_as_number", 'amount: "10000"', "amount: 10000", "TS2322"),  # money is a decimal string
    ("volume_as_number", 'volume: "2"', "volume: 2", "TS2322"),
    ("unknown_trade_type", 'type: "long"', 'type: "buy"', "TS2322"),
    ("misspelt_path", '"/v1/sub-accounts/{sub_account_id}/deposit"', '"/v1/sub-accounts/{sub_account_id}/deposits"',
     "TS2345"),
    ("missing_path_parameter", "path: { sub_account_id: usdt.id }", "path: {}", "TS2741"),
]


def test_typescript_types_refuse_wrong_calls(ts_types, tmp_path):
    source = (TS_DIR / "worked_example.ts").read_text()
    # The unchanged copy compiles in the same place and run, so every error below comes from its one change.
    files = {"unchanged": (tmp_path / "unchanged.ts", source, None)}
    for name, right, wrong, _ in WRONG_CALLS:
        assert source.count(right) == 1, f"{right!r} must occur once in worked_example.ts"
        line = source[:source.index(right)].count("\n") + 1
        files[name] = (tmp_path / f"{name}.ts", source.replace(right, wrong), line)
    for path, text, _ in files.values():
        path.write_text(text)
    result = _run([BIN / "tsc", "--noEmit", "-p", _tsconfig(tmp_path, [f[0] for f in files.values()], ts_types)])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors: dict[str, list[re.Match]] = {}
    for match in TSC_ERROR.finditer(output):
        errors.setdefault(Path(match["file"]).stem, []).append(match)
    assert "unchanged" not in errors, output
    for name, _, _, code in WRONG_CALLS:
        first = errors.get(name, [None])[0]
        assert first is not None, f"{name}: no type error\n{output}"
        assert (int(first["line"]), first["code"]) == (files[name][2], code), f"{name}: {first[0]}"
    amount = errors["amount_as_number"][0]["message"]
    assert amount == "Type 'number' is not assignable to type 'string'.", amount


def test_typescript_worked_example_runs_against_the_service(ts_types, live_server, service_env, tmp_path):
    # Under node_modules (git-ignored), so that Node resolves `openapi-fetch` from the compiled file; the
    # package.json makes it an ES module (Node does not look for a package scope above node_modules).
    out = ROOT / "node_modules" / ".cache" / "tiris-clients" / uuid.uuid4().hex
    try:
        out.mkdir(parents=True)
        (out / "package.json").write_text('{"type": "module"}')
        config = _tsconfig(tmp_path, [TS_DIR / "worked_example.ts"], ts_types, noEmit=False, outDir=str(out))
        compiled = _run([BIN / "tsc", "-p", config])
        assert compiled.returncode == 0, compiled.stdout + compiled.stderr
        result = _run(["node", out / "worked_example.js", live_server.url, _token(service_env, "ts@example.com")])
    finally:
        shutil.rmtree(out, ignore_errors=True)
        try:
            out.parent.rmdir()  # unless another run is using it
        except OSError:
            pass
    assert result.returncode == 0, result.stdout + result.stderr
    balances = json.loads(result.stdout)
    assert (Decimal(balances["ETH"]), Decimal(balances["USDT"])) == (Decimal(2), Decimal(3988)), balances
    assert balances["USDT"] == "3988.000000000000000000"  # decimals travel as exact strings
    assert (balances["deposit"], balances["trade_transactions"]) == ("credit", "2")


# ---------------------------------------------------------------- Python


@pytest.fixture
def python_client(tmp_path, monkeypatch):
    """The `tiris_client` package generated from openapi.yaml, importable for this test only."""
    config = tmp_path / "client-config.yaml"
    # No post-hooks: they would run ruff over the output, which only formats it.
    config.write_text("package_name_override: tiris_client\nproject_name_override: tiris-client\npost_hooks: []\n")
    package = tmp_path / "generated" / "tiris_client"
    result = _run([Path(sys.executable).parent / "openapi-python-client", "generate", "--path", "openapi.yaml",
                   "--output-path", package, "--meta", "none", "--config", config])
    assert result.returncode == 0 and (package / "__init__.py").exists(), result.stdout + result.stderr
    monkeypatch.syspath_prepend(str(package.parent))
    importlib.invalidate_caches()
    yield importlib.import_module("tiris_client")
    for name in [n for n in sys.modules if n == "tiris_client" or n.startswith("tiris_client.")]:
        del sys.modules[name]


def test_python_client_runs_the_worked_example(python_client, live_server, service_env):
    from tiris_client import AuthenticatedClient
    from tiris_client.api.exchanges import create_exchange
    from tiris_client.api.sub_accounts import create_sub_account, deposit_to_sub_account, list_sub_accounts
    from tiris_client.api.trading_logs import create_trading_log
    from tiris_client.api.users import get_current_user
    from tiris_client.models import (Deposit, ErrorResponse, ExchangeCreate, ExchangeType, SubAccount,
                                     SubAccountCreate, SubAccountList, Trade, TradeLogCreate, TradeType, TradingLog,
                                     TradingLogSource, Transaction, User)

    token = _token(service_env, "py-client@example.com")
    with AuthenticatedClient(base_url=live_server.url, token=token, raise_on_unexpected_status=True) as api:
        me = get_current_user.sync(client=api)
        assert isinstance(me, User) and me.email == "py-client@example.com"
        exchange = create_exchange.sync(client=api, body=ExchangeCreate(
            name="Main Binance", type_=ExchangeType.BINANCE, api_key="AKIAEXAMPLEKEY123456", api_secret="s3cr3t"))
        accounts = {}
        for symbol in ("ETH", "USDT"):
            accounts[symbol] = create_sub_account.sync(client=api, body=SubAccountCreate(
                exchange_id=exchange.id, name=f"{symbol} wallet", symbol=symbol))
            assert isinstance(accounts[symbol], SubAccount), accounts[symbol]
        eth, usdt = accounts["ETH"], accounts["USDT"]
        credit = deposit_to_sub_account.sync(client=api, sub_account_id=usdt.id, body=Deposit(amount="10000"),
                                             idempotency_key="py-client-deposit")
        assert isinstance(credit, Transaction) and credit.closing_balance == "10000.000000000000000000", credit
        log = create_trading_log.sync(client=api, body=TradeLogCreate(
            type_=TradeType.LONG, source=TradingLogSource.MANUAL, message="Long 2 ETH at 3000",
            exchange_id=exchange.id, trade=Trade(base_sub_account_id=eth.id, quote_sub_account_id=usdt.id,
                                                 symbol="ETH/USDT", volume="2", price="3000", fee="12")))
        assert isinstance(log, TradingLog) and len(log.transaction_ids) == 2, log
        page = list_sub_accounts.sync(client=api, exchange_id=exchange.id)
        assert isinstance(page, SubAccountList), page
        balances = {account.symbol: account.balance for account in page.items}
        assert balances == {"ETH": "2.000000000000000000", "USDT": "3988.000000000000000000"}
        # A documented error comes back typed as well: the 422 of a deposit past the ledger's 10^20 ceiling.
        short = deposit_to_sub_account.sync_detailed(client=api, sub_account_id=usdt.id,
                                                     body=Deposit(amount="99999999999999999999"))
        assert short.status_code == 422 and isinstance(short.parsed, ErrorResponse), short
        assert short.parsed.error.code == "AMOUNT_OUT_OF_RANGE"
