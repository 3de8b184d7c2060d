"""orders (with their fills), holds and reversals

Revision ID: 0006
Revises: 0005

`locked` becomes the sum of the open holds: an amount locked before this revision (by `balance.locked` events, tied
to nothing) becomes one open hold without an order, so the invariant holds from the first moment.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reversals',
    sa.Column('transaction_id', sa.UUID(), nullable=False),
    sa.Column('reversed_by', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('transaction_id', name=op.f('pk_reversals')),
    sa.UniqueConstraint('reversed_by', name=op.f('uq_reversals_reversed_by'))
    )
    op.create_table('orders',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.Text(), nullable=False),
    sa.Column('base_sub_account_id', sa.UUID(), nullable=False),
    sa.Column('quote_sub_account_id', sa.UUID(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('side', sa.Text(), nullable=False),
    sa.Column('order_type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=38, scale=18), nullable=True),
    sa.Column('price', sa.Numeric(precision=38, scale=18), nullable=True),
    sa.Column('filled_amount', sa.Numeric(precision=38, scale=18), server_default='0', nullable=False),
    sa.Column('filled_quote', sa.Numeric(precision=60, scale=18), server_default='0', nullable=False),
    sa.Column('fees', sa.Numeric(precision=38, scale=18), server_default='0', nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('placed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('trade_ids', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('transaction_ids', postgresql.ARRAY(sa.UUID()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f('ck_orders_side')),
    sa.CheckConstraint("status IN ('open', 'partially_filled', 'filled', 'cancelled', 'failed')", name=op.f('ck_orders_status')),
    sa.CheckConstraint('filled_amount >= 0 AND (amount IS NULL OR filled_amount <= amount)', name=op.f('ck_orders_filled_within_amount')),
    sa.ForeignKeyConstraint(['exchange_id'], ['exchanges.id'], name=op.f('fk_orders_exchange_id_exchanges')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_orders_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('user_id', 'exchange_id', 'order_id', name=op.f('uq_orders_user_id_exchange_id_order_id'))
    )
    op.create_index('ix_orders_created_at_id', 'orders', ['created_at', 'id'], unique=False)
    op.create_index('ix_orders_info', 'orders', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_orders_user_id_created_at', 'orders', ['user_id', 'created_at'], unique=False)
    op.create_table('holds',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('order_id', sa.Text(), nullable=True),
    sa.Column('amount', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('remaining', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('status', sa.Text(), server_default='open', nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'open') = (resolved_at IS NULL)", name=op.f('ck_holds_resolved_once')),
    sa.CheckConstraint("status IN ('open', 'released', 'settled', 'expired')", name=op.f('ck_holds_status')),
    sa.CheckConstraint('amount > 0 AND remaining >= 0 AND remaining <= amount', name=op.f('ck_holds_remaining_within_amount')),
    sa.ForeignKeyConstraint(['exchange_id'], ['exchanges.id'], name=op.f('fk_holds_exchange_id_exchanges')),
    sa.ForeignKeyConstraint(['sub_account_id'], ['sub_accounts.id'], name=op.f('fk_holds_sub_account_id_sub_accounts')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_holds_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds'))
    )
    op.create_index('ix_holds_expires_at_open', 'holds', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'open' AND expires_at IS NOT NULL"))
    op.create_index('ix_holds_info', 'holds', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_holds_sub_account_id_open', 'holds', ['sub_account_id'], unique=False, postgresql_where=sa.text("status = 'open'"))
    op.create_index('uq_holds_order', 'holds', ['user_id', 'exchange_id', 'order_id', 'sub_account_id'], unique=True, postgresql_where=sa.text('order_id IS NOT NULL'))
    op.create_index('ix_reversals_info', 'reversals', ['info'], unique=False, postgresql_using='gin')
    op.execute(
        "INSERT INTO holds (user_id, exchange_id, sub_account_id, amount, remaining, info) "
        "SELECT user_id, exchange_id, id, locked, locked, '{\"migrated\": true}'::jsonb FROM sub_accounts "
        "WHERE locked > 0")


def downgrade() -> None:
    op.drop_index('ix_reversals_info', table_name='reversals', postgresql_using='gin')
    op.drop_index('uq_holds_order', table_name='holds', postgresql_where=sa.text('order_id IS NOT NULL'))
    op.drop_index('ix_holds_sub_account_id_open', table_name='holds', postgresql_where=sa.text("status = 'open'"))
    op.drop_index('ix_holds_info', table_name='holds', postgresql_using='gin')
    op.drop_index('ix_holds_expires_at_open', table_name='holds', postgresql_where=sa.text("status = 'open' AND expires_at IS NOT NULL"))
    op.drop_table('holds')
    op.drop_index('ix_orders_user_id_created_at', table_name='orders')
    op.drop_index('ix_orders_info', table_name='orders', postgresql_using='gin')
    op.drop_index('ix_orders_created_at_id', table_name='orders')
    op.drop_table('orders')
    op.drop_table('reversals')
