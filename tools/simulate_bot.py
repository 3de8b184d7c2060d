"""`tiris simulate-bot`: publishes trading events to JetStream the way the bot does, to exercise the consumer.

`--setup N` creates N users, each with a `simulator` exchange and a funded ETH and USDT sub-account, and writes
them to the plan file; without it the plan file is read. Events conform to asyncapi.yaml (subjects and payload
models are read from it), except the ones asked for with `--invalid` (malformed JSON, a missing field, a fill
naming a sub-account that is not the user's), which the consumer must dead-letter. `--duplicates` re-sends earlier
events with the same `Nats-Msg-Id`; each must take effect once. The stream (TRADING) is the consumer's to create.
"""

import argparse
import asyncio
import copy
import json
import os
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import yaml
from consumers.contract import received_channels
from generated import models

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "simulate-bot"
DEFAULT_MIX = {"orders.filled": 8, "orders.created": 1, "orders.cancelled": 1, "signals": 1, "heartbeat": 1}
# Funding of --setup: fills trade 0.001..0.01 ETH at ~3000 and alternate buy/sell, so this never runs short.
FUNDING = {"ETH": "100", "USDT": "1000000"}
FEE_RATE, FEE_QUANTUM, LOCK_AMOUNT = Decimal("0.001"), Decimal("0.00000001"), Decimal("0.001")


class Event(NamedTuple):
    subject: str
    headers: dict[str, str]
    data: bytes
    kind: str  # "valid" | "duplicate" | "invalid"


def channels() -> dict[str, tuple[str, type]]:
    """event_type -> (subject template, payload model), from asyncapi.yaml so that the contract stays the source."""
    doc = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    found = {}
    for channel in received_channels(doc).values():
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
            event_type = channel["address"].removeprefix("trading.").removesuffix(".{user_id}")
            found[event_type] = (channel["address"], getattr(models, message["payload"]["$ref"].rsplit("/", 1)[-1]))
    return found


def _dec(value: Decimal) -> str:
    return format(value, "f")  # str() may write an exponent (1E+3), which the contract's pattern refuses


def _new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))  # from the seed, so a run can be reproduced


def _payload(event_type: str, user: dict, state: dict, rng: random.Random, envelope: dict) -> dict:
    """A valid payload of `event_type` for `user`; `state` (this user's) is advanced as the consumer's would be."""
    order = {"order_id": f"sim-{rng.getrandbits(48):012x}", "symbol":
             f"{user['base_symbol']}/{user['quote_symbol']}", "side": rng.choice(["buy", "sell"]), "order_type":
             "limit", "base_sub_account_id": user["base_sub_account_id"],
             "quote_sub_account_id": user["quote_sub_account_id"]}
    amount = Decimal(rng.randint(1, 10)) / 1000
    price = Decimal(rng.randint(295000, 305000)) / 100
    if event_type == "orders.filled":
        # Buy, then sell what was bought: the base balance comes back and the quote only pays fees and spreads.
        side = state["side"]
        amount = amount if side == "buy" else state["last_buy"]
        fee = (amount * price * FEE_RATE).quantize(FEE_QUANTUM)
        sign = 1 if side == "buy" else -1
        state["base"] += sign * amount
        state["quote"] -= sign * amount * price + fee
        state["side"], state["last_buy"] = ("sell" if side == "buy" else "buy"), amount
        return {**envelope, **order, "side": side, "order_type": "market", "trade_id": _new_id(rng),
                "amount": _dec(amount), "price": _dec(price), "fee": _dec(fee), "fee_asset": "quote"}
    if event_type.startswith("orders."):  # created, cancelled, failed: notes, no money moves
        reason = {} if event_type == "orders.created" else {"reason": f"Simulated: {event_type[7:]}."}
        return {**envelope, **order, "amount": _dec(amount), "price": _dec(price), **reason}
    if event_type == "balance.updated":
        # The exchange credits a small rebate; previous_balance is what the consumer should hold, so drift is 0.
        previous = state["quote"]
        state["quote"] += Decimal("0.01")
        return {**envelope, "sub_account_id": user["quote_sub_account_id"], "symbol": user["quote_symbol"],
                "previous_balance": _dec(previous), "new_balance": _dec(state["quote"])}
    if event_type in ("balance.locked", "balance.unlocked"):
        # Unlock only what is locked and lock at most half the base, so `locked` stays within 0..balance.
        locking = state["locked"] < LOCK_AMOUNT or (
            event_type == "balance.locked" and state["locked"] < state["base"] / 2)
        state["locked"] += LOCK_AMOUNT if locking else -LOCK_AMOUNT
        return {**envelope, "event_type": "balance.locked" if locking else "balance.unlocked",
                "sub_account_id": user["base_sub_account_id"], "symbol": user["base_symbol"],
                "amount": _dec(LOCK_AMOUNT), "order_id": order["order_id"]}
    if event_type == "errors":
        return {**envelope, "code": "EXCHANGE_TIMEOUT", "message": "Simulated: the exchange did not answer in 5 s.",
                "severity": rng.choice(["warning", "error"])}
    if event_type == "signals":
        return {**envelope, "symbol": order["symbol"], "signal": rng.choice(["buy", "sell", "hold"]),
                "strength": _dec(Decimal(rng.randint(0, 100)) / 100), "message": "Simulated signal."}
    if event_type == "heartbeat":
        return {**envelope, "bot_id": f"{SOURCE}-{user['user_id'][:8]}", "status": "running", "version": "sim"}
    raise ValueError(f"unknown event type {event_type!r}")


def build_events(plan: list[dict], *, count: int, mix: dict[str, float] | None = None, duplicate_ratio: float = 0.0,
                 invalid_ratio: float = 0.0, seed: int | None = None, start: datetime | None = None) -> list[Event]:
    """`count` events for the users of `plan`, in publishing order; valid ones are checked against the models."""
    mix = mix or DEFAULT_MIX
    routes, rng = channels(), random.Random(seed)
    if unknown := set(mix) - set(routes):
        raise ValueError(f"unknown event types in the mix: {sorted(unknown)}")
    if "balance.updated" in mix and not all("quote_balance" in user for user in plan):
        raise ValueError("balance.updated needs the plan's opening balances (a plan written by --setup)")
    states = {user["user_id"]: {"side": "buy", "last_buy": Decimal(0), "locked": Decimal(0),
                                "base": Decimal(user.get("base_balance", "0")),
                                "quote": Decimal(user.get("quote_balance", "0"))} for user in plan}
    start = start or datetime.now(timezone.utc) - timedelta(milliseconds=count)  # 1 ms apart, none in the future
    types, weights = list(mix), list(mix.values())
    if count and not plan:
        raise ValueError("the plan has no users")
    events: list[Event] = []
    valid: list[Event] = []
    for i in range(count):
        user, roll = rng.choice(plan), rng.random()
        event_type = rng.choices(types, weights)[0]
        envelope = {"event_id": _new_id(rng), "event_type": event_type, "user_id": user["user_id"],
                    "timestamp": (start + timedelta(milliseconds=i)).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"), "exchange_id": user["exchange_id"], "source": SOURCE, "schema_version": 1}
        if roll < invalid_ratio:
            events.append(_invalid(user, copy.deepcopy(states[user["user_id"]]), rng, envelope, routes))
        elif roll < invalid_ratio + duplicate_ratio and valid:
            events.append(rng.choice(valid)._replace(kind="duplicate"))  # same bytes, same Nats-Msg-Id
        else:
            payload = _payload(event_type, user, states[user["user_id"]], rng, envelope)
            address, model = routes[payload["event_type"]]
            model.model_validate(payload)  # a bug here must not reach the stream as a "valid" event
            valid.append(Event(address.replace("{user_id}", user["user_id"]), {"Nats-Msg-Id": payload["event_id"]},
                               json.dumps(payload).encode(), "valid"))
            events.append(valid[-1])
    return events


def _invalid(user: dict, scratch_state: dict, rng: random.Random, envelope: dict, routes: dict) -> Event:
    """An event the consumer must dead-letter; built on a copy of the user's state so valid events are unaffected."""
    envelope = {**envelope, "event_type": "orders.filled"}
    payload = _payload("orders.filled", user, scratch_state, rng, envelope)
    address, model = routes["orders.filled"]
    subject, flavour = address.replace("{user_id}", user["user_id"]), rng.choice(["json", "missing", "foreign"])
    if flavour == "json":
        data = json.dumps(payload).encode()
        return Event(subject, {"Nats-Msg-Id": _new_id(rng)}, data[: len(data) // 2], "invalid")  # unclosed object
    if flavour == "missing":
        del payload[rng.choice([name for name, field in model.model_fields.items()
                                if field.is_required() and name != "event_id"])]
    else:  # schema-valid, but the base sub-account is nobody's: the consumer must refuse it, not book it
        payload["base_sub_account_id"] = _new_id(rng)
    return Event(subject, {"Nats-Msg-Id": payload["event_id"]}, json.dumps(payload).encode(), "invalid")


async def publish(nats_url: str, events: list[Event], rate: float, progress: bool = True,
                  ack_timeout: float = 30.0) -> dict:
    """Publishes in order, `rate` events/s (0: as fast as acks allow), and waits for every ack."""
    import nats

    async def say(error: Exception) -> None:  # one line per problem, not nats-py's logged tracebacks
        print(f"simulate-bot: nats: {error}", file=sys.stderr)

    try:  # max_reconnect_attempts=0 would mean "forever" in nats-py
        nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1, reconnect_time_wait=0.5,
                                error_cb=say)
    except nats.errors.NoServersError as error:
        raise ConnectionError(f"cannot reach NATS at {nats_url}") from error
    js, futures, started, shown = nc.jetstream(), [], time.monotonic(), 0.0
    try:
        for i, event in enumerate(events, 1):
            if rate > 0 and (ahead := started + i / rate - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            futures.append(await js.publish_async(event.subject, event.data, headers=dict(event.headers)))
            if progress and (time.monotonic() - shown > 0.2 or i == len(events)):
                shown = time.monotonic()
                print(f"\rsimulate-bot: {i}/{len(events)} sent, {i / max(shown - started, 1e-9):,.0f}/s",
                      end="", file=sys.stderr, flush=True)
        done, pending = await asyncio.wait(futures, timeout=ack_timeout) if futures else (set(), set())
    finally:
        if progress and events:
            print(file=sys.stderr)
        await nc.close()
    counts = Counter(published=0, duplicates=0, failed=0, unacked=len(pending))
    errors = Counter()
    for future in done:
        if future.exception() is not None:
            counts["failed"] += 1
            errors[type(future.exception()).__name__] += 1
        else:
            counts["published"] += 1
            counts["duplicates"] += bool(future.result().duplicate)  # None (not False) when new
    return {**counts, "errors": dict(errors), "seconds": round(time.monotonic() - started, 3)}


def setup(count: int) -> list[dict]:
    """Creates `count` users, each with an exchange and two funded sub-accounts, through the db layer."""
    from db import crypto, engine, exchanges, sub_accounts, users
    from db.access import Caller
    from tiris import config

    settings = config.use(config.load())
    engine.configure(settings)
    crypto.configure(settings)  # the simulator's exchanges have sealed credentials
    tag, plan = secrets.token_hex(4), []
    for n in range(1, count + 1):
        with engine.transaction() as conn:  # one user per transaction: a failure leaves whole users only
            user = users.ensure(conn, f"simbot-{tag}-{n}@example.com")
            caller = Caller(id=user["id"], role="user")
            exchange = exchanges.create(conn, caller, name=f"simulator-{tag}", type_="simulator",
                                        api_key=f"sim-{uuid.uuid4().hex}", api_secret=secrets.token_hex(16))
            accounts = {symbol: sub_accounts.create(conn, caller, exchange_id=exchange["id"], name=symbol,
                                                    symbol=symbol, opening_balance=Decimal(balance), info={})
                        for symbol, balance in FUNDING.items()}
        plan.append({"user_id": str(user["id"]), "exchange_id": str(exchange["id"]),
                     "base_sub_account_id": str(accounts["ETH"]["id"]), "base_symbol": "ETH",
                     "base_balance": FUNDING["ETH"], "quote_sub_account_id": str(accounts["USDT"]["id"]),
                     "quote_symbol": "USDT", "quote_balance": FUNDING["USDT"]})
    return plan


def _mix(text: str) -> dict[str, float]:
    try:
        mix = {name.strip(): float(weight) for name, weight in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError("expected EVENT_TYPE=WEIGHT[,...], e.g. orders.filled=8,heartbeat=1")
    if any(weight < 0 for weight in mix.values()) or not sum(mix.values()):
        raise argparse.ArgumentTypeError("weights must be >= 0 and not all 0")
    return mix


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("simulate-bot", help="publish simulated bot events to JetStream",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--plan", type=Path, default=Path(".tiris/simulate-bot-plan.json"),
                        help="the users to simulate, as JSON (written by --setup) (default: %(default)s)")
    parser.add_argument("--setup", type=int, metavar="N", help="first create N funded users and write --plan")
    parser.add_argument("--count", type=int, default=1000, help="events to send, all kinds (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=0, help="events per second, 0 = unpaced (default: 0)")
    parser.add_argument("--duplicates", type=float, default=0.0, help="share re-sent with the same id (0..1)")
    parser.add_argument("--invalid", type=float, default=0.0, help="share the consumer must dead-letter (0..1)")
    parser.add_argument("--seed", type=int, help="makes the events reproducible; the same seed re-sends the same "
                        "event ids, which the consumer must ignore (default: random, printed)")
    parser.add_argument("--mix", type=_mix, default=DEFAULT_MIX, help="EVENT_TYPE=WEIGHT,... (default: "
                        + ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()) + ")")
    parser.add_argument("--dry-run", action="store_true", help="build and validate the events, publish nothing")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    if not (0 <= args.duplicates and 0 <= args.invalid and args.duplicates + args.invalid < 1):
        sys.exit("simulate-bot: --duplicates and --invalid must be >= 0 and add up to less than 1")
    if args.setup:
        plan = setup(args.setup)
        args.plan.parent.mkdir(parents=True, exist_ok=True)
        args.plan.write_text(json.dumps(plan, indent=1))
        print(f"simulate-bot: created {len(plan)} users, plan written to {args.plan}", file=sys.stderr)
    elif not args.plan.exists():
        sys.exit(f"simulate-bot: no plan at {args.plan}; create one with --setup N")
    else:
        plan = json.loads(args.plan.read_text())
    seed = random.randrange(2**32) if args.seed is None else args.seed
    try:
        events = build_events(plan, count=args.count, mix=args.mix, duplicate_ratio=args.duplicates,
                              invalid_ratio=args.invalid, seed=seed)
    except ValueError as error:
        sys.exit(f"simulate-bot: {error}")
    kinds = Counter(event.kind for event in events)
    print(f"simulate-bot: {len(events)} events for {len(plan)} users (seed {seed}): "
          + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())), file=sys.stderr)
    if args.dry_run or not events:
        return
    try:
        counts = asyncio.run(publish(args.nats_url, events, args.rate))
    except ConnectionError as error:
        sys.exit(f"simulate-bot: {error}")
    print(json.dumps(counts))
    if "NoStreamResponseError" in counts["errors"]:
        print("simulate-bot: no stream captures trading.>; start the consumer first (it creates TRADING)",
              file=sys.stderr)
    if counts["failed"] or counts["unacked"]:
        sys.exit(1)
