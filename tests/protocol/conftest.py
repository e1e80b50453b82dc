"""Fixtures of the protocol-engine tests (helpers live in ``helpers.py``).

Tests are plain functions that run their coroutine with ``helpers.run``
(pytest-asyncio is not a dependency), so the fixtures hand out factories:

* ``clock``: a :class:`~helpers.FakeClock`.
* ``node_factory(config_mapping, clock=None, broker=None)``: a Node built from
  a config mapping merged over the test defaults (an HMAC secret).
* ``served``: ``async with served(config_mapping) as s`` starts the node and
  serves it on a free loopback port inside the test's event loop
  (``s.url``, ``s.node``, ``s.port``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .helpers import FakeClock, make_node, serve


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def node_factory() -> Callable[..., Any]:
    return make_node


@pytest.fixture
def served() -> Callable[..., Any]:
    return serve
