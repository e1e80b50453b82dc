"""One configured proxy: the request it sends for a session and the call to its endpoint."""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from rtcore.backends.proxy.errors import ProxyResponseError, ProxyStatusError
from rtcore.backends.proxy.http import HttpEndpoint
from rtcore.backends.proxy.response import dumps, parse_json
from rtcore.protocol.codes import ClientError
from rtcore.protocol.json import check_json_text


if TYPE_CHECKING:
    from rtcore.config import ProxyOptions
    from rtcore.engine.session import ClientSession


__all__ = ["Proxy", "RawJSON", "encode_request"]

logger = logging.getLogger("rtcore.backends.proxy")


class RawJSON:
    """Bytes that are already JSON (client payloads), spliced into a request as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def encode_request(fields: dict[str, Any]) -> bytes:
    """The JSON object of ``fields``; :class:`RawJSON` values are written as they are."""
    parts = [
        dumps(key) + b":" + (value.data if isinstance(value, RawJSON) else dumps(value))
        for key, value in fields.items()
    ]
    return b"{" + b",".join(parts) + b"}"


class Proxy:
    """A configured proxy: its endpoint and how requests to it are built."""

    __slots__ = (
        "name",
        "endpoint",
        "timeout",
        "binary",
        "include_meta",
        "static_headers",
        "http_headers",
        "emulated_headers",
    )

    def __init__(self, name: str, options: ProxyOptions, endpoint: HttpEndpoint) -> None:
        self.name = name
        self.endpoint = endpoint
        self.timeout = options.timeout
        self.binary = options.binary_encoding
        self.include_meta = options.include_connection_meta
        self.static_headers = list(options.http.static_headers.items())
        # lowercase name -> the configured spelling
        self.http_headers = {h.lower(): h for h in options.http_headers}
        self.emulated_headers = {h.lower(): h for h in options.emulated_headers}

    def headers(
        self, session: ClientSession, emulated: dict[str, str] | None
    ) -> list[tuple[str, str]]:
        """Static headers, then emulated ones, then the transport's (later wins)."""
        out: dict[str, tuple[str, str]] = {n.lower(): (n, v) for n, v in self.static_headers}
        if emulated and self.emulated_headers:
            for lower, spelled in self.emulated_headers.items():
                value = emulated.get(lower)
                if value is not None:
                    out[lower] = (spelled, value)
        if self.http_headers:
            transport: dict[str, str] = session.request_info.get("headers") or {}
            for lower, spelled in self.http_headers.items():
                value = transport.get(lower)
                if value is not None:
                    out[lower] = (spelled, value)
        return list(out.values())

    def fields(self, session: ClientSession, *, user: bool = True) -> dict[str, Any]:
        """The request fields every kind sends (``user`` and ``meta`` unless ``user`` is false)."""
        fields: dict[str, Any] = {
            "client": session.client_id,
            "transport": session.transport.name,
            "protocol": "protobuf" if session.codec.binary else "json",
            "encoding": "binary" if self.binary else "json",
        }
        if user:
            fields["user"] = session.user
            if self.include_meta and session.meta is not None:
                fields["meta"] = session.meta
        return fields

    def add_data(self, session: ClientSession, data: bytes, fields: dict[str, Any]) -> None:
        """Put the client's ``data`` into ``fields`` (base64 with binary encoding).

        Raises:
            ClientError: 107 for data that is not JSON while the proxy speaks JSON.
        """
        if not data:
            return
        if self.binary:
            fields["b64data"] = base64.b64encode(data).decode("ascii")
            return
        if session.codec.binary:
            # Protobuf clients send any bytes; a JSON request can carry only JSON.
            try:
                # Integers of any length are JSON (no int() conversion, no digit limit).
                check_json_text(data.decode("utf-8"))
            except ValueError:
                logger.info(
                    "client data is not JSON and proxy %s has no binary_encoding: refused",
                    self.name,
                    extra=session.log_fields,
                )
                raise ClientError(107, "bad request: data must be JSON") from None
        fields["data"] = RawJSON(data)

    async def call(self, fields: dict[str, Any], headers: list[tuple[str, str]]) -> dict[str, Any]:
        """POST the request; the response object (raises ProxyError)."""
        status, body = await self.endpoint.post(encode_request(fields), headers, self.timeout)
        if status != 200:
            raise ProxyStatusError(status)
        response = parse_json(body)
        if not isinstance(response, dict):
            raise ProxyResponseError("the body must be a JSON object")
        return response
