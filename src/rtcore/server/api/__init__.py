"""The server HTTP API: Centrifugo's ``POST /api/<method>`` (PROTOCOL.md §7).

Requests and responses are exactly Centrifugo's JSON: snake_case keys, a
``{"result": {...}}`` or ``{"error": {"code", "message"}}`` envelope in an
HTTP 200 response, raw JSON in ``data``/``info``/``params`` (kept byte for
byte, never re-serialised) and base64 in ``b64data``/``b64info``. So the
``cent`` client and any Centrifugo integration work unchanged.

What the endpoints answer:

* ``POST /api/<method>``: one method; ``POST /api/batch``: several.
* ``POST /api`` (legacy): ``{"method": "publish", "params": {...}}``, several
  commands separated by newlines, one reply line each.
* 401 without a valid key (``X-API-Key: <key>``, ``Authorization: apikey
  <key>`` or ``?api_key=<key>``) unless ``api.insecure``; 405 for a method
  other than POST; 404 for an unknown method; 400 with a message for a body
  that is not JSON, not an object, or has a field of the wrong type or an
  unknown field; 413 (the server's body limit); 503 while shutting down.
* Errors Centrifugo reports inside a 200 body (107 empty channel, 102
  unknown namespace, 108 history/presence off, 112 wrong epoch, 100 internal)
  are reported the same way, or as HTTP status codes with
  ``api.error_mode = "transport"`` or the request header
  ``X-Centrifugo-Error-Mode: transport``.

See docs/api.md for every method's fields.

The package: :mod:`~rtcore.server.api.endpoint` is the HTTP handler
(:class:`ServerApi`); :mod:`~rtcore.server.api.rawjson` parses request bodies
keeping raw fields as they are and writes responses;
:mod:`~rtcore.server.api.schema` validates each method's fields;
:mod:`~rtcore.server.api.methods` runs the methods against the node;
:mod:`~rtcore.server.api.batch` serves ``/api/batch`` and the legacy ``/api``;
The API is mounted on a port by :func:`rtcore.server.internal.mount_internal`.
"""

from __future__ import annotations

import logging

from rtcore.server.api.endpoint import METHODS, ServerApi
from rtcore.server.api.errors import (
    ERROR_INTERNAL as ERROR_INTERNAL,
    ERROR_NOT_AVAILABLE as ERROR_NOT_AVAILABLE,
    ERROR_NOT_FOUND as ERROR_NOT_FOUND,
    ERROR_UNRECOVERABLE_POSITION as ERROR_UNRECOVERABLE_POSITION,
    ApiError,
)
from rtcore.server.api.methods import RpcHandler as RpcHandler
from rtcore.server.api.patterns import glob_to_regex as glob_to_regex
from rtcore.server.api.rawjson import Raw as Raw, parse_json as parse_json


__all__ = [
    "ApiError",
    "ServerApi",
    "METHODS",
]

# The logger of every module of the package.
logger = logging.getLogger("rtcore.server.api")
