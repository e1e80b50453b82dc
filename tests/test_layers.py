"""The package layout is the architecture (docs/architecture.md): checked here.

Every import in ``src/rtcore`` (including the ones under ``TYPE_CHECKING`` and
inside functions) must point to the same layer or one below; sibling layers
(backends and transports) never import each other; packages form no circle;
and no hand-written module grows past 800 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest


SRC = Path(__file__).resolve().parent.parent / "src" / "rtcore"
MAX_LINES = 800
GENERATED = {"protocol/client_pb2.py", "protocol/client_pb2.pyi"}

# unit (a subpackage, or a module at the top) -> layer; higher may import lower
LAYERS: dict[str, int] = {
    # the compiled cores with their twins and facades, and what they share
    "_version": 0,
    "_impl": 0,
    "errors": 0,
    "_frames": 0,
    "_frames_py": 0,
    "frames": 0,
    "_fanout": 0,
    "_fanout_py": 0,
    "fanout": 0,
    # sans-I/O wire code
    "wire": 1,
    # what is said on the wire, who may say it, how the server is set up
    "protocol": 2,
    "auth": 2,
    "config": 2,
    # sessions, channels, fan-out, recovery: no transport, no edge
    "engine": 3,
    # what plugs into the engine's seams, and what carries its bytes
    "backends": 4,
    "transports": 4,
    # the edge: routes, server API, metrics, CLI, workers
    "server": 5,
    "examples": 6,
    "__main__": 6,
    "__init__": 6,
}
# units of one layer that must stay independent of each other
SIBLINGS = {frozenset({"backends", "transports"}), frozenset({"protocol", "auth"})}


def _unit(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "rtcore", module
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every rtcore import in a .py or .pyx file."""
    text = path.read_text()
    found: list[tuple[int, str]] = []
    if path.suffix in (".pyx", ".pxd"):
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r"\s*(?:from|c?import)\s+(rtcore[\w.]*)", line)
            if m:
                found.append((n, m.group(1)))
        return found
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("rtcore")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("rtcore"):
                if mod == "rtcore":
                    found += [(node.lineno, f"rtcore.{a.name}") for a in node.names]
                else:
                    found.append((node.lineno, mod))
    return found


def _sources() -> list[Path]:
    return sorted(
        p
        for p in SRC.rglob("*")
        if p.suffix in (".py", ".pyx", ".pxd", ".pxi") and str(p.relative_to(SRC)) not in GENERATED
    )


def _edges() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, where) for imports between units."""
    edges = []
    for path in _sources():
        src_unit = _unit(_module_name(path))
        for line, mod in _imports(path):
            dst_unit = _unit(mod)
            if dst_unit != src_unit and mod != "rtcore._version":
                edges.append((src_unit, dst_unit, f"{path.relative_to(SRC)}:{line} {mod}"))
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in _sources()}
    assert units - set(LAYERS) == set(), "add the new package to LAYERS and docs/architecture.md"


def test_imports_point_down_or_sideways() -> None:
    upward = [
        f"{where} ({a} is layer {LAYERS[a]}, {b} is layer {LAYERS[b]})"
        for a, b, where in _edges()
        if LAYERS[b] > LAYERS[a]
    ]
    assert upward == []


def test_sibling_layers_are_independent() -> None:
    crossing = [where for a, b, where in _edges() if frozenset({a, b}) in SIBLINGS]
    assert crossing == []


def test_no_import_circle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _ in _edges():
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    circle: list[str] = []

    def visit(unit: str, path: list[str]) -> bool:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                circle.extend(path[path.index(nxt) :] + [unit, nxt] if nxt in path else [unit, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, unit]):
                return True
        state[unit] = 2
        return False

    for unit in sorted(graph):
        if state.get(unit) is None and visit(unit, []):
            break
    assert circle == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # The rule above is only as good as the import reader: feed it one.
    fake = tmp_path / "rtcore" / "engine" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..server import app\nfrom rtcore.transports import uni\n")
    global SRC
    saved, SRC = SRC, tmp_path / "rtcore"
    try:
        mods = [m for _, m in _imports(fake)]
    finally:
        SRC = saved
    assert mods == ["rtcore.server", "rtcore.transports"]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it along its seams"
