// The README's worked example through a client generated from openapi.yaml (openapi-typescript + openapi-fetch):
// connect an exchange, open an ETH and a USDT sub-account, deposit 10000 USDT, go long 2 ETH at 3000 with a fee
// of 12, then read the balances: ETH 2, USDT 3988.
//
// Every call is typed by the contract: paths, path parameters, bodies and responses. Money is a decimal string
// ("10000"), never a JSON number; passing a number does not compile (tests/test_clients.py checks that, too).
//
// Run (after tsc emits it): node worked_example.js BASE_URL TOKEN  -> prints the balances as JSON.
import createClient from "openapi-fetch";
import type { components, paths } from "tiris-api";

type SubAccount = components["schemas"]["SubAccount"];
type Api = ReturnType<typeof createClient<paths>>;

/** The body of a successful answer; anything else is an error carrying the contract's ErrorResponse body. */
function ok<T>(result: { data?: T; error?: unknown; response: Response }, what: string): T {
  if (result.data === undefined) {
    throw new Error(`${what}: ${result.response.status} ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

async function openSubAccount(api: Api, exchangeId: string, symbol: string): Promise<SubAccount> {
  return ok(await api.POST("/v1/sub-accounts", {
    body: { exchange_id: exchangeId, name: `${symbol} wallet`, symbol },
  }), `create the ${symbol} sub-account`);
}

export async function workedExample(baseUrl: string, token: string): Promise<Record<string, string>> {
  const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

  const exchange = ok(await api.POST("/v1/exchanges", {
    body: { name: "Main Binance", type: "binance", api_key: "AKIAEXAMPLEKEY123456", api_secret: "s3cr3t" },
  }), "create the exchange");
  const eth = await openSubAccount(api, exchange.id, "ETH");
  const usdt = await openSubAccount(api, exchange.id, "USDT");

  const deposit = ok(await api.POST("/v1/sub-accounts/{sub_account_id}/deposit", {
    params: { path: { sub_account_id: usdt.id }, header: { "Idempotency-Key": "worked-example-deposit" } },
    body: { amount: "10000", info: { note: "initial funding" } },
  }), "deposit");
  const direction: "credit" | "debit" = deposit.direction;  // the response is typed, enums included

  const trade = ok(await api.POST("/v1/trading-logs", {
    body: {
      type: "long", source: "manual", message: "Long 2 ETH at 3000", exchange_id: exchange.id,
      trade: {
        base_sub_account_id: eth.id, quote_sub_account_id: usdt.id, symbol: "ETH/USDT",
        volume: "2", price: "3000", fee: "12",
      },
    },
  }), "long trade");

  const page = ok(await api.GET("/v1/sub-accounts", {
    params: { query: { exchange_id: exchange.id, limit: 10 } },
  }), "list the sub-accounts");
  const balances: Record<string, string> = {};
  for (const account of page.items) {
    balances[account.symbol] = account.balance;
  }
  balances["deposit"] = direction;
  balances["trade_transactions"] = String(trade.transaction_ids.length);
  return balances;
}

// As a program: node worked_example.js BASE_URL TOKEN
declare const process: { argv: string[]; exitCode?: number } | undefined;
if (typeof process !== "undefined" && process.argv.length === 4 && process.argv[1]?.endsWith("worked_example.js")) {
  workedExample(process.argv[2] ?? "", process.argv[3] ?? "").then(
    (balances) => console.log(JSON.stringify(balances)),
    (error: unknown) => { console.error(error); process.exitCode = 1; },
  );
}
