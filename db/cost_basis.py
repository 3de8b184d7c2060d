"""The cost-basis rules of DESIGN §9 as pure functions: weighted average cost per base sub-account, in its quote.

No database here: tests/test_cost_basis.py checks each rule against hand-computed figures in milliseconds.

A position keeps its total `cost` rather than its average, so that nothing is divided when it grows:
- a buy adds what it paid in quote (`price*volume + fee` with a quote fee, `price*volume` with a base fee) to the
  cost and what it received in base (`volume`, or `volume - fee` with a base fee) to the quantity;
- a sell realizes what it received in quote minus the cost of the base that left (`volume`, or `volume + fee` with a
  base fee): with a quote fee that is `price*volume - fee - average_cost*volume`;
- a transfer of the base asset (deposit, withdrawal, adjustment, a leg that is not this position's trade) changes
  the quantity and moves the cost with it at the average cost, which therefore does not change; what arrives while
  the quantity is 0 arrives at no cost;
- each of these returns an `Effect` (what it did, as signed changes); a reversal applies the opposite effect, so the
  position's figures come back exactly, whatever was booked in between.

Rounding: the only division is the cost that leaves or arrives with a quantity (`cost * moved / quantity`), rounded
half-even to 18 places (all of the cost when all of the quantity leaves); a base-asset fee is valued in quote at the
trade's price, and a notional is `price*volume`, both rounded half-even to 18 places. The average cost shown is
`cost / quantity` rounded half-even to 18 places; the stored figures never are.
"""

from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from db.legs import MONEY_CONTEXT, QUANTUM

ZERO = Decimal(0)


def rounded(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


@dataclass(frozen=True)
class Effect:
    """What one booked leg did to a position: signed changes, and the price it marks the pair at (trades only)."""
    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    volume: Decimal = ZERO  # traded notional, in quote
    trades: int = 0
    wins: int = 0
    losses: int = 0
    price: Decimal | None = None

    def undone(self) -> "Effect":
        """The opposite effect (a reversal's): every change negated; the pair's last price is left as it is."""
        return Effect(*(-getattr(self, f.name) for f in fields(self) if f.name != "price"), price=None)


@dataclass(frozen=True)
class Position:
    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    volume: Decimal = ZERO
    trades: int = 0
    wins: int = 0
    losses: int = 0
    last_price: Decimal | None = None

    def apply(self, effect: Effect) -> "Position":
        with localcontext(MONEY_CONTEXT):
            return Position(self.quantity + effect.quantity, self.cost + effect.cost,
                            self.realized_pnl + effect.realized_pnl, self.fees + effect.fees,
                            self.volume + effect.volume, self.trades + effect.trades, self.wins + effect.wins,
                            self.losses + effect.losses,
                            effect.price if effect.price is not None else self.last_price)

    @property
    def average_cost(self) -> Decimal | None:
        if self.quantity <= 0:
            return None
        with localcontext(MONEY_CONTEXT):
            return rounded(self.cost / self.quantity)

    def unrealized_pnl(self, price: Decimal | None) -> Decimal:
        """Quantity at `price` minus its cost (0 without a price), rounded half-even to 18 places."""
        if price is None:
            return ZERO
        with localcontext(MONEY_CONTEXT):
            return rounded(self.quantity * price - self.cost)


def _cost_of(position: Position, quantity: Decimal) -> Decimal:
    """The cost that goes with `quantity` of the position at its average cost."""
    if position.quantity <= 0:
        return ZERO
    if quantity == position.quantity:
        return position.cost
    with localcontext(MONEY_CONTEXT):
        return rounded(position.cost * quantity / position.quantity)


def buy(position: Position, *, received: Decimal, paid: Decimal, fee_value: Decimal, notional: Decimal,
        price: Decimal) -> Effect:
    """A buy: `received` base (net of a base fee) for `paid` quote (with a quote fee)."""
    return Effect(quantity=received, cost=paid, fees=fee_value, volume=notional, trades=1, price=price)


def sell(position: Position, *, delivered: Decimal, proceeds: Decimal, fee_value: Decimal, notional: Decimal,
         price: Decimal) -> Effect:
    """A sell: `delivered` base (with a base fee) left the position for `proceeds` quote (net of a quote fee)."""
    cost = _cost_of(position, delivered)
    with localcontext(MONEY_CONTEXT):
        realized = proceeds - cost
    return Effect(quantity=-delivered, cost=-cost, realized_pnl=realized, fees=fee_value, volume=notional, trades=1,
                  wins=int(realized > 0), losses=int(realized < 0), price=price)


def transfer(position: Position, delta: Decimal) -> Effect:
    """The base asset moved in (delta > 0) or out without a trade: the average cost stays."""
    if delta >= 0:
        if position.quantity <= 0:
            return Effect(quantity=delta)
        with localcontext(MONEY_CONTEXT):
            return Effect(quantity=delta, cost=rounded(position.cost * delta / position.quantity))
    with localcontext(MONEY_CONTEXT):
        return Effect(quantity=delta, cost=-_cost_of(position, -delta))


def trade_figures(price: Decimal, volume: Decimal, fee: Decimal, fee_in_base: bool) -> tuple[Decimal, Decimal]:
    """(notional, fee in quote) of a trade."""
    with localcontext(MONEY_CONTEXT):
        return rounded(price * volume), rounded(fee * price) if fee_in_base else fee
