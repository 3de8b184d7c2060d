"""Table tests for planning a reversal (db.booking.plan_entry with db.reversals' rules): no database, milliseconds.

A reversal undoes every leg its transactions' entry booked, in the other direction with the same amount, only the
user's own legs, never a reversing leg, never a leg reversed already, and never below what is locked.
"""

import datetime as dt
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from db.booking import Book, plan_entry
from db.commands import Entry, Reversal
from db.errors import Conflict, InsufficientBalance, NotFound, Refused
from db.legs import Account
from db.reversals import Original

D = Decimal
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
USER, OTHER, EXCHANGE, LOG = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
ETH, USDT = Account(uuid.uuid4(), USER, EXCHANGE, "ETH", D(2), D(0)), Account(uuid.uuid4(), USER, EXCHANGE, "USDT",
                                                                                D(3988), D(0))
BASE = Original(uuid.uuid4(), NOW, USER, ETH.id, "credit", D(2), D(3000), "USDT", LOG)
QUOTE = Original(uuid.uuid4(), NOW, USER, USDT.id, "debit", D(6012), D(3000), "USDT", LOG)
TRADE = {BASE.id: (BASE, QUOTE), QUOTE.id: (QUOTE, BASE)}  # what reversals.read gives: the named leg first


def plan(originals, *ids, accounts=(ETH, USDT), user=USER):
    return plan_entry(Entry(user, Reversal(ids, "typo", {"ticket": 1})),
                      Book({a.id: a for a in accounts}, {}, originals=originals))


def test_a_trade_named_by_one_leg_is_undone_leg_by_leg_in_the_other_direction():
    result = plan(TRADE, QUOTE.id)
    assert [(leg.sub_account_id, leg.direction, leg.amount, leg.reason, leg.price, leg.fee, closing)
            for leg, closing in result.legs] == [
        (USDT.id, "credit", D(6012), "reversal", D(3000), None, D(10000)),
        (ETH.id, "debit", D(2), "reversal", D(3000), None, D(0))]
    assert result.reverses == [QUOTE.id, BASE.id]
    assert result.info == {"ticket": 1, "reason": "typo"}


def test_both_legs_named_are_undone_once():
    assert plan(TRADE, BASE.id, QUOTE.id).reverses == [BASE.id, QUOTE.id]


@pytest.mark.parametrize("originals, ids, error, code", [
    ({}, (BASE.id,), NotFound, "NOT_FOUND"),  # no such transaction
    ({BASE.id: (replace(BASE, user_id=OTHER),)}, (BASE.id,), NotFound, "NOT_FOUND"),  # someone else's
    (TRADE, (), Refused, "NOT_REVERSIBLE"),  # a log that moved nothing
    ({BASE.id: (replace(BASE, reverses=uuid.uuid4()),)}, (BASE.id,), Refused, "NOT_REVERSIBLE"),  # a reversal
    ({BASE.id: (BASE, replace(QUOTE, reversed_by=uuid.uuid4()))}, (BASE.id,), Conflict, "ALREADY_REVERSED"),
])
def test_what_may_not_be_reversed_is_refused(originals, ids, error, code):
    with pytest.raises(error) as refused:
        plan(originals, *ids)
    assert refused.value.code == code


def test_a_leg_on_a_deleted_sub_account_is_not_found():
    with pytest.raises(NotFound):
        plan(TRADE, BASE.id, accounts=(USDT,))


def test_a_reversal_never_takes_a_balance_below_what_is_locked():
    with pytest.raises(InsufficientBalance):
        plan(TRADE, BASE.id, accounts=(replace(ETH, locked=D("0.5")), USDT))
