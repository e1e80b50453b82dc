"""Tags filters: which publications a subscription with ``tf`` receives (PROTOCOL.md §10).

A subscribe request may carry a ``FilterNode`` tree (the SDKs build it:
centrifuge-js ``tagsFilter``, centrifuge-python ``Filter``). The server keeps
only the publications whose ``tags`` match it. :func:`compile_filter` checks
a tree once, at subscribe, and turns it into a plain function of the tags, so
fan-out calls one function per filtering subscriber and never touches the
encoded bytes (they stay shared).

Semantics, as Centrifuge evaluates them:

* a leaf (``op`` ""): ``eq``/``neq``, ``in``/``nin`` (``vals``),
  ``ex``/``nex`` (the key is present or not), ``sw``/``ew``/``ct`` (starts
  with, ends with, contains), and ``lt``/``lte``/``gt``/``gte``, which
  compare decimal numbers (a tag or value that is not a plain decimal
  number does not match). A missing tag is the empty string for ``in`` and
  ``nin``, fails ``eq`` and the string and number comparisons, and passes
  ``neq``;
* ``and`` / ``or`` of at least one child, ``not`` of exactly one.

A malformed tree raises :class:`FilterError`; the subscribe answers 107.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final

from rtcore.protocol.messages import FilterNode


__all__ = ["FilterError", "TagsMatcher", "compile_filter", "MAX_NODES", "MAX_DEPTH"]

#: A function of a publication's tags (None: no tags): True when it passes.
TagsMatcher = Callable[[Mapping[str, str] | None], bool]

#: Limits on a client's filter tree (nodes in all, nesting depth).
MAX_NODES: Final = 256
MAX_DEPTH: Final = 16

_DECIMAL: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_NO_TAGS: Final[Mapping[str, str]] = {}


class FilterError(ValueError):
    """A tags filter that is not well-formed."""


def _number(text: str) -> Decimal | None:
    if len(text) > 64 or _DECIMAL.fullmatch(text) is None:
        return None
    return Decimal(text)


def _leaf(node: FilterNode) -> TagsMatcher:
    cmp, key, val, vals = node.cmp, node.key, node.val, tuple(node.vals)
    if not cmp:
        raise FilterError("a leaf node needs cmp")
    if cmp in ("eq", "neq", "sw", "ew", "ct", "lt", "lte", "gt", "gte"):
        if not val:
            raise FilterError(f"the {cmp} comparison needs val")
        if vals:
            raise FilterError(f"the {cmp} comparison takes no vals")
    elif cmp in ("in", "nin"):
        if not vals:
            raise FilterError(f"the {cmp} comparison needs vals")
        if val:
            raise FilterError(f"the {cmp} comparison takes no val")
    elif cmp in ("ex", "nex"):
        if val or vals:
            raise FilterError(f"the {cmp} comparison takes no val or vals")
    else:
        raise FilterError(f"unknown comparison {cmp[:32]!r}")
    if not key and cmp not in ("ex", "nex"):
        raise FilterError("a leaf node needs key")

    if cmp == "eq":
        return lambda tags: (tags or _NO_TAGS).get(key) == val
    if cmp == "neq":
        return lambda tags: (tags or _NO_TAGS).get(key) != val
    if cmp in ("in", "nin"):
        members = frozenset(vals)
        if cmp == "in":
            return lambda tags: (tags or _NO_TAGS).get(key, "") in members
        return lambda tags: (tags or _NO_TAGS).get(key, "") not in members
    if cmp == "ex":
        return lambda tags: key in (tags or _NO_TAGS)
    if cmp == "nex":
        return lambda tags: key not in (tags or _NO_TAGS)
    if cmp in ("sw", "ew", "ct"):

        def text(tags: Mapping[str, str] | None) -> bool:
            value = (tags or _NO_TAGS).get(key)
            if value is None:
                return False
            if cmp == "sw":
                return value.startswith(val)
            if cmp == "ew":
                return value.endswith(val)
            return val in value

        return text
    bound = _number(val)

    def number(tags: Mapping[str, str] | None) -> bool:
        value = (tags or _NO_TAGS).get(key)
        if value is None or bound is None:
            return False
        n = _number(value)
        if n is None:
            return False
        if cmp == "gt":
            return n > bound
        if cmp == "gte":
            return n >= bound
        if cmp == "lt":
            return n < bound
        return n <= bound

    return number


def compile_filter(node: FilterNode) -> TagsMatcher:
    """Check a filter tree and return its matcher.

    Raises:
        FilterError: the tree is malformed (unknown ``op`` or ``cmp``, a
            missing ``key``/``val``/``vals``, ``not`` without exactly one
            child, an empty ``and``/``or``) or exceeds :data:`MAX_NODES`
            nodes or :data:`MAX_DEPTH` levels.
    """
    count = [0]

    def build(n: FilterNode, depth: int) -> TagsMatcher:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise FilterError(f"a tags filter has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise FilterError(f"a tags filter nests at most {MAX_DEPTH} levels")
        op = n.op
        if op == "":
            return _leaf(n)
        if op in ("and", "or"):
            if not n.nodes:
                raise FilterError(f"an {op} node needs at least one child")
            children = tuple(build(c, depth + 1) for c in n.nodes)
            if op == "and":
                return lambda tags: all(c(tags) for c in children)
            return lambda tags: any(c(tags) for c in children)
        if op == "not":
            if len(n.nodes) != 1:
                raise FilterError("a not node needs exactly one child")
            child = build(n.nodes[0], depth + 1)
            return lambda tags: not child(tags)
        raise FilterError(f"unknown filter op {op[:32]!r}")

    return build(node, 1)
