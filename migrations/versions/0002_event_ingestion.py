"""event ingestion

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bot_status',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('bot_id', sa.Text(), nullable=False),
    sa.Column('exchange_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_event_id', sa.Text(), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'bot_id', name=op.f('pk_bot_status'))
    )
    op.create_index('ix_bot_status_info', 'bot_status', ['info'], unique=False, postgresql_using='gin')
    op.create_table('consumer_state',
    sa.Column('consumer', sa.Text(), nullable=False),
    sa.Column('processed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('duplicates', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('failed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('dead_lettered', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('balance_drifts', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('pending', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('last_stream_seq', sa.BigInteger(), nullable=True),
    sa.Column('last_processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('consumer', name=op.f('pk_consumer_state'))
    )
    op.create_index('ix_consumer_state_info', 'consumer_state', ['info'], unique=False, postgresql_using='gin')
    op.create_table('dead_letters',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=True),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('stream_seq', sa.BigInteger(), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('redriven_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_index('ix_dead_letters_created_at', 'dead_letters', ['created_at'], unique=False)
    op.create_index('uq_dead_letters_stream_seq_payload', 'dead_letters', ['stream_seq', sa.text('md5(payload)')],
                    unique=True)
    op.create_index('ix_dead_letters_info', 'dead_letters', ['info'], unique=False, postgresql_using='gin')
    op.create_table('processed_events',
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('stream_seq', sa.BigInteger(), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_processed_events'))
    )
    op.create_index('ix_processed_events_info', 'processed_events', ['info'], unique=False, postgresql_using='gin')
    op.create_index('ix_processed_events_processed_at', 'processed_events', ['processed_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_processed_events_processed_at', table_name='processed_events')
    op.drop_index('ix_processed_events_info', table_name='processed_events', postgresql_using='gin')
    op.drop_table('processed_events')
    op.drop_index('ix_dead_letters_info', table_name='dead_letters', postgresql_using='gin')
    op.drop_index('uq_dead_letters_stream_seq_payload', table_name='dead_letters')
    op.drop_index('ix_dead_letters_created_at', table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_index('ix_consumer_state_info', table_name='consumer_state', postgresql_using='gin')
    op.drop_table('consumer_state')
    op.drop_index('ix_bot_status_info', table_name='bot_status', postgresql_using='gin')
    op.drop_table('bot_status')
