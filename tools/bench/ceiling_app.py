"""The REST ceiling: the three benchmarked operations as bare Flask under gunicorn sync workers.

Same SQL (it calls the same db/ functions), the same PyJWT check and user lookup (tiris.auth), the same JSON
encoding of money and times; no Connexion, no request or response validation, no generated models. What we lose to
it is what the framework costs us. Run: gunicorn 'tools.bench.ceiling_app:create_app()' --workers 2.
"""

import uuid
from decimal import Decimal

import flask

from db import booking, engine, sub_accounts, transactions
from db.commands import Entry, Transfer
from tiris import auth, config, jsonify
from db.errors import DomainError
from tiris.errors import status_of


def _json(body, status: int = 200) -> flask.Response:
    return flask.Response(jsonify.dumps(body), status=status, mimetype="application/json")


def _caller():
    header = flask.request.headers.get("Authorization", "")
    return auth._caller(header.removeprefix("Bearer ").strip())


def create_app() -> flask.Flask:
    engine.configure(config.use(config.load()))
    app = flask.Flask(__name__)

    @app.errorhandler(DomainError)
    def refused(error: DomainError):
        return _json({"error": {"code": error.code, "message": error.message}}, status_of(error))

    @app.get("/v1/sub-accounts/<sub_account_id>")
    def get_sub_account(sub_account_id):
        caller = _caller()
        with engine.reading() as conn:
            return _json(sub_accounts.get(conn, caller, sub_account_id))

    @app.get("/v1/transactions")
    def list_transactions():
        caller = _caller()
        with engine.reading() as conn:
            rows, cursor = transactions.list_page(conn, caller, limit=int(flask.request.args.get("limit", 100)),
                                                  cursor=flask.request.args.get("cursor"))
        return _json({"items": rows, **({"next_cursor": cursor} if cursor else {})})

    @app.post("/v1/sub-accounts/<sub_account_id>/deposit")
    def deposit(sub_account_id):
        caller = _caller()
        transfer = Transfer(uuid.UUID(sub_account_id), "credit", Decimal(flask.request.get_json()["amount"]), "deposit")
        with engine.transaction() as conn:
            return _json(booking.book_one(conn, Entry(caller.id, transfer)).transactions[0], 201)

    return app
