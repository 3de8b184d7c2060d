"""The cost-basis rules (db/cost_basis.py, DESIGN §9), step by step, against figures computed by hand."""

from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from db import cost_basis
from db.cost_basis import Position


def buy(volume, price, fee="0", fee_in_base=False):
    def step(position):
        v, p, f = D(volume), D(price), D(fee)
        notional, fee_value = cost_basis.trade_figures(p, v, f, fee_in_base)
        received, paid = (v - f, notional) if fee_in_base else (v, notional + f)
        return cost_basis.buy(position, received=received, paid=paid, fee_value=fee_value, notional=notional, price=p)
    return step


def sell(volume, price, fee="0", fee_in_base=False):
    def step(position):
        v, p, f = D(volume), D(price), D(fee)
        notional, fee_value = cost_basis.trade_figures(p, v, f, fee_in_base)
        delivered, proceeds = (v + f, notional) if fee_in_base else (v, notional - f)
        return cost_basis.sell(position, delivered=delivered, proceeds=proceeds, fee_value=fee_value,
                               notional=notional, price=p)
    return step


def transfer(delta):
    return lambda position: cost_basis.transfer(position, D(delta))


def run(steps, reverse: int | None = None) -> Position:
    """Applies the steps in order; then, if `reverse` is given, undoes that step's effect (a reversal)."""
    position, effects = Position(), []
    for step in steps:
        effect = step(position)
        effects.append(effect)
        position = position.apply(effect)
    if reverse is not None:
        position = position.apply(effects[reverse].undone())
    return position


# (name, steps, reversed step, quantity, cost, average cost, realized, fees, trades, wins, losses)
CASES = [
    ("the worked example of DESIGN §9", [buy("2", "3000", "12"), sell("1", "3500", "7")], None,
     "1", "3006", "3006", "487", "19", 2, 1, 0),
    ("partial sells at the average cost, a win then a loss",
     [buy("3", "100"), buy("1", "200"), sell("1", "150", "1"), sell("3", "110")], None,
     "0", "0", None, "-21", "1", 4, 1, 1),
    ("a loss: the sell's fee and the buy's fee both count against it", [buy("1", "100", "1"), sell("1", "90", "1")],
     None, "0", "0", None, "-12", "2", 2, 0, 1),
    ("a base-asset fee reduces the quantity received and counts in quote at the trade's price",
     [buy("1", "3000", "0.001", fee_in_base=True)], None,
     "0.999", "3000", "3003.003003003003003003", "0", "3", 1, 0, 0),
    ("a base-asset fee on a sell leaves the position at its average cost",
     [buy("1", "3000", "0.001", fee_in_base=True), sell("0.5", "3100", "0.0005", fee_in_base=True)], None,
     "0.4985", "1496.996996996996996997", "3003.003003003003003003", "46.996996996996996997", "4.55", 2, 1, 0),
    ("transfers of the base asset move the quantity, not the average cost",
     [buy("2", "100"), transfer("1"), transfer("-1.5")], None, "1.5", "150", "100", "0", "0", 1, 0, 0),
    ("what arrives while nothing is held arrives at no cost", [transfer("1"), buy("1", "100")], None,
     "2", "100", "50", "0", "0", 1, 0, 0),
    ("a withdrawal of everything takes all of the cost", [buy("3", "10", "1"), transfer("-3")], None,
     "0", "0", None, "0", "1", 1, 0, 0),
    ("a reversed sell gives back its quantity at the cost it took, and its realized PnL and fee",
     [buy("2", "100", "2"), sell("1", "150", "1"), buy("1", "130")], 1, "3", "332", "110.666666666666666667",
     "0", "2", 2, 0, 0),
    ("a reversed buy takes back exactly what it added",
     [buy("1", "100"), buy("1", "300", "3")], 1, "1", "100", "100", "0", "0", 1, 0, 0),
]


@pytest.mark.parametrize("name, steps, reverse, quantity, cost, average, realized, fees, trades, wins, losses", CASES,
                         ids=[case[0] for case in CASES])
def test_cost_basis_rules_match_hand_computed_figures(name, steps, reverse, quantity, cost, average, realized, fees,
                                                      trades, wins, losses):
    position = run(steps, reverse)
    assert position.quantity == D(quantity)
    assert position.cost == D(cost)
    assert position.average_cost == (D(average) if average is not None else None)
    assert position.realized_pnl == D(realized)
    assert position.fees == D(fees)
    assert (position.trades, position.wins, position.losses) == (trades, wins, losses)


def test_unrealized_pnl_of_the_worked_example_at_the_last_price_is_494():
    position = run([buy("2", "3000", "12"), sell("1", "3500", "7")])
    assert position.unrealized_pnl(position.last_price) == D(494)
    assert position.last_price == D(3500)


def test_a_reversal_does_not_move_the_pairs_last_price():
    steps = [buy("1", "100"), buy("1", "120")]
    assert run(steps, reverse=1).last_price == D(120)

_amounts = st.integers(min_value=1, max_value=10 ** 6).map(lambda n: D(n) / 1000)
_steps = st.lists(st.tuples(st.sampled_from(["buy", "sell", "in", "out"]), _amounts, _amounts, _amounts), max_size=30)


@settings(max_examples=200, deadline=None, database=None)
@given(_steps, st.randoms(use_true_random=False))
def test_undoing_every_effect_in_any_order_returns_exactly_to_nothing(steps, rng):
    position, effects = Position(), []
    for kind, volume, price, fee in steps:
        if kind in ("sell", "out"):
            volume = min(volume, position.quantity)
            if volume <= 0:
                continue
        step = {"buy": buy(str(volume), str(price), str(fee)), "sell": sell(str(volume), str(price), "0"),
                "in": transfer(str(volume)), "out": transfer(str(-volume))}[kind]
        effect = step(position)
        effects.append(effect)
        position = position.apply(effect)
    assert position.realized_pnl == sum((e.realized_pnl for e in effects), D(0))
    rng.shuffle(effects)
    for effect in effects:
        position = position.apply(effect.undone())
    assert (position.quantity, position.cost, position.realized_pnl, position.fees, position.trades) == (0, 0, 0, 0, 0)
