"""the live feed: per-user outbox of what changed (feed_heads, feed_events) and stream tickets

Revision ID: 0008
Revises: 0007

`feed_time` writes a time as the API does (RFC 3339 in UTC, `Z`, microseconds only when there are any), so that
the resources the booking renders in SQL for the feed read exactly like the REST API's.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feed_heads',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_feed_heads'))
    )
    op.create_index('ix_feed_heads_info', 'feed_heads', ['info'], unique=False, postgresql_using='gin')
    op.create_table('feed_events',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'id', name=op.f('pk_feed_events'))
    )
    op.create_index('ix_feed_events_created_at', 'feed_events', ['created_at'], unique=False, postgresql_using='brin')
    op.create_table('stream_tickets',
    sa.Column('ticket_hash', sa.LargeBinary(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('session_id', sa.UUID(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_stream_tickets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('ticket_hash', name=op.f('pk_stream_tickets'))
    )
    op.create_index('ix_stream_tickets_expires_at', 'stream_tickets', ['expires_at'], unique=False)
    op.create_index('ix_stream_tickets_info', 'stream_tickets', ['info'], unique=False, postgresql_using='gin')
    op.add_column('bot_status', sa.Column('announced_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("""
        CREATE FUNCTION feed_time(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
          SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                 || CASE WHEN date_part('microseconds', t)::bigint % 1000000 = 0 THEN ''
                         ELSE to_char(t AT TIME ZONE 'UTC', '.US') END || 'Z'
        $$""")


def downgrade() -> None:
    op.execute("DROP FUNCTION feed_time(timestamptz)")
    op.drop_column('bot_status', 'announced_at')
    op.drop_index('ix_stream_tickets_info', table_name='stream_tickets', postgresql_using='gin')
    op.drop_index('ix_stream_tickets_expires_at', table_name='stream_tickets')
    op.drop_table('stream_tickets')
    op.drop_index('ix_feed_events_created_at', table_name='feed_events', postgresql_using='brin')
    op.drop_table('feed_events')
    op.drop_index('ix_feed_heads_info', table_name='feed_heads', postgresql_using='gin')
    op.drop_table('feed_heads')
