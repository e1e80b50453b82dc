"""Answers to plain HTTP requests at the I/O edge.

:class:`HttpResponseWriter` writes one response, whole or streamed, through the
connection protocol (:class:`rtcore.transports.http_connection._Connection`) that
parsed the request. Also importable from :mod:`rtcore.transports.http_server`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rtcore.wire.http import Request
from rtcore.wire.http_response import render_response


if TYPE_CHECKING:
    from rtcore.transports.http_connection import _Connection


__all__ = ["HttpResponseWriter"]

# The I/O edge logs under one name, whichever of its modules speaks.
logger = logging.getLogger("rtcore.transports.http_server")


class HttpResponseWriter:
    """Answers one HTTP request, whole or streamed.

    Use :meth:`send` for a complete response, or :meth:`start` + :meth:`write`
    + :meth:`end` for a streamed one (chunked transfer encoding unless a
    Content-Length is given). :attr:`disconnected` becomes true and the
    ``on_disconnect`` callbacks run when the client goes away.
    """

    __slots__ = (
        "_proto",
        "_request",
        "_started",
        "_chunked",
        "_keep_alive",
        "finished",
        "_callbacks",
    )

    def __init__(self, proto: _Connection, request: Request) -> None:
        self._proto = proto
        self._request = request
        self._started = False
        self._chunked = False
        self._keep_alive = request.keep_alive
        self.finished = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def disconnected(self) -> bool:
        return self._proto.lost

    @property
    def started(self) -> bool:
        return self._started

    @property
    def remote_address(self) -> Any:
        """The peer's address (``(host, port)`` for TCP), or None."""
        return self._proto.peername

    def stream_until_disconnect(self) -> None:
        """Make this (streamed) response the connection's last one and watch for its end.

        While a handler runs, the server does not read the connection, so a
        client that goes away would only be noticed at a failed write. After
        this call anything more the client sends is discarded, reading resumes,
        and the end of the connection runs the ``on_disconnect`` callbacks at
        once. Send the response with ``Connection: close``.
        """
        proto = self._proto
        transport = proto.transport
        if transport is None or transport.is_closing():
            return
        proto._drop_http()
        proto._pending.clear()
        proto._backlog.clear()
        proto._update_reading()

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the client's connection is lost before :meth:`end`."""
        self._callbacks.append(callback)

    def _notify_lost(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a callback must not break teardown
                logger.exception("on_disconnect callback failed")

    def send(
        self,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        """Send a complete response."""
        if self._started:
            raise RuntimeError("response already started")
        self._started = True
        self.finished = True
        keep_alive = self._request.keep_alive and not self._proto.closing
        self._proto.write(render_response(status, list(headers), body, keep_alive=keep_alive))
        self._proto.response_done(keep_alive)

    def start(self, status: int, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Send the status line and headers of a streamed response."""
        if self._started:
            raise RuntimeError("response already started")
        self._started = True
        hdrs = list(headers)
        names = {k.lower() for k, _ in hdrs}
        keep_alive = self._request.keep_alive
        if "content-length" not in names:
            if self._request.http_version == "1.0":
                # HTTP/1.0 has no chunked coding: the end of the body is the
                # end of the connection.
                keep_alive = False
            else:
                self._chunked = True
                hdrs.append(("Transfer-Encoding", "chunked"))
        self._keep_alive = keep_alive
        head = render_response(status, hdrs, b"", keep_alive=keep_alive)
        self._proto.write(head)

    def write(self, data: bytes) -> bool:
        """Send a piece of a streamed response; False when the client is gone."""
        if not self._started or self.finished:
            raise RuntimeError("write() outside a started response")
        if self._proto.lost:
            return False
        if not data:
            return True
        if self._chunked:
            self._proto.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._proto.write(data)
        return True

    def end(self) -> None:
        """Finish a streamed response."""
        if self.finished:
            return
        if not self._started:
            raise RuntimeError("end() before start()")
        self.finished = True
        if self._chunked and not self._proto.lost:
            self._proto.write(b"0\r\n\r\n")
        self._proto.response_done(self._keep_alive)

    @property
    def write_buffer_size(self) -> int:
        t = self._proto.transport
        return t.get_write_buffer_size() if t is not None else 0
