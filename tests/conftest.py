"""Shared fixtures.

``frames_impl`` / ``fanout_impl`` parametrize a test over the compiled module
and its pure-Python twin (ids ``cython`` and ``python``). The compiled id is
skipped only when the extension was not built *and* the run does not require
it: under ``CI=true`` or ``RTCORE_REQUIRE_EXTENSIONS=1`` a missing compiled
module is a failure (see the canary in ``test_twins.py``).
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

import pytest


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


IN_CI = _truthy("CI")
NO_EXTENSIONS = _truthy("RTCORE_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = (IN_CI or _truthy("RTCORE_REQUIRE_EXTENSIONS")) and not NO_EXTENSIONS


def _load_twins(stem: str) -> list[pytest.param]:
    params = []
    try:
        compiled: ModuleType | None = importlib.import_module(f"rtcore._{stem}")
    except ImportError:
        compiled = None
    if compiled is not None:
        params.append(pytest.param(compiled, id="cython"))
    elif REQUIRE_EXTENSIONS:
        # The fixture turns this into a failure.
        params.append(pytest.param(None, id="cython"))
    else:
        params.append(
            pytest.param(
                None, id="cython", marks=pytest.mark.skip(reason=f"rtcore._{stem} not built")
            )
        )
    params.append(pytest.param(importlib.import_module(f"rtcore._{stem}_py"), id="python"))
    return params


@pytest.fixture(params=_load_twins("frames"))
def frames_impl(request: pytest.FixtureRequest) -> ModuleType:
    """The ``_frames`` compiled module or its twin ``_frames_py``."""
    if request.param is None:
        pytest.fail("rtcore._frames is required but was not built")
    return request.param


@pytest.fixture(params=_load_twins("fanout"))
def fanout_impl(request: pytest.FixtureRequest) -> ModuleType:
    """The ``_fanout`` compiled module or its twin ``_fanout_py``."""
    if request.param is None:
        pytest.fail("rtcore._fanout is required but was not built")
    return request.param


def _compiled_built() -> bool:
    try:
        importlib.import_module("rtcore._frames")
    except ImportError:
        return False
    return True


@pytest.fixture(params=["cython", "python"])
def server_impl(request: pytest.FixtureRequest) -> str:
    """Run a subprocess server on the compiled modules or on the pure-Python twins."""
    if request.param == "cython" and not _compiled_built():
        if REQUIRE_EXTENSIONS:
            pytest.fail("compiled modules are required but were not built")
        pytest.skip("compiled modules not built")
    return str(request.param)


# Tests that run for tens of seconds or minutes go before the rest, longest
# first, so that no worker finishes alone on a long tail. Two kinds:
# - CPU_BOUND keep a core busy the whole time (a conformance run, a compiler, a
#   type checker, a fuzzer, a randomized comparison);
# - WAITING mostly wait on servers, browsers, timers and other processes.
# scripts/test.sh runs more xdist workers than the machine has cores, because
# most of the suite waits; the two kinds are handed out in alternating pairs
# (xdist with --maxschedchunk=1 gives each worker two tests, then one at a
# time) so that about half the workers run the CPU-bound ones while the others
# wait, instead of every worker queueing for the cores at the start and
# idling at the end.
CPU_BOUND = (
    "test_autobahn.py",
    "test_packaging.py",
    "test_sourcecode.py",
    "test_api_rawjson.py",
    "test_codec_json_msgspec.py",
    "test_fuzz_smoke.py",
)
WAITING = (
    "tests/browser/",
    "tests/multinode/",
    "test_sdk_js.py",
    "test_sdk_python.py",
    "test_loadgen_smoke.py",
    "test_soak_smoke.py",
    "test_consumers.py",
    "test_redis_sentinel.py",
    "test_cli.py",
)


def _rank(item: pytest.Item, markers: tuple[str, ...]) -> int:
    path = item.nodeid.split("::")[0]
    for i, marker in enumerate(markers):
        if marker in path:
            return i
    return len(markers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cpu = sorted(
        (i for i in items if _rank(i, CPU_BOUND) < len(CPU_BOUND)),
        key=lambda i: _rank(i, CPU_BOUND),
    )  # stable: the order within a rank is kept
    taken = set(map(id, cpu))
    waiting = sorted(
        (i for i in items if id(i) not in taken and _rank(i, WAITING) < len(WAITING)),
        key=lambda i: _rank(i, WAITING),
    )
    taken.update(map(id, waiting))
    rest = [i for i in items if id(i) not in taken]
    ordered: list[pytest.Item] = []
    for k in range(0, max(len(cpu), len(waiting)), 2):
        ordered += cpu[k : k + 2] + waiting[k : k + 2]
    items[:] = ordered + rest


@pytest.fixture(autouse=True)
def _logging_not_disabled_behind() -> object:
    """Fails the test that leaves ``logging.disable`` set: it is process-wide, so
    every later test on the same worker would lose its log records."""
    before = logging.root.manager.disable
    yield
    after = logging.root.manager.disable
    if after != before:
        logging.disable(before)
        pytest.fail(f"logging.disable({after}) left behind (it was {before})")
