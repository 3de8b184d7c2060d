"""The live feed's operations. The stream itself is served by tiris.stream (asynchronously, after Connexion has
checked the request); only its ticket is an ordinary request."""

from db import engine, tickets
from generated.models import StreamTicket
from handlers import caller
from tiris import config


def open_stream(token_info, types=None, last_event_id=None):
    """Never called: tiris.stream.StreamMiddleware answers GET /v1/stream before the request reaches Flask."""
    raise RuntimeError("GET /v1/stream is served by tiris.stream.StreamMiddleware")


def create_stream_ticket(token_info):
    who = caller(token_info)
    with engine.transaction() as conn:
        ticket, expires_at = tickets.issue(conn, who.id, who.session_id, config.current().stream_ticket_ttl)
    return StreamTicket(ticket=ticket, expires_at=expires_at), 201
