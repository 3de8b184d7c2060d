"""The gunicorn worker of `tiris serve`: uvicorn's, with a limit on the size of a request's head.

uvicorn's httptools parser has no such limit: an 8 MB Authorization header, or 500 headers of 8 KB, were read
whole and only then answered (401). Counting the bytes of the head as they arrive and answering 431 once they pass
MAX_HEAD_BYTES stops that before any of it reaches the application.
"""

import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from tiris import error_handlers

log = logging.getLogger("tiris.request")
# A request line and headers far beyond what a client of this API sends (a bearer token is under 1 KB), and
# twice h11's default limit.
MAX_HEAD_BYTES = 32 * 1024
_HEAD_END = b"\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # None while a request's body is read

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            room = MAX_HEAD_BYTES - self._head_bytes
            if len(data) > room and data.find(_HEAD_END, 0, max(room, 0) + len(_HEAD_END)) < 0:
                return self._refuse()
            self._head_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        super().on_message_complete()

    def _refuse(self) -> None:
        log.warning("request head over %d bytes refused (431)", MAX_HEAD_BYTES, extra={"status": 431})
        headers, body = error_handlers.asgi_error(
            431, "HEADERS_TOO_LARGE", f"The request line and headers exceed {MAX_HEAD_BYTES} bytes.", None)
        lines = [b"HTTP/1.1 431 Request Header Fields Too Large", *(k + b": " + v for k, v in headers),
                 b"content-length: " + str(len(body)).encode(), b"connection: close", b"", b""]
        self.transport.write(b"\r\n".join(lines) + body)
        self.transport.close()


class Worker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": BoundedHttpToolsProtocol}
