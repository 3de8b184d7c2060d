"""webhooks: subscriptions (webhooks), their balance monitors, and the delivery log (webhook_deliveries)

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhooks',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('secret_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('key_id', sa.Text(), nullable=False),
    sa.Column('cursor', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_webhooks_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks'))
    )
    op.create_index('ix_webhooks_info', 'webhooks', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_webhooks_user_id_created_at', 'webhooks', ['user_id', 'created_at'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('webhook_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'succeeded') = (delivered_at IS NOT NULL)", name=op.f('ck_webhook_deliveries_delivered_once')),
    sa.CheckConstraint("(status IN ('pending', 'retrying')) = (next_attempt_at IS NOT NULL)", name=op.f('ck_webhook_deliveries_due_while_open')),
    sa.CheckConstraint("status IN ('pending', 'retrying', 'succeeded', 'failed')", name=op.f('ck_webhook_deliveries_status')),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('webhook_id', 'event_id', name=op.f('uq_webhook_deliveries_webhook_id_event_id'))
    )
    op.create_index('ix_webhook_deliveries_created_at', 'webhook_deliveries', ['created_at'], unique=False, postgresql_using='brin')
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status IN ('pending', 'retrying')"))
    op.create_index('ix_webhook_deliveries_webhook_id_created_at', 'webhook_deliveries', ['webhook_id', 'created_at'], unique=False)
    op.create_table('balance_monitors',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('webhook_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('threshold', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('direction', sa.Text(), nullable=False),
    sa.Column('beyond', sa.Boolean(), nullable=False),
    sa.Column('since_feed_id', sa.BigInteger(), nullable=False),
    sa.Column('last_crossed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("direction IN ('below', 'above')", name=op.f('ck_balance_monitors_direction')),
    sa.CheckConstraint('threshold >= 0', name=op.f('ck_balance_monitors_threshold_not_negative')),
    sa.ForeignKeyConstraint(['sub_account_id'], ['sub_accounts.id'], name=op.f('fk_balance_monitors_sub_account_id_sub_accounts')),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_balance_monitors_webhook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_balance_monitors'))
    )
    op.create_index('ix_balance_monitors_info', 'balance_monitors', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_balance_monitors_webhook_id', 'balance_monitors', ['webhook_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_balance_monitors_webhook_id', table_name='balance_monitors')
    op.drop_index('ix_balance_monitors_info', table_name='balance_monitors', postgresql_using='gin')
    op.drop_table('balance_monitors')
    op.drop_index('ix_webhook_deliveries_webhook_id_created_at', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries', postgresql_where=sa.text("status IN ('pending', 'retrying')"))
    op.drop_index('ix_webhook_deliveries_created_at', table_name='webhook_deliveries', postgresql_using='brin')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhooks_user_id_created_at', table_name='webhooks')
    op.drop_index('ix_webhooks_info', table_name='webhooks', postgresql_using='gin')
    op.drop_table('webhooks')
