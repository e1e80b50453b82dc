"""A bounded fuzz smoke: every harness of ``fuzz/`` on inputs from hypothesis.

The harnesses are the ones the long atheris runs use (docs/fuzzing.md); here
each ``TestOneInput`` gets its seeds, then about a thousand inputs: random
bytes and mutations of the seeds (bytes replaced, inserted, deleted, seeds
spliced). Hypothesis runs derandomized, so a failure is reproducible. A
harness raises only on a real failure: an exception its parser does not
document, a broken invariant, or the two frame parsers disagreeing.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st


FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ("frames", "http", "handshake", "deflate", "json", "protobuf", "token", "config")
EXAMPLES = 1000

if str(FUZZ_DIR) not in sys.path:
    # The harnesses import their helper module, fuzz/fuzzlib.py, by name.
    sys.path.insert(0, str(FUZZ_DIR))


def load_harness(target: str) -> ModuleType:
    name = f"fuzz_{target}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    if not getattr(module, "AVAILABLE", True):
        pytest.skip(f"{name}: its subject is not available in this build")
    return module


def _mutate(seed: bytes, edits: list[tuple[int, int, int]], other: bytes) -> bytes:
    data = bytearray(seed)
    for position, byte, kind in edits:
        at = position % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = byte
        elif kind == 1:
            data.insert(at, byte)
        elif kind == 2:
            del data[at : at + 1 + byte % 8]
        else:
            data[at:] = other[byte % (len(other) + 1) :]
    return bytes(data)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    edit = st.tuples(st.integers(0, 1 << 16), st.integers(0, 255), st.integers(0, 3))
    mutated = st.builds(
        _mutate, st.sampled_from(seeds), st.lists(edit, max_size=6), st.sampled_from(seeds)
    )
    return st.one_of(st.binary(max_size=200), mutated, mutated)


def _fuzz(test_one_input: Callable[[bytes], None], seeds: list[bytes]) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs(seeds))
    def run(data: bytes) -> None:
        test_one_input(data)

    run()


@pytest.mark.parametrize("target", TARGETS)
def test_seeds(target: str) -> None:
    harness = load_harness(target)
    assert harness.SEEDS
    for seed in harness.SEEDS:
        harness.TestOneInput(seed)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_smoke(target: str) -> None:
    harness = load_harness(target)
    _fuzz(harness.TestOneInput, list(harness.SEEDS))


@pytest.mark.parametrize("index", range(14))
def test_config_loader_findings(index: int) -> None:
    # Inputs that escaped as RecursionError, ValueError or OverflowError
    # (docs/fuzzing.md): each is now refused with a ConfigError.
    harness = load_harness("config")
    assert len(harness.FINDINGS) == 14
    error = harness.load(harness.FINDINGS[index])
    assert error is not None
    harness.TestOneInput(harness.FINDINGS[index])


def test_http_parser_findings() -> None:
    # The same status for the stream whole and cut at every position
    # (docs/fuzzing.md: it was 400 whole and 431 cut inside the bad line).
    harness = load_harness("http")
    for stream, max_headers in harness.FINDINGS:
        statuses = {harness.outcome(stream, cut, max_headers) for cut in range(len(stream) + 1)}
        assert statuses == {(431, 431)}
