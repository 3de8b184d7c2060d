"""positions: cost basis, realized PnL and fees per base sub-account, per day and per source

Revision ID: 0007
Revises: 0006

The tables are written by the booking that changes them (db/positions.py). Existing ledgers are backfilled by
replaying every transaction, oldest first, through the same rules (db/positions.py `rebuild`).
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

WIDE = sa.Numeric(precision=60, scale=18)
MONEY = sa.Numeric(precision=38, scale=18)


def _sums() -> list[sa.Column]:
    return [sa.Column('realized_pnl', WIDE, nullable=False), sa.Column('fees', WIDE, nullable=False),
            sa.Column('volume', WIDE, nullable=False)]


def _counts(kind=sa.BigInteger) -> list[sa.Column]:
    return [sa.Column('trades', kind(), nullable=False), sa.Column('wins', kind(), nullable=False),
            sa.Column('losses', kind(), nullable=False)]


def upgrade() -> None:
    op.create_table('positions',
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('quote_symbol', sa.Text(), nullable=False),
    sa.Column('quantity', MONEY, nullable=False),
    sa.Column('cost', WIDE, nullable=False),
    *_sums(), *_counts(),
    sa.Column('last_price', MONEY, nullable=True),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('sub_account_id', name=op.f('pk_positions'))
    )
    op.create_index('ix_positions_user_id_quote_symbol', 'positions', ['user_id', 'quote_symbol'], unique=False)
    op.create_index('ix_positions_info', 'positions', ['info'], unique=False, postgresql_using='gin')
    op.create_table('position_effects',
    sa.Column('transaction_id', sa.UUID(), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('quantity', MONEY, nullable=False),
    sa.Column('cost', WIDE, nullable=False),
    *_sums(), *_counts(sa.SmallInteger),
    sa.PrimaryKeyConstraint('transaction_id', name=op.f('pk_position_effects'))
    )
    op.create_table('position_days',
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('quote_symbol', sa.Text(), nullable=False),
    *_sums(), *_counts(),
    sa.Column('quantity', MONEY, nullable=False),
    sa.Column('cost', WIDE, nullable=False),
    sa.Column('cumulative_realized_pnl', WIDE, nullable=False),
    sa.Column('last_price', MONEY, nullable=True),
    sa.PrimaryKeyConstraint('sub_account_id', 'day', name=op.f('pk_position_days'))
    )
    op.create_index('ix_position_days_user_id_quote_symbol_day', 'position_days', ['user_id', 'quote_symbol', 'day'],
                    unique=False)
    op.create_table('position_sources',
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('quote_symbol', sa.Text(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    *_counts(), *_sums(),
    sa.PrimaryKeyConstraint('sub_account_id', 'source', name=op.f('pk_position_sources'))
    )
    op.create_index('ix_position_sources_user_id_quote_symbol', 'position_sources', ['user_id', 'quote_symbol'],
                    unique=False)
    from db import positions  # the booking's own rules, so that backfilled figures are the ones booking writes
    positions.rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_index('ix_position_sources_user_id_quote_symbol', table_name='position_sources')
    op.drop_table('position_sources')
    op.drop_index('ix_position_days_user_id_quote_symbol_day', table_name='position_days')
    op.drop_table('position_days')
    op.drop_table('position_effects')
    op.drop_index('ix_positions_info', table_name='positions', postgresql_using='gin')
    op.drop_index('ix_positions_user_id_quote_symbol', table_name='positions')
    op.drop_table('positions')
