from db import audit, engine
from generated.models import AuditEvent, AuditEventList
from handlers import as_page


def list_audit_events(limit=100, cursor=None, user_id=None, type=None, start_time=None, end_time=None):
    with engine.reading() as conn:
        return as_page(AuditEventList, AuditEvent, audit.list_page(conn, limit=limit, cursor=cursor, user_id=user_id,
                                                                type=type, start_time=start_time, end_time=end_time))
