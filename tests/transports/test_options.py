"""Transport options read from configuration sections when the configuration has them."""

from __future__ import annotations

from types import SimpleNamespace

from rtcore.config import Config
from rtcore.transports.http_stream import HttpTransportOptions
from rtcore.transports.uni import UniTransportOptions


def test_defaults_without_the_sections() -> None:
    assert HttpTransportOptions.from_config(Config()) == HttpTransportOptions()
    assert UniTransportOptions.from_config(Config()) == UniTransportOptions()
    assert HttpTransportOptions().http_stream and HttpTransportOptions().sse
    uni = UniTransportOptions()
    assert not (uni.uni_websocket or uni.uni_sse or uni.uni_http_stream)


def test_sections_override_defaults() -> None:
    config = SimpleNamespace(
        http_stream=SimpleNamespace(enabled=False),
        sse=SimpleNamespace(enabled=True),
        emulation=SimpleNamespace(max_request_body_size=1024, rate_limit=5, burst=7),
        uni_websocket=SimpleNamespace(
            enabled=True, join_push_messages=True, message_size_limit=2048
        ),
        uni_sse=SimpleNamespace(enabled=True, max_request_body_size=100),
        uni_http_stream=SimpleNamespace(enabled=False, max_request_body_size=200),
    )
    http = HttpTransportOptions.from_config(config)
    assert (http.http_stream, http.sse) == (False, True)
    assert (http.max_request_body_size, http.emulation_rate_limit, http.emulation_burst) == (
        1024,
        5.0,
        7,
    )
    uni = UniTransportOptions.from_config(config)
    assert (uni.uni_websocket, uni.uni_sse, uni.uni_http_stream) == (True, True, False)
    assert uni.join_push_messages and uni.message_size_limit == 2048
    assert (uni.uni_sse_max_request_body_size, uni.uni_http_stream_max_request_body_size) == (
        100,
        200,
    )
