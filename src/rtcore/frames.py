"""Facade over the RFC 6455 framing core.

Picks the compiled module ``rtcore._frames`` when it is importable and
``RTCORE_NO_EXTENSIONS`` is not set, else the pure-Python twin
``rtcore._frames_py``. Both expose the same API (see ``_frames_py`` for the
contract). ``IMPLEMENTATION`` says which one is live: ``"cython"`` or
``"python"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtcore import _impl


__all__ = [
    "IMPLEMENTATION",
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_NO_STATUS",
    "CLOSE_ABNORMAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_MANDATORY_EXTENSION",
    "CLOSE_INTERNAL_ERROR",
    "Decompressor",
    "FrameParser",
    "apply_mask",
    "mask_inplace",
    "encode_frame",
    "frame_header",
    "encode_close",
    "parse_close",
    "is_valid_close_code",
    "validate_utf8",
]

if TYPE_CHECKING:
    from rtcore._frames_py import *  # noqa: F403

    IMPLEMENTATION: str
else:
    _mod, IMPLEMENTATION = _impl.select("frames")
    globals().update({name: getattr(_mod, name) for name in __all__ if name != "IMPLEMENTATION"})
