"""Balance checkpoints: what lets old transactions be archived without losing the ledger's invariant.

A checkpoint records, per sub-account, the balance and the sums of credits and debits of every transaction before
`as_of` (the SQL function record_balance_checkpoints, migration 0004, also used by the TimescaleDB archive job). The
invariant then reads: balance = last checkpoint's balance + credits - debits since it (no checkpoint: since ever).
"""

import datetime as dt

import sqlalchemy as sa


def record(conn: sa.Connection, cutoff: dt.datetime) -> int:
    """Checkpoints every sub-account with transactions before `cutoff`; returns how many were recorded."""
    return conn.execute(sa.text("SELECT record_balance_checkpoints(:cutoff)"), {"cutoff": cutoff}).scalar()


_DRIFTS = sa.text("""
SELECT s.id, s.balance, coalesce(c.balance, 0) + coalesce(f.net, 0) AS from_ledger
FROM sub_accounts s
LEFT JOIN LATERAL (SELECT as_of, balance FROM balance_checkpoints WHERE sub_account_id = s.id
                   ORDER BY as_of DESC LIMIT 1) c ON true
LEFT JOIN LATERAL (SELECT sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS net
                   FROM transactions t WHERE t.sub_account_id = s.id
                   AND (c.as_of IS NULL OR t."timestamp" >= c.as_of)) f ON true
WHERE s.balance <> coalesce(c.balance, 0) + coalesce(f.net, 0)
""")


def drifts(conn: sa.Connection) -> list[dict]:
    """Sub-accounts whose balance differs from checkpoint + credits - debits since; empty when the ledger holds."""
    return [dict(r) for r in conn.execute(_DRIFTS).mappings()]
