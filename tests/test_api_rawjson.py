"""The server API's JSON: the fast paths give exactly what the general ones give.

``parse_json`` takes a text an encoder wrote (compact, or Python's defaults)
through the C decoder and writes raw fields back with that encoder; every
other text goes to the walker that keeps raw fields as their source. ``dump``
tells the common types apart by exact type. Both are checked here against
the general path on generated input: same values, same raw bytes, same errors.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from rtcore.errors import HttpError
from rtcore.server.api import rawjson
from rtcore.server.api.rawjson import RAW, ListOf, Raw, dump, parse_json
from rtcore.server.api.schema import BATCH_SPEC, LEGACY_SPEC, RAW_SPECS


SPECS = [BATCH_SPEC, RAW_SPECS["publish"], LEGACY_SPEC, None, RAW, ListOf(RAW)]

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["é", "\u2028", "\x7f", "\ud800", "a/b", "\x00", "日本"]),
)
_keys = st.sampled_from(["data", "publish", "channel", "commands", "params", "info", "x", "é"])
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)
_commands = st.builds(
    lambda cmds: {"commands": cmds},
    st.lists(
        st.one_of(
            st.dictionaries(
                st.sampled_from(["publish", "broadcast", "x"]),
                st.dictionaries(_keys, _value, max_size=4),
                max_size=2,
            ),
            _value,
        ),
        max_size=4,
    ),
)


@st.composite
def _texts(draw: st.DrawFn) -> str:
    value = draw(st.one_of(_value, _commands, st.dictionaries(_keys, _value, max_size=4)))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :"), (",", ": ")]))
    text = json.dumps(value, separators=separators, ensure_ascii=draw(st.booleans()))
    if text and draw(st.integers(0, 4)) == 0:
        # Something no encoder writes, or no JSON at all.
        at = draw(st.integers(0, len(text) - 1))
        cut = draw(st.sampled_from(["", ",", "}", "]", ":", "x", '"', " ", "1e5", '"a":1,"a":2']))
        text = text[:at] + cut + text[at + 1 :]
    if draw(st.integers(0, 6)) == 0:
        text = text.replace("\\u00e9", "\\u00E9").replace("/", "\\/")
    return text


def _walker(text: str, spec: Any) -> Any:
    """parse_json without its canonical fast path."""
    try:
        value, end = rawjson._parse_value(text, rawjson._skip_ws(text, 0), spec)
        end = rawjson._skip_ws(text, end)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except (ValueError, RecursionError) as exc:
        raise rawjson._json_error(exc) from None
    return value


def _shape(value: Any) -> Any:
    """Types and values, comparable (NaN equal to itself, dict order kept)."""
    if isinstance(value, Raw):
        return ("raw", bytes(value))
    if isinstance(value, dict):
        return ("dict", [(k, _shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_shape(v) for v in value])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, getattr(value, "digits", value))


def _outcome(parse: Any, text: str, spec: Any) -> Any:
    try:
        return ("ok", _shape(parse(text, spec)))
    except HttpError as exc:
        return ("error", exc.status, exc.message)


@settings(max_examples=1500, suppress_health_check=list(HealthCheck), deadline=None)
@given(_texts(), st.sampled_from(range(len(SPECS))))
def test_parse_json_matches_the_walker(text: str, which: int) -> None:
    spec = SPECS[which]
    assert _outcome(parse_json, text, spec) == _outcome(_walker, text, spec)


def test_canonical_texts_take_the_fast_path() -> None:
    body = '{"channel":"c","data":{"text":"é","n":[1,2.5,null]}}'
    spaced = json.dumps({"channel": "c", "data": {"text": "é"}})
    for text in (body, spaced):
        value = rawjson._parse_canonical(text, RAW_SPECS["publish"])
        assert value is not rawjson._NOT_CANONICAL
        assert value == _walker(text, RAW_SPECS["publish"])
    # Whitespace an encoder would not write: the walker keeps it in the raw field.
    odd = '{"channel":"c","data":{ "text" : 1 }}'
    assert rawjson._parse_canonical(odd, RAW_SPECS["publish"]) is rawjson._NOT_CANONICAL
    assert parse_json(odd, RAW_SPECS["publish"])["data"] == b'{ "text" : 1 }'


def _dump_reference(value: Any) -> bytes:
    """dump as it was written first (recursive, one join per container)."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(
                _dump_reference(str(k)) + b":" + _dump_reference(v) for k, v in value.items()
            )
            + b"}"
        )
    if isinstance(value, list):
        return b"[" + b",".join(_dump_reference(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _List(list):  # type: ignore[type-arg]
    pass


_dump_leaf = st.one_of(
    _leaf,
    st.integers(),
    st.binary(max_size=4).map(lambda b: Raw(json.dumps(b.hex()).encode())),
    st.text(max_size=4).map(_Str),
    st.integers().map(_Int),
)
_dump_value = st.recursive(
    _dump_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.booleans()), inner),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(_Dict),
        st.lists(inner, max_size=3).map(_List),
    ),
    max_leaves=20,
)


@settings(max_examples=1500, suppress_health_check=list(HealthCheck), deadline=None)
@given(_dump_value)
def test_dump_matches_the_reference(value: Any) -> None:
    def outcome(fn: Any) -> Any:
        try:
            out = fn(value)
        except (TypeError, ValueError) as exc:
            return type(exc)
        assert type(out) is bytes
        return out

    assert outcome(dump) == outcome(_dump_reference)
