"""``rtcore`` itself is the documented way in: every public name resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rtcore


@pytest.mark.parametrize("name", rtcore.__all__)
def test_public_name_resolves(name: str) -> None:
    assert getattr(rtcore, name) is not None


def test_all_matches_the_lazy_table() -> None:
    assert set(rtcore.__all__) == {"__version__", *rtcore._EXPORTS}
    assert sorted(dir(rtcore)) == sorted(rtcore.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rtcore.Nope  # noqa: B018


def test_import_rtcore_is_cheap() -> None:
    # The public names load on first use: `import rtcore` pulls in no event loop.
    code = "import sys, rtcore; print(sorted(m for m in ('asyncio', 'uvloop') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_is_the_edge_entry_point() -> None:
    from rtcore.server.app import serve_node

    assert rtcore.serve is serve_node
    assert not hasattr(rtcore.Node, "serve"), "serving a node is the edge's job"
