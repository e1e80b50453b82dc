"""rtcore inside an ASGI application (uvicorn, Starlette, FastAPI, Django Channels).

:class:`AsgiApp` serves a node's Centrifuge endpoints and server API through
the same handlers as rtcore's own server (:func:`rtcore.serve`), so a web
application and its real-time clients share one process and one port, and
request handlers publish through the node. Public as ``rtcore.AsgiApp``;
usage and what it costs against the native edge: docs/asgi.md.

The package: :mod:`~rtcore.server.asgi.app` holds the application (routing,
lifespan); :mod:`~rtcore.server.asgi.http` turns a scope into a
:class:`~rtcore.wire.http.Request` and answers it with ASGI messages;
:mod:`~rtcore.server.asgi.websocket` carries a session over an ASGI
WebSocket.
"""

from __future__ import annotations

from rtcore.server.asgi.app import AsgiApp


__all__ = ["AsgiApp"]
