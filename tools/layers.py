"""The layers of ``src/rtcore`` and the imports between them, read from the code.

One source of truth for ``tests/test_layers.py`` (which enforces the rules)
and ``tools/draw_layers.py`` (which draws docs/img/layers.png). A *unit* is a
subpackage of ``rtcore`` or a module at its top; every unit has a layer, and
an import may point to its own layer or one below.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path


SRC = Path(__file__).resolve().parent.parent / "src" / "rtcore"
MAX_LINES = 800
GENERATED = {"protocol/client_pb2.py", "protocol/client_pb2.pyi"}

# unit -> layer; higher may import lower
LAYERS: dict[str, int] = {
    # the compiled cores with their twins and facades, and what they share
    "_version": 0,
    "_impl": 0,
    "errors": 0,
    "_frames": 0,
    "_frames_py": 0,
    "_frames_mask": 0,  # .pxi parts of _frames.pyx
    "_frames_utf8": 0,
    "frames": 0,
    "_fanout": 0,
    "_fanout_prefetch": 0,  # .pxi part of _fanout.pyx
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
LAYER_NAMES = {
    0: "compiled cores",
    1: "wire (sans-I/O)",
    2: "protocol · auth · config",
    3: "engine",
    4: "backends · transports",
    5: "server edge",
    6: "public API",
}
# units of one layer that must stay independent of each other
SIBLINGS = {frozenset({"backends", "transports"}), frozenset({"protocol", "auth"})}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module) of every rtcore import in a .py, .pyx, .pxd or .pxi file.

    Imports under ``TYPE_CHECKING`` and inside functions count: they are
    dependencies all the same.
    """
    text = path.read_text()
    found: list[tuple[int, str]] = []
    if path.suffix in (".pyx", ".pxd", ".pxi"):
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r"\s*(?:from|c?import)\s+(rtcore[\w.]*)", line)
            if m:
                found.append((n, m.group(1)))
        return found
    me = module_name(path, src)
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
            if mod == "rtcore":
                found += [(node.lineno, f"rtcore.{a.name}") for a in node.names]
            elif mod.startswith("rtcore."):
                found.append((node.lineno, mod))
    return found


def sources(src: Path = SRC) -> list[Path]:
    return sorted(
        p
        for p in src.rglob("*")
        if p.suffix in (".py", ".pyx", ".pxd", ".pxi")
        and str(p.relative_to(src)) not in GENERATED
        and "__pycache__" not in p.parts
    )


def edges(src: Path = SRC) -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, where) for every import between two units."""
    found = []
    for path in sources(src):
        a = unit_of(module_name(path, src))
        for line, mod in imports_of(path, src):
            b = unit_of(mod)
            if b != a and mod != "rtcore._version":
                found.append((a, b, f"{path.relative_to(src)}:{line} {mod}"))
    return found


def subpackage_of(module: str, src: Path = SRC) -> str | None:
    """The subpackage one level inside a unit (``server.api``), or None for other modules."""
    parts = module.split(".")
    if len(parts) >= 3 and (src / parts[1] / parts[2]).is_dir():
        return ".".join(parts[1:3])
    return None


def subpackage_edges(src: Path = SRC) -> list[tuple[str, str, str]]:
    """(importer, imported, where) between sibling subpackages (``server.admin`` -> ``server.api``).

    Modules inside one package may refer to each other (types, mostly); whole
    subpackages may not, or neither could be understood or moved alone.
    """
    found = []
    for path in sources(src):
        a = subpackage_of(module_name(path, src), src)
        for line, mod in imports_of(path, src):
            b = subpackage_of(mod, src)
            if a and b and b != a:
                found.append((a, b, f"{path.relative_to(src)}:{line} {mod}"))
    return found
