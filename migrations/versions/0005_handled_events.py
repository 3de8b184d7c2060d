"""handled events: a refused event is handled too (processed_events.outcome); dead letters keep the header's id;
consumer lag is no longer stored

Revision ID: 0005
Revises: 0004

Before this revision a refused event was only dead-lettered, so a replay of the stream applied it. The upgrade
records every waiting dead letter whose payload names an event as handled (`refused`), so that no replay after it
applies one; only a re-drive does.
"""

import json
import uuid

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("processed_events", sa.Column("outcome", sa.Text, nullable=False, server_default="applied"))
    op.create_check_constraint("outcome", "processed_events", "outcome IN ('applied', 'refused')")
    op.add_column("dead_letters", sa.Column("msg_id", sa.Text))
    op.drop_column("consumer_state", "pending")  # lag is read live from JetStream, never from the last batch
    conn = op.get_bind()
    waiting = conn.execute(sa.text(
        "SELECT event_id, subject, stream_seq, payload FROM dead_letters WHERE redriven_at IS NULL")).all()
    for letter in waiting:
        claim = _claim(letter)
        if claim:
            conn.execute(sa.text(
                "INSERT INTO processed_events (event_id, event_type, user_id, subject, stream_seq, outcome) "
                "VALUES (:event_id, :event_type, :user_id, :subject, :stream_seq, 'refused') "
                "ON CONFLICT DO NOTHING"), claim)


def _claim(letter) -> dict | None:
    """The claim of a dead letter's event, if its payload names one (a malformed message names nothing)."""
    try:
        payload = json.loads(letter.payload)
        return {"event_id": str(payload["event_id"]), "event_type": str(payload["event_type"]),
                "user_id": uuid.UUID(str(payload["user_id"])), "subject": letter.subject,
                "stream_seq": letter.stream_seq}
    except (ValueError, TypeError, KeyError):
        return None


def downgrade() -> None:
    op.add_column("consumer_state", sa.Column("pending", sa.BigInteger, nullable=False, server_default="0"))
    op.execute("DELETE FROM processed_events WHERE outcome = 'refused'")
    op.drop_column("dead_letters", "msg_id")
    op.drop_constraint("outcome", "processed_events", type_="check")
    op.drop_column("processed_events", "outcome")
