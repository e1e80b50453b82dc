"""Tags filters: the matcher of ``tf`` trees, and filtering end to end with both SDKs."""

from __future__ import annotations

import pytest

from rtcore.protocol.messages import FilterNode
from rtcore.protocol.tags_filter import MAX_DEPTH, FilterError, compile_filter


def leaf(key: str, cmp: str, val: str = "", vals: list[str] | None = None) -> FilterNode:
    return FilterNode(key=key, cmp=cmp, val=val, vals=vals or [])


@pytest.mark.parametrize(
    ("node", "tags", "expected"),
    [
        (leaf("t", "eq", "a"), {"t": "a"}, True),
        (leaf("t", "eq", "a"), {"t": "b"}, False),
        (leaf("t", "eq", "a"), None, False),
        (leaf("t", "neq", "a"), {"t": "b"}, True),
        (leaf("t", "neq", "a"), {}, True),
        (leaf("t", "in", vals=["a", "b"]), {"t": "b"}, True),
        (leaf("t", "in", vals=["a", ""]), {}, True),  # a missing tag is ""
        (leaf("t", "nin", vals=["a"]), {"t": "c"}, True),
        (leaf("t", "nin", vals=["a"]), {"t": "a"}, False),
        (leaf("t", "ex"), {"t": ""}, True),
        (leaf("t", "nex"), {"t": ""}, False),
        (leaf("t", "sw", "BT"), {"t": "BTC"}, True),
        (leaf("t", "ew", "TC"), {"t": "BTC"}, True),
        (leaf("t", "ct", "T"), {"t": "BTC"}, True),
        (leaf("t", "ct", "T"), {}, False),
        (leaf("p", "gt", "100"), {"p": "100.5"}, True),
        (leaf("p", "gt", "100"), {"p": "99.99"}, False),
        (leaf("p", "gte", "100"), {"p": "100.00"}, True),
        (leaf("p", "lt", "-1"), {"p": "-1.5"}, True),
        (leaf("p", "lte", "2"), {"p": "10"}, False),  # numbers, not strings
        (leaf("p", "gt", "1"), {"p": "abc"}, False),
        (leaf("p", "gt", "x"), {"p": "2"}, False),
        (FilterNode(op="and", nodes=[leaf("a", "eq", "1"), leaf("b", "ex")]), {"a": "1"}, False),
        (FilterNode(op="or", nodes=[leaf("a", "eq", "1"), leaf("b", "ex")]), {"b": "x"}, True),
        (FilterNode(op="not", nodes=[leaf("a", "eq", "1")]), {"a": "1"}, False),
    ],
)
def test_matches(node: FilterNode, tags: dict[str, str] | None, expected: bool) -> None:
    assert compile_filter(node)(tags) is expected


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (FilterNode(), "needs cmp"),
        (leaf("t", "eq"), "needs val"),
        (leaf("t", "eq", "a", ["b"]), "takes no vals"),
        (leaf("t", "in"), "needs vals"),
        (leaf("t", "in", "a", ["b"]), "takes no val"),
        (leaf("t", "ex", "a"), "takes no val"),
        (leaf("", "eq", "a"), "needs key"),
        (leaf("t", "like", "a"), "unknown comparison"),
        (FilterNode(op="xor", nodes=[leaf("a", "ex")]), "unknown filter op"),
        (FilterNode(op="and"), "at least one child"),
        (FilterNode(op="not", nodes=[leaf("a", "ex"), leaf("b", "ex")]), "exactly one child"),
    ],
)
def test_malformed_filters_are_refused(node: FilterNode, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(node)


def test_size_limits() -> None:
    node = leaf("a", "ex")
    for _ in range(MAX_DEPTH):
        node = FilterNode(op="not", nodes=[node])
    with pytest.raises(FilterError, match="nests"):
        compile_filter(node)
    wide = FilterNode(op="or", nodes=[leaf("a", "ex")] * 300)
    with pytest.raises(FilterError, match="nodes"):
        compile_filter(wide)
    assert compile_filter(leaf("", "ex"))({"": "x"}) is True  # ex/nex need no key
