"""Proxies and integers past Python's int digit limit (``sys.get_int_max_str_digits``).

Such an integer is valid JSON, but ``json.loads`` refuses to convert it. In
a payload (``data``, ``info``) it must travel both ways: from a client to the
backend byte for byte, and from the backend's answer to the client
re-encoded with the same digits. Fields rtcore reads as values refuse it
with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from aiohttp import web
from websockets.asyncio.client import connect

import rtcore
from rtcore.auth import make_connect_token
from rtcore.backends.proxy import ProxyResponseError
from rtcore.backends.proxy.request import Proxy, RawJSON
from rtcore.backends.proxy.response import (
    connect_answer,
    parse_json,
    refresh_answer,
    rpc_answer,
    subscribe_answer,
)
from rtcore.config import ProxyOptions, config_from_mapping
from rtcore.engine.node import Node
from rtcore.protocol.codes import ClientError


T = TypeVar("T")
SECRET = "rtcore-proxy-long-int-hmac-secret-0123456789abcdef"
LONG = "9" * (sys.get_int_max_str_digits() + 700)


def answer(text: str) -> dict[str, Any]:
    response = parse_json(text.encode("utf-8"))
    assert isinstance(response, dict)
    return response


# -- the backend's answer ------------------------------------------------------------


def test_long_integer_in_result_payloads_keeps_its_digits() -> None:
    response = answer(
        '{"result": {"user": "1", "data": {"n": ' + LONG + ', "s": "\u00e9", "f": 1.5},'
        ' "info": [-' + LONG + "],"
        ' "subs": {"room": {"data": ' + LONG + ', "info": {"a": [1, {"b": ' + LONG + "}]}}}}}"
    )
    credentials = connect_answer(response)
    assert credentials is not None
    assert credentials.data == ('{"n":' + LONG + ',"s":"\u00e9","f":1.5}').encode()
    assert credentials.info == ("[-" + LONG + "]").encode()
    grant = credentials.subscriptions["room"]
    assert grant.data == LONG.encode()
    assert grant.info == ('{"a":[1,{"b":' + LONG + "}]}").encode()
    assert rpc_answer(answer('{"result": {"data": ' + LONG + "}}")) == LONG.encode()
    assert subscribe_answer(answer('{"result": {"info": ' + LONG + "}}")).info == LONG.encode()
    refreshed = refresh_answer(answer('{"result": {"info": [' + LONG + "]}}"), with_meta=True)
    assert refreshed.info == ("[" + LONG + "]").encode()


def test_ordinary_answers_are_re_encoded_as_before() -> None:
    credentials = connect_answer(answer('{"result": {"user": "1", "data": {"a": [1, 2.50]}}}'))
    assert credentials is not None and credentials.data == b'{"a":[1,2.5]}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"result": {"user": "1", "meta": {"m": [' + LONG + "]}}}",
            f"result.meta holds an integer of {len(LONG)} digits",
        ),
        (
            '{"result": {"user": "1", "expire_at": ' + LONG + "}}",
            "result.expire_at must be an integer in 0..",
        ),
        ('{"error": {"code": ' + LONG + "}}", "error.code must be an integer in 1.."),
    ],
)
def test_long_integer_in_a_value_field_is_refused(text: str, message: str) -> None:
    with pytest.raises(ProxyResponseError, match=message.replace(".", r"\.")):
        connect_answer(answer(text))


def test_long_integer_does_not_let_nan_or_overflow_through() -> None:
    for text in ('{"a": ' + LONG + ', "b": NaN}', '{"a": ' + LONG + ', "b": 1e400}'):
        with pytest.raises(ProxyResponseError, match="the body is not JSON"):
            parse_json(text.encode())


# -- the client's data ---------------------------------------------------------------


def test_client_data_with_a_long_integer_goes_to_the_backend_as_sent() -> None:
    proxy = Proxy("p", ProxyOptions(endpoint="http://127.0.0.1:9/"), None)  # type: ignore[arg-type]
    protobuf_client: Any = SimpleNamespace(codec=SimpleNamespace(binary=True), log_fields={})
    data = ('{"n": ' + LONG + "}").encode()
    fields: dict[str, Any] = {}
    proxy.add_data(protobuf_client, data, fields)
    assert isinstance(fields["data"], RawJSON) and fields["data"].data == data
    with pytest.raises(ClientError) as info:
        proxy.add_data(protobuf_client, b'{"n": NaN}', {})
    assert info.value.code == 107


# -- end to end: a JSON client, the node, an HTTP backend -------------------------------


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


@asynccontextmanager
async def raw_backend(body: bytes, received: list[bytes]) -> AsyncIterator[str]:
    """An RPC backend on loopback that records request bodies and answers ``body``."""

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/rpc", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/rpc"
    finally:
        await runner.cleanup()


def test_rpc_round_trip_with_long_integers() -> None:
    async def main() -> None:
        received: list[bytes] = []
        answer_body = ('{"result": {"data": {"sum": ' + LONG + "}}}").encode()
        async with raw_backend(answer_body, received) as url:
            config = config_from_mapping(
                {
                    "client": {"token": {"hmac_secret_key": SECRET}},
                    "rpc": {
                        "proxy": {"endpoint": url},
                        "without_namespace": {"proxy_enabled": True},
                    },
                }
            )
            node = Node(config)
            server = await rtcore.serve(node, "127.0.0.1", 0)
            try:
                uri = f"ws://127.0.0.1:{server.port}/connection/websocket"
                async with connect(uri) as ws:
                    token = make_connect_token(SECRET, "42")
                    await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
                    assert '"connect"' in str(await ws.recv())
                    args = '{"n": [' + LONG + ", 1]}"
                    await ws.send('{"id": 2, "rpc": {"method": "add", "data": ' + args + "}}")
                    reply = str(await ws.recv())
                assert len(received) == 1 and ('"data":' + args).encode() in received[0]
                assert reply.rstrip("\n") == '{"id":2,"rpc":{"data":{"sum":' + LONG + "}}}"
            finally:
                await node.close()
                await server.close(timeout=1.0)

    run(main())
