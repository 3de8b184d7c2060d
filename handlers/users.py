from db import engine, replica, sessions, users
from generated.models import User, UserList, UserStats
from handlers import as_model, as_page, audit_trail, caller


def get_current_user(token_info):
    with engine.reading() as conn:
        return as_model(User, users.get(conn, caller(token_info).id))


def update_current_user(body, token_info):
    with engine.transaction() as conn:
        return as_model(User, users.update(conn, caller(token_info).id, body))


def get_current_user_stats(token_info):
    who = caller(token_info)
    return replica.read(who.id, lambda conn: as_model(UserStats, users.stats(conn, who.id)))


def list_users(limit=100, cursor=None, status=None):
    with engine.reading() as conn:
        return as_page(UserList, User, users.list_page(conn, limit=limit, cursor=cursor, status=status))


def get_user(user_id):
    with engine.reading() as conn:
        return as_model(User, users.get(conn, user_id))


def disable_user(user_id, token_info):
    with engine.transaction() as conn:
        user = users.disable(conn, user_id, by=caller(token_info).id)
        # Ends every session too, so enabling the user later does not bring old tokens back to life.
        sessions.revoke_all(conn, user["id"], "user disabled")
        audit_trail(conn, "user.disabled", user_id=user["id"], actor_id=caller(token_info).id)
        return as_model(User, user)


def enable_user(user_id, token_info):
    with engine.transaction() as conn:
        user = users.set_status(conn, user_id, "active")
        audit_trail(conn, "user.enabled", user_id=user["id"], actor_id=caller(token_info).id)
        return as_model(User, user)
