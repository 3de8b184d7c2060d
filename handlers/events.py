import datetime as dt

from consumers import admin, progress
from db import bots, consumer_state, dead_letters, engine
from generated.models import DeadLetter, DeadLetterList, EventsStatus, Replay
from handlers import as_model, as_page, caller
from tiris import config

COUNTERS = dict.fromkeys(consumer_state.COUNTERS, 0)


def get_events_status(token_info):
    """Counters from the database, lag and stalls from JetStream now; every partition listed, even before its
    consumer first ran."""
    settings = config.current()
    live = progress.read(settings.nats_url, settings.consumer_partitions, settings.consumer_stall_after)
    with engine.reading() as conn:
        counted = consumer_state.rows(conn)
        bots_seen = bots.visible(conn, caller(token_info))
        waiting = dead_letters.waiting(conn)
    names = sorted(set(counted) | set(live or {}) | set(progress.names(settings.consumer_partitions)))
    consumers = [{**COUNTERS, "last_stream_seq": None, "last_processed_at": None, "seen_at": None,
                  **counted.get(name, {}), "name": name,
                  "pending": live[name].pending if live and name in live else None,
                  "stalled": live[name].stalled if live and name in live else None} for name in names]
    return as_model(EventsStatus, {"consumers": consumers, "bots": bots_seen, "dead_letters": waiting})


def list_dead_letters(limit=100, cursor=None, redriven=None):
    with engine.reading() as conn:
        return as_page(DeadLetterList, DeadLetter,
                    dead_letters.page(conn, limit=limit, cursor=cursor, redriven=redriven))


def redrive_dead_letter(dead_letter_id):
    return as_model(DeadLetter, admin.redrive(dead_letter_id))


def replay_events(body):
    settings = config.current()
    start_time = dt.datetime.fromisoformat(body["start_time"]) if "start_time" in body else None
    names = admin.replay(settings.nats_url, settings.consumer_partitions, settings.consumer_batch,
                         start_time=start_time, start_sequence=body.get("start_sequence"),
                         replicas=settings.nats_stream_replicas)
    return as_model(Replay, {"consumers": names, **body}), 202
