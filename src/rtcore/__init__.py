"""rtcore: a real-time messaging server and engine for Python.

Speaks the Centrifuge client protocol v2 over WebSocket; hot paths (framing,
fan-out) are compiled with Cython and have pure-Python twins.
"""

from ._version import __version__


__all__ = ["__version__"]
