"""Source checks run as ordinary tests: lint, layering, exports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "rtcore"

# The sans-I/O core: fed bytes or values, never imports an event loop.
SANS_IO = [
    "rtcore._frames_py",
    "rtcore.frames",
    "rtcore.wire.websocket",
    "rtcore.wire.http",
    "rtcore.wire.http_response",
    "rtcore.wire.handshake",
    "rtcore.wire.deflate",
    "rtcore.protocol",
    "rtcore.config",
    "rtcore.engine.channels",
    "rtcore.protocol.codes",
]


def test_ruff_is_clean() -> None:
    ruff = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "src",
            "tests",
            "bench",
            "tools",
            "examples",
            "fuzz",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout[-6000:] + ruff.stderr[-2000:]


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_core_imports_no_asyncio(module: str) -> None:
    code = (
        f"import sys; import importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in ('asyncio', 'uvloop') if m in sys.modules); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


@pytest.mark.parametrize("module", ["rtcore.frames", "rtcore.fanout"])
def test_facades_export_what_they_declare(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} missing"
    assert mod.IMPLEMENTATION in ("cython", "python")


@pytest.mark.timeout(600)
def test_mypy_strict_is_clean() -> None:
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert mypy.returncode == 0, mypy.stdout[-6000:] + mypy.stderr[-2000:]
