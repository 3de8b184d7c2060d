"""A webhook receiver for the tests: a real HTTP server on a free loopback port, in a thread, that records every
request and answers as told (a status, after a delay), and the verification recipe a receiver follows."""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event_id(self) -> str:
        return self.headers["Tiris-Event-Id"]

    def json(self) -> dict:
        return json.loads(self.body)


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """What README tells a receiver to do: recompute the HMAC over `t.` + the raw body, compare in constant time,
    and refuse a stale timestamp."""
    fields = dict(part.split("=", 1) for part in headers["Tiris-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return (hmac.compare_digest(expected, fields["v1"]) and fields["t"] == headers["Tiris-Timestamp"]
            and abs(time.time() - int(fields["t"])) <= tolerance)


class Receiver:
    """`answers`: (status, seconds to wait first) for the first requests, in order; then `default`."""

    def __init__(self, answers=(), default=(200, 0.0)):
        self.received: list[Received] = []
        self.answers, self.default = list(answers), default
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(Received(dict(self.headers.items()), body))
                    status, delay = receiver.answers.pop(0) if receiver.answers else receiver.default
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the deliverer gave up waiting and closed the connection
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
