from db import engine, users
from generated.models import User, UserList, UserStats
from handlers import caller, model, page


def get_current_user(token_info):
    with engine.reading() as conn:
        return model(User, users.get(conn, caller(token_info).id))


def update_current_user(body, token_info):
    with engine.transaction() as conn:
        return model(User, users.update(conn, caller(token_info).id, body))


def get_current_user_stats(token_info):
    with engine.reading() as conn:
        return model(UserStats, users.stats(conn, caller(token_info).id))


def list_users(limit=100, cursor=None, status=None):
    with engine.reading() as conn:
        return page(UserList, User, users.list_page(conn, limit=limit, cursor=cursor, status=status))


def get_user(user_id):
    with engine.reading() as conn:
        return model(User, users.get(conn, user_id))


def disable_user(user_id):
    with engine.transaction() as conn:
        return model(User, users.set_status(conn, user_id, "disabled"))


def enable_user(user_id):
    with engine.transaction() as conn:
        return model(User, users.set_status(conn, user_id, "active"))
