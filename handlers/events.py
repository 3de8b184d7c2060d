from consumers import admin
from db import engine, event_status
from generated.models import DeadLetter, DeadLetterList, EventsStatus, Replay
from handlers import caller, model, page
from tiris import config


def get_events_status(token_info):
    with engine.reading() as conn:
        return model(EventsStatus, event_status.status(conn, caller(token_info)))


def list_dead_letters(limit=100, cursor=None, redriven=None):
    with engine.reading() as conn:
        return page(DeadLetterList, DeadLetter,
                    event_status.dead_letter_page(conn, limit=limit, cursor=cursor, redriven=redriven))


def redrive_dead_letter(dead_letter_id):
    return model(DeadLetter, admin.redrive(dead_letter_id))


def replay_events(body):
    settings = config.current()
    names = admin.replay(settings.nats_url, settings.consumer_partitions, settings.consumer_batch,
                         start_time=body.get("start_time"), start_sequence=body.get("start_sequence"))
    return model(Replay, {"consumers": names, **body}), 202
