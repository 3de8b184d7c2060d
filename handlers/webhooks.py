"""Webhooks (tag `live`): subscriptions and their delivery log. The rules are in db/webhooks.py and
db/webhook_deliveries.py; sending is `tiris deliver`'s (consumers/deliver.py)."""

from db import engine, webhook_deliveries, webhooks
from db.webhook_targets import Allowed
from generated.models import Webhook, WebhookDelivery, WebhookDeliveryList, WebhookList, WebhookWithSecret
from handlers import as_model, as_page, caller
from tiris import config


def _allowed() -> Allowed:
    return Allowed.parse(config.current().webhook_allowed_hosts)


def list_webhooks(token_info, limit=100, cursor=None, user_id=None):
    with engine.reading() as conn:
        return as_page(WebhookList, Webhook,
                       webhooks.list_page(conn, caller(token_info), limit=limit, cursor=cursor, user_id=user_id))


def create_webhook(body, token_info):
    with engine.transaction() as conn:
        webhook, secret = webhooks.create(
            conn, caller(token_info), url=body["url"], events=body["events"], monitor_specs=body.get("monitors", []),
            description=body.get("description"), allowed=_allowed(),
            max_per_user=config.current().webhook_max_per_user)
    return as_model(WebhookWithSecret, {**webhook, "secret": secret}), 201


def get_webhook(webhook_id, token_info):
    with engine.reading() as conn:
        return as_model(Webhook, webhooks.get(conn, caller(token_info), webhook_id))


def update_webhook(webhook_id, body, token_info):
    changes = {"url": body.get("url"), "events": body.get("events"), "monitor_specs": body.get("monitors")}
    if "description" in body:
        changes["description"] = body["description"]
    with engine.transaction() as conn:
        return as_model(Webhook, webhooks.update(conn, caller(token_info), webhook_id, allowed=_allowed(), **changes))


def delete_webhook(webhook_id, token_info):
    with engine.transaction() as conn:
        webhooks.delete(conn, caller(token_info), webhook_id)
    return None, 204


def list_webhook_deliveries(webhook_id, token_info, limit=100, cursor=None, status=None):
    with engine.reading() as conn:
        return as_page(WebhookDeliveryList, WebhookDelivery, webhook_deliveries.list_page(
            conn, caller(token_info), webhook_id, limit=limit, cursor=cursor, status=status))
