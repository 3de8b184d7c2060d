"""ledger schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('request_hash', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.SmallInteger(), nullable=False),
    sa.Column('response', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_index('ix_idempotency_keys_info', 'idempotency_keys', ['info'], unique=False, postgresql_using='gin')
    op.create_table('trading_logs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('sub_account_id', sa.UUID(), nullable=True),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('trade', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('amount', sa.Numeric(precision=38, scale=18), nullable=True),
    sa.Column('transaction_ids', postgresql.ARRAY(sa.UUID()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("source IN ('manual', 'bot', 'api')", name=op.f('ck_trading_logs_source')),
    sa.PrimaryKeyConstraint('id', 'timestamp', name=op.f('pk_trading_logs'))
    )
    op.create_index('ix_trading_logs_info', 'trading_logs', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_trading_logs_sub_account_id_timestamp', 'trading_logs', ['sub_account_id', 'timestamp'], unique=False)
    op.create_index('ix_trading_logs_user_id_timestamp', 'trading_logs', ['user_id', 'timestamp'], unique=False)
    op.create_table('transactions',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('direction', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('closing_balance', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('price', sa.Numeric(precision=38, scale=18), nullable=True),
    sa.Column('quote_symbol', sa.Text(), nullable=True),
    sa.Column('trading_log_id', sa.UUID(), nullable=True),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.CheckConstraint("direction IN ('credit', 'debit')", name=op.f('ck_transactions_direction')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_transactions_amount_positive')),
    sa.CheckConstraint('closing_balance >= 0', name=op.f('ck_transactions_closing_balance_not_negative')),
    sa.PrimaryKeyConstraint('id', 'timestamp', name=op.f('pk_transactions'))
    )
    op.create_index('ix_transactions_info', 'transactions', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_transactions_sub_account_id_timestamp', 'transactions', ['sub_account_id', 'timestamp'], unique=False)
    op.create_index('ix_transactions_user_id_timestamp', 'transactions', ['user_id', 'timestamp'], unique=False)
    op.create_table('users',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('username', sa.Text(), nullable=False),
    sa.Column('email', sa.Text(), nullable=False),
    sa.Column('avatar', sa.Text(), nullable=True),
    sa.Column('role', sa.Text(), server_default='user', nullable=False),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('settings', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('user', 'admin')", name=op.f('ck_users_role')),
    sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f('ck_users_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_index('ix_users_info', 'users', ['info'], unique=False, postgresql_using='gin')
    op.create_table('exchanges',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('api_key_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('api_secret_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('key_id', sa.Text(), nullable=False),
    sa.Column('api_key_hash', sa.LargeBinary(), nullable=False),
    sa.Column('api_key_masked', sa.Text(), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f('ck_exchanges_status')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_exchanges_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exchanges'))
    )
    op.create_index('ix_exchanges_info', 'exchanges', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_exchanges_user_id_created_at', 'exchanges', ['user_id', 'created_at'], unique=False)
    op.create_index('uq_exchanges_user_id_api_key_hash_live', 'exchanges', ['user_id', 'api_key_hash'], unique=True, postgresql_where=sa.text('deleted_at IS NULL'))
    op.create_index('uq_exchanges_user_id_name_live', 'exchanges', ['user_id', 'name'], unique=True, postgresql_where=sa.text('deleted_at IS NULL'))
    op.create_table('sub_accounts',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('symbol', sa.Text(), nullable=False),
    sa.Column('balance', sa.Numeric(precision=38, scale=18), server_default='0', nullable=False),
    sa.Column('locked', sa.Numeric(precision=38, scale=18), server_default='0', nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('balance >= 0', name=op.f('ck_sub_accounts_balance_not_negative')),
    sa.CheckConstraint('locked >= 0 AND locked <= balance', name=op.f('ck_sub_accounts_locked_within_balance')),
    sa.ForeignKeyConstraint(['exchange_id'], ['exchanges.id'], name=op.f('fk_sub_accounts_exchange_id_exchanges')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sub_accounts_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sub_accounts'))
    )
    op.create_index('ix_sub_accounts_info', 'sub_accounts', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_sub_accounts_user_id_created_at', 'sub_accounts', ['user_id', 'created_at'], unique=False)
    op.create_index('uq_sub_accounts_exchange_id_name_live', 'sub_accounts', ['exchange_id', 'name'], unique=True, postgresql_where=sa.text('deleted_at IS NULL'))


def downgrade() -> None:
    op.drop_index('uq_sub_accounts_exchange_id_name_live', table_name='sub_accounts', postgresql_where=sa.text('deleted_at IS NULL'))
    op.drop_index('ix_sub_accounts_user_id_created_at', table_name='sub_accounts')
    op.drop_index('ix_sub_accounts_info', table_name='sub_accounts', postgresql_using='gin')
    op.drop_table('sub_accounts')
    op.drop_index('uq_exchanges_user_id_name_live', table_name='exchanges', postgresql_where=sa.text('deleted_at IS NULL'))
    op.drop_index('uq_exchanges_user_id_api_key_hash_live', table_name='exchanges', postgresql_where=sa.text('deleted_at IS NULL'))
    op.drop_index('ix_exchanges_user_id_created_at', table_name='exchanges')
    op.drop_index('ix_exchanges_info', table_name='exchanges', postgresql_using='gin')
    op.drop_table('exchanges')
    op.drop_index('ix_users_info', table_name='users', postgresql_using='gin')
    op.drop_table('users')
    op.drop_index('ix_transactions_user_id_timestamp', table_name='transactions')
    op.drop_index('ix_transactions_sub_account_id_timestamp', table_name='transactions')
    op.drop_index('ix_transactions_info', table_name='transactions', postgresql_using='gin')
    op.drop_table('transactions')
    op.drop_index('ix_trading_logs_user_id_timestamp', table_name='trading_logs')
    op.drop_index('ix_trading_logs_sub_account_id_timestamp', table_name='trading_logs')
    op.drop_index('ix_trading_logs_info', table_name='trading_logs', postgresql_using='gin')
    op.drop_table('trading_logs')
    op.drop_index('ix_idempotency_keys_info', table_name='idempotency_keys', postgresql_using='gin')
    op.drop_table('idempotency_keys')
