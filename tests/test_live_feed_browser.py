"""The live feed in a real browser: headless Chromium opens `EventSource` with a ticket, as a portal page does, and
keeps what it receives across a restart of the service.

The page comes from its own origin (a loopback web server here, the portal in production) that CORS_ORIGINS
allows. A browser's EventSource sends no Authorization header, so it authenticates with a single-use ticket from
`POST /v1/stream/tickets`. When the connection is lost, the browser reconnects by
itself with the same URL and `Last-Event-ID`; the used ticket is refused, so the page asks for a new ticket and
opens the stream again from the last id it has. The test drives the page over the Chrome DevTools Protocol.
"""

import contextlib
import http.server
import json
import subprocess
import threading
import time

import httpx
import pytest
import websockets.sync.client

from tests.conftest import free_port
from tests.server import running_server
from tests.test_docs_page import chromium  # noqa: F401
from tests.test_live_feed_stream import Rest, _deposit, _funded, _user

# The page's client: the events it received, in order, and how many streams it opened.
PAGE_SCRIPT = """
window.got = []; window.opened = 0; window.problems = [];
const TYPES = ['transaction.booked', 'balance.changed'];
const lastId = () => window.got.length ? window.got[window.got.length - 1].id : null;
async function open() {
  const response = await fetch(API + '/v1/stream/tickets', {method: 'POST', headers: {Authorization: 'Bearer ' + TOKEN}});
  if (response.status !== 201) throw new Error('ticket: ' + response.status);
  const {ticket} = await response.json();
  const last = lastId();
  const stream = new EventSource(API + '/v1/stream?ticket=' + encodeURIComponent(ticket) +
                                 (last === null ? '' : '&last_event_id=' + last));
  for (const type of TYPES) {
    stream.addEventListener(type, e => window.got.push({id: Number(e.lastEventId), type, data: JSON.parse(e.data)}));
  }
  stream.onopen = () => { window.opened += 1; };
  stream.onerror = () => {
    window.problems.push('stream error, state ' + stream.readyState);
    if (stream.readyState === EventSource.CLOSED) reopen();
  };
}
function reopen() { open().catch(e => { window.problems.push(String(e)); setTimeout(reopen, 250); }); }
reopen();
"""


class Page:
    """One tab of a headless Chromium, driven over the DevTools Protocol."""

    def __init__(self, chromium_path: str, url: str, profile):
        self.debug_port = free_port()
        self.process = subprocess.Popen(
            [chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={profile}", f"--remote-debugging-port={self.debug_port}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.resources = contextlib.ExitStack()
        self.calls = 0
        try:
            self.socket = self.resources.enter_context(
                websockets.sync.client.connect(self._page_socket(url), max_size=None, open_timeout=30))
            self.wait_for(f"location.href.startsWith({json.dumps(url)}) && document.readyState === 'complete'",
                          "the page did not load")
        except BaseException:
            self.close()
            raise

    def _page_socket(self, url: str) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pages = httpx.get(f"http://127.0.0.1:{self.debug_port}/json/list", timeout=2).json()
                for page in pages:
                    if page.get("type") == "page" and page.get("url", "").startswith(url):
                        return page["webSocketDebuggerUrl"]
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("Chromium did not open the page")

    def evaluate(self, expression: str):
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": "Runtime.evaluate",
                                     "params": {"expression": expression, "returnByValue": True}}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.calls:
                result = message["result"]
                assert "exceptionDetails" not in result, result["exceptionDetails"]
                return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout:.0f} s; the page has "
                                     f"{self.evaluate('[window.got, window.problems]')}")
            time.sleep(0.1)
        return value

    def close(self) -> None:
        self.resources.close()
        self.process.kill()
        self.process.wait(timeout=10)


class _PortalPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # the name http.server calls
        body = b"<!doctype html><title>portal</title><p>live feed</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def portal():
    """The portal's origin: a loopback web server with one empty page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PortalPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page_factory(chromium, tmp_path):  # noqa: F811
    pages = []

    def open_page(url: str) -> Page:
        pages.append(Page(chromium, url, tmp_path / f"profile-{len(pages)}"))
        return pages[-1]

    yield open_page
    for page in pages:
        page.close()


def _summary(events: list[dict]) -> list[tuple]:
    return [(event["type"], event["data"].get("amount") or event["data"].get("balance")) for event in events]


def test_a_browser_keeps_every_event_once_and_in_order_across_a_restart_of_the_service(
        settings, service_env, tmp_path, portal, page_factory):
    service_env = {**service_env, "CORS_ORIGINS": portal}
    _, token = _user(settings)
    port = free_port()
    with running_server(service_env, tmp_path, port) as first:
        rest, account = _funded(first.url, token)
        page = page_factory(f"{portal}/")
        page.evaluate(f"const API = {json.dumps(first.url)}, TOKEN = {json.dumps(token)};\n{PAGE_SCRIPT}")
        page.wait_for("window.opened === 1", "the page's EventSource did not open")
        _deposit(rest, account, "100")
        page.wait_for("window.got.length >= 2", "the first deposit did not reach the page")
        first_events = page.evaluate("window.got")
        assert _summary(first_events) == [("transaction.booked", "100.000000000000000000"),
                                          ("balance.changed", "100.000000000000000000")]

    # The service is down for the page; another replica books two deposits meanwhile.
    (tmp_path / "other").mkdir()
    with running_server(service_env, tmp_path / "other") as other:
        rest = Rest(other.url, token)
        _deposit(rest, account, "200")
        _deposit(rest, account, "300")
    assert page.evaluate("window.got.length") == 2

    with running_server(service_env, tmp_path, port):  # back where the page was
        page.wait_for("window.got.length >= 6", "the missed deposits did not reach the page after the restart")
        time.sleep(1)  # anything more (a duplicate) would arrive now
        events = page.evaluate("window.got")
        assert page.evaluate("window.opened") >= 2  # the page opened a new stream with a new ticket
    assert events[:2] == first_events
    assert _summary(events[2:]) == [("transaction.booked", "200.000000000000000000"),
                                    ("balance.changed", "300.000000000000000000"),
                                    ("transaction.booked", "300.000000000000000000"),
                                    ("balance.changed", "600.000000000000000000")]
    ids = [event["id"] for event in events]
    assert ids == list(range(ids[0], ids[0] + 6)), ids  # in order, none missed, none twice
