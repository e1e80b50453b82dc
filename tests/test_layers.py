"""The package layout is the architecture (docs/architecture.md): checked here.

Every import in ``src/rtcore`` (including the ones under ``TYPE_CHECKING`` and
inside functions) must point to the same layer or one below; sibling layers
(backends and transports) never import each other; packages form no circle;
and no hand-written module grows past 800 lines. The layers and the import
reader are in tools/layers.py, which also draws docs/img/layers.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import layers  # noqa: E402


def test_every_unit_has_a_layer() -> None:
    units = {layers.unit_of(layers.module_name(p)) for p in layers.sources()}
    assert units - set(layers.LAYERS) == set(), "add the new package to LAYERS"


def test_imports_point_down_or_sideways() -> None:
    rank = layers.LAYERS
    upward = [
        f"{where} ({a} is layer {rank[a]}, {b} is layer {rank[b]})"
        for a, b, where in layers.edges()
        if rank[b] > rank[a]
    ]
    assert upward == []


def test_sibling_layers_are_independent() -> None:
    crossing = [where for a, b, where in layers.edges() if frozenset({a, b}) in layers.SIBLINGS]
    assert crossing == []


def _circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of the graph as a list of nodes, or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_circle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _ in layers.edges():
        graph.setdefault(a, set()).add(b)
    assert _circle(graph) == []


def test_no_import_circle_between_subpackages() -> None:
    # One level down as well, between subpackages: server.api, server.admin, backends.redis, ...
    graph: dict[str, set[str]] = {}
    for a, b, _ in layers.subpackage_edges():
        graph.setdefault(a, set()).add(b)
    assert _circle(graph) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    # The rules are only as good as the import reader and the circle finder.
    src = tmp_path / "rtcore"
    (src / "engine").mkdir(parents=True)
    (src / "engine" / "x.py").write_text(
        "from ..server import app\nfrom rtcore.transports import uni\n"
        "def f():\n    from rtcore import config\n"
    )
    found = [m for _, m in layers.imports_of(src / "engine" / "x.py", src)]
    assert found == ["rtcore.server", "rtcore.transports", "rtcore.config"]
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": {"c"}}) == []


@pytest.mark.parametrize("path", layers.sources(), ids=lambda p: str(p.relative_to(layers.SRC)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= layers.MAX_LINES, f"{lines} lines: split it along its seams"
