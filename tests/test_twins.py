"""The twin rule for the frame and fan-out cores, and the canary for missing extensions.

``rtcore._frames`` (compiled) and ``rtcore._frames_py`` (pure Python) must
expose the same public names, call signatures, exception classes and
docstrings; the facade ``rtcore.frames`` must pick the right one. The C-level
seam declared in ``_frames.pxd`` (what ``_fanout.pyx`` cimports) is checked
through the module's C-API capsules. ``rtcore._fanout`` and
``rtcore._fanout_py`` must expose the same names, signatures and docstring
summaries, class by class and method by method.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import inspect
import os
import subprocess
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import pytest

import rtcore._fanout_py as fanout_twin
import rtcore._frames_py as twin
import rtcore.errors
import rtcore.fanout
import rtcore.frames


def _truthy(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


def extensions_required(env: Mapping[str, str]) -> bool:
    """CI and RTCORE_REQUIRE_EXTENSIONS demand the compiled modules, unless opted out."""
    if _truthy(env, "RTCORE_NO_EXTENSIONS"):
        return False
    return _truthy(env, "CI") or _truthy(env, "RTCORE_REQUIRE_EXTENSIONS")


try:
    compiled: ModuleType | None = importlib.import_module("rtcore._frames")
    IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    compiled = None
    IMPORT_ERROR = exc

needs_compiled = pytest.mark.skipif(compiled is None, reason="rtcore._frames is not built")


# -- canary ------------------------------------------------------------------------


def test_extensions_loaded() -> None:
    """Fails when the compiled frame core should be there but cannot be imported."""
    if compiled is None:
        if extensions_required(os.environ):
            pytest.fail(f"rtcore._frames is required but cannot be imported: {IMPORT_ERROR!r}")
        pytest.skip("rtcore._frames is not built and not required")
    assert compiled.__file__ is not None
    assert compiled.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.parametrize(
    ("env", "required"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "false"}, False),
        ({"RTCORE_REQUIRE_EXTENSIONS": "1"}, True),
        ({"CI": "true", "RTCORE_NO_EXTENSIONS": "1"}, False),
        ({"RTCORE_REQUIRE_EXTENSIONS": "yes", "RTCORE_NO_EXTENSIONS": "1"}, False),
        ({"RTCORE_NO_EXTENSIONS": "0", "CI": "1"}, True),
    ],
)
def test_canary_switches(env: dict[str, str], required: bool) -> None:
    assert extensions_required(env) is required


# -- facade ---------------------------------------------------------------------------


def _facade_in_subprocess(**env_updates: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTCORE_")}
    env.update(env_updates)
    code = "import rtcore.frames as f; print(f.IMPLEMENTATION, f.FrameParser.__module__)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_facade_no_extensions() -> None:
    assert _facade_in_subprocess(RTCORE_NO_EXTENSIONS="1") == ["python", "rtcore._frames_py"]


def test_facade_default() -> None:
    expected = (
        ["cython", "rtcore._frames"] if compiled is not None else ["python", "rtcore._frames_py"]
    )
    assert _facade_in_subprocess() == expected


def test_facade_in_this_process() -> None:
    module = compiled if rtcore.frames.IMPLEMENTATION == "cython" else twin
    assert module is not None
    assert rtcore.frames.IMPLEMENTATION in ("cython", "python")
    for name in rtcore.frames.__all__:
        if name != "IMPLEMENTATION":
            assert getattr(rtcore.frames, name) is getattr(module, name), name


# -- the twin rule ------------------------------------------------------------------------


def _shape(obj: Any) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds and defaults (annotations live in the twin only)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def _public_members(cls: type) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_")}


@needs_compiled
def test_same_public_names() -> None:
    assert compiled.__all__ == twin.__all__
    assert compiled.__all__ == [n for n in rtcore.frames.__all__ if n != "IMPLEMENTATION"]
    for name in twin.__all__:
        assert hasattr(compiled, name), name


@needs_compiled
def test_same_constants() -> None:
    for name in twin.__all__:
        if name.startswith(("OP_", "CLOSE_")):
            value = getattr(compiled, name)
            assert type(value) is int and value == getattr(twin, name), name


@needs_compiled
def test_shared_classes() -> None:
    assert compiled.Decompressor is twin.Decompressor
    assert compiled.WebSocketProtocolError is rtcore.errors.WebSocketProtocolError
    assert twin.WebSocketProtocolError is rtcore.errors.WebSocketProtocolError


@needs_compiled
@pytest.mark.parametrize(
    "name",
    [n for n in twin.__all__ if inspect.isfunction(getattr(twin, n))],
)
def test_function_signatures(name: str) -> None:
    ours, reference = getattr(compiled, name), getattr(twin, name)
    assert _shape(ours) == _shape(reference)
    # The summary line of the docstring is shared as well.
    summary = inspect.getdoc(reference).splitlines()[0]
    assert summary in (ours.__doc__ or "")


@needs_compiled
def test_frame_parser_signature() -> None:
    assert _shape(compiled.FrameParser) == _shape(twin.FrameParser)
    shape = _shape(compiled.FrameParser)
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in shape)
    # The constructor really takes what the class signature advertises.
    for name, _, default in shape:
        compiled.FrameParser(**{name: default})


@needs_compiled
def test_frame_parser_members() -> None:
    ours = _public_members(compiled.FrameParser)
    reference = _public_members(twin.FrameParser)
    # The twin's public instance attributes are class-level descriptors here.
    attributes = {n for n in vars(twin.FrameParser()) if not n.startswith("_")}
    assert attributes == {"max_message_size", "is_server"}
    assert set(ours) == set(reference) | attributes
    for name, member in reference.items():
        if isinstance(member, property):
            assert inspect.isdatadescriptor(ours[name]), name
            assert ours[name].__doc__ == member.__doc__, name
        else:
            assert callable(ours[name]), name
            assert _shape(ours[name]) == _shape(member), name
            summary = inspect.getdoc(member).splitlines()[0]
            assert summary in (ours[name].__doc__ or ""), name


@needs_compiled
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_message_size": 5, "is_server": False},
        {"max_message_size": -3, "deflate": object()},
    ],
)
def test_frame_parser_instances(kwargs: dict[str, Any]) -> None:
    ours, reference = compiled.FrameParser(**kwargs), twin.FrameParser(**kwargs)
    public = {n for n in dir(reference) if not n.startswith("_")}
    assert {n for n in dir(ours) if not n.startswith("_")} == public
    for name in ("max_message_size", "is_server", "closed", "buffered", "error"):
        assert getattr(ours, name) == getattr(reference, name), name
    ours.max_message_size = 7
    ours.is_server = False
    assert (ours.max_message_size, ours.is_server) == (7, False)


# -- the C-level seam (_frames.pxd) --------------------------------------------------------

# What _fanout.pyx and other extension modules bind against; changing one of
# these is an ABI change for every module that cimports rtcore._frames.
CAPI = {
    "header_size": "Py_ssize_t (Py_ssize_t, int)",
    "write_header": "Py_ssize_t (unsigned char *, int, Py_ssize_t, int, int)",
    "mask_copy": "void (unsigned char *, unsigned char const *, Py_ssize_t, unsigned char const *)",
    "utf8_feed": "uint32_t (uint32_t, unsigned char const *, Py_ssize_t)",
    "build_frame": (
        "PyObject *(int, unsigned char const *, Py_ssize_t, int, int, unsigned char const *)"
    ),
}


def _capi(name: str, factory: Any, restype: Any, *argtypes: Any) -> Any:
    assert compiled is not None
    capsule = compiled.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return factory(restype, *argtypes)(get_pointer(capsule, get_name(capsule)))


@needs_compiled
def test_capi_signatures() -> None:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    exported = {name: get_name(capsule).decode() for name, capsule in compiled.__pyx_capi__.items()}
    assert exported == CAPI


@needs_compiled
@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 1 << 40, (1 << 63) - 1])
def test_capi_write_header(length: int) -> None:
    write_header = _capi(
        "write_header",
        ctypes.CFUNCTYPE,
        ctypes.c_ssize_t,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_ssize_t,
        ctypes.c_int,
        ctypes.c_int,
    )
    header_size = _capi(
        "header_size", ctypes.CFUNCTYPE, ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_int
    )
    for opcode, fin, rsv1 in [
        (1, True, False),
        (2, False, True),
        (0, False, False),
        (9, True, False),
    ]:
        out = ctypes.create_string_buffer(14)
        size = write_header(out, opcode, length, fin, rsv1)
        expected = twin.frame_header(opcode, length, fin, rsv1)
        assert out.raw[:size] == expected
        assert header_size(length, 0) == len(expected)
        assert header_size(length, 1) == len(expected) + 4


@needs_compiled
def test_capi_mask_copy_and_build_frame() -> None:
    mask_copy = _capi(
        "mask_copy",
        ctypes.CFUNCTYPE,
        None,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ssize_t,
        ctypes.c_char_p,
    )
    build_frame = _capi(
        "build_frame",
        ctypes.PYFUNCTYPE,
        ctypes.py_object,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_ssize_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_char_p,
    )
    key = b"\x01\x80\x7f\xff"
    for n in (0, 1, 7, 8, 9, 100, 70000):
        data = bytes(i % 253 for i in range(n))
        out = ctypes.create_string_buffer(max(n, 1))
        mask_copy(out, data, n, key)
        assert out.raw[:n] == twin.apply_mask(data, key)
        in_place = ctypes.create_string_buffer(data, max(n, 1))
        mask_copy(in_place, in_place, n, key)
        assert in_place.raw[:n] == twin.apply_mask(data, key)
        assert build_frame(2, data, n, 1, 0, None) == twin.encode_frame(2, data)
        assert build_frame(1, data, n, 0, 1, key) == twin.encode_frame(1, data, False, True, key)


@needs_compiled
def test_capi_utf8_feed() -> None:
    utf8_feed = _capi(
        "utf8_feed",
        ctypes.CFUNCTYPE,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_char_p,
        ctypes.c_ssize_t,
    )
    accept, reject = 0, 1
    text = "añ€𝄞".encode()
    assert utf8_feed(accept, text, len(text)) == accept
    state = accept
    for byte in text:
        state = utf8_feed(state, bytes((byte,)), 1)
        assert state != reject
    assert state == accept
    assert utf8_feed(accept, b"\xe2\x82", 2) not in (accept, reject)
    assert utf8_feed(accept, b"\xed\xa0\x80", 3) == reject
    assert utf8_feed(reject, b"a", 1) == reject


# -- the fan-out core ------------------------------------------------------------------------

try:
    fanout_compiled: ModuleType | None = importlib.import_module("rtcore._fanout")
except ImportError:  # pragma: no cover - depends on the build
    fanout_compiled = None

needs_fanout = pytest.mark.skipif(fanout_compiled is None, reason="rtcore._fanout is not built")
FANOUT_CLASSES = ["Writer", "Flusher", "Subscriber", "WebSocketSink"]


@needs_fanout
def test_fanout_same_public_names() -> None:
    assert fanout_compiled is not None
    assert fanout_compiled.__all__ == fanout_twin.__all__
    assert fanout_twin.__all__ == [n for n in rtcore.fanout.__all__ if n != "IMPLEMENTATION"]
    for name in fanout_twin.__all__:
        assert hasattr(fanout_compiled, name), name
    assert fanout_compiled.Sink is fanout_twin.Sink
    assert fanout_compiled.COPY_LIMIT == fanout_twin.COPY_LIMIT


@needs_fanout
@pytest.mark.parametrize("name", [*FANOUT_CLASSES, "broadcast"])
def test_fanout_signatures(name: str) -> None:
    ours, reference = getattr(fanout_compiled, name), getattr(fanout_twin, name)
    assert _shape(ours) == _shape(reference)
    summary = inspect.getdoc(reference).splitlines()[0]
    assert summary in (ours.__doc__ or "")


@needs_fanout
@pytest.mark.parametrize("name", FANOUT_CLASSES)
def test_fanout_members(name: str) -> None:
    """Every public method and property of the twin, with the same shape and summary."""
    ours = _public_members(getattr(fanout_compiled, name))
    for member, value in _public_members(getattr(fanout_twin, name)).items():
        assert member in ours, member
        if isinstance(value, property):
            assert inspect.isdatadescriptor(ours[member]), member
            if value.__doc__:
                assert ours[member].__doc__ == value.__doc__, member
        elif callable(value):
            assert callable(ours[member]), member
            assert _shape(ours[member]) == _shape(value), member
            doc = inspect.getdoc(value)
            if doc:
                assert doc.splitlines()[0] in (ours[member].__doc__ or ""), member
