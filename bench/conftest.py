"""Fixtures of the micro-benchmarks (``python -m pytest bench/bench_fanout.py --benchmark-only``).

``bench/`` is outside ``testpaths``: a plain ``pytest`` never collects it.
``fanout_impl`` runs a benchmark on the compiled module and on its
pure-Python twin (ids ``cython`` / ``python``), so that the speed-up is
measured side by side rather than assumed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def _twins() -> list[pytest.param]:
    try:
        compiled: ModuleType | None = importlib.import_module("rtcore._fanout")
    except ImportError:
        compiled = None
    marks = [] if compiled is not None else [pytest.mark.skip(reason="rtcore._fanout not built")]
    return [
        pytest.param(compiled, id="cython", marks=marks),
        pytest.param(importlib.import_module("rtcore._fanout_py"), id="python"),
    ]


@pytest.fixture(params=_twins())
def fanout_impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param
