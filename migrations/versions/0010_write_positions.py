"""write positions: where the WAL stood after each user's latest write, for reading one's writes on a replica

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('write_positions',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('lsn', sa.BigInteger(), nullable=False),
    sa.Column('written_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_write_positions')),
    prefixes=['UNLOGGED']
    )


def downgrade() -> None:
    op.drop_table('write_positions')
