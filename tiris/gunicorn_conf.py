"""gunicorn settings that need code: JSON logs for the master too, and metrics files of dead workers dropped."""

import logging
import os

from prometheus_client import multiprocess

logging.captureWarnings(True)  # a library's warning is a log line like any other, not raw text on stderr

loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "tiris.logs.JsonFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": loglevel.upper(), "handlers": ["json"]},
    "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
                "gunicorn.access": {"handlers": [], "propagate": False}},
}


def child_exit(server, worker):
    # Live gauges (requests in flight, pool in use) of a worker that is gone must stop counting.
    multiprocess.mark_process_dead(worker.pid)
