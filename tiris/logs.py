"""Structured logs: one JSON object per line on stderr, level from LOG_LEVEL, secrets redacted.

Every line written while a request is handled carries that request's trace id (the X-Request-ID the response and
any error body carry too), taken from a context variable the request middleware sets.
"""

import contextvars
import datetime as dt
import json
import logging
import re

trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)

# Keys whose values never reach a log line, wherever they appear in the structured fields.
SECRET_KEYS = re.compile(r"authorization|api_key|api_secret|token|secret|password|cookie", re.IGNORECASE)
# ...and the same secrets inside free text (a message or a traceback that quotes a header or a JSON body).
SECRET_TEXT = re.compile(
    r"""(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+|("?(?:api_key|api_secret|access_token|refresh_token|password)"?\s*[:=]\s*"?)[^",}\s]+""")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact_text(text: str) -> str:
    return SECRET_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + "[REDACTED]", text)


def redact(value):
    if isinstance(value, dict):
        return {k: "[REDACTED]" if SECRET_KEYS.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "pid": record.process, "message": redact_text(record.getMessage())}
        if (current := trace_id.get()) is not None:
            line["trace_id"] = current
        line.update(redact({k: v for k, v in vars(record).items() if k not in _STANDARD}))
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


def setup(level: str) -> None:
    """Replaces the root logger's handlers with one JSON handler (gunicorn's and uvicorn's loggers propagate)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    for name in ("gunicorn.error", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the request line below replaces it
