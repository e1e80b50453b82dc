"""Build script: compiles the Cython hot paths (see docs/dev.md).

Environment switches (read at build time):

* ``RTCORE_NO_EXTENSIONS=1``   build nothing; the package runs on its pure-Python twins.
* ``RTCORE_REQUIRE_EXTENSIONS=1``  a failed compile is an error (CI uses this).
* ``RTCORE_DEBUG=1``           keep bounds/wraparound checks on, add ``-O0 -g``.
* ``RTCORE_CYTHON_TRACE=1``    line tracing for coverage of the compiled modules.

Without ``RTCORE_REQUIRE_EXTENSIONS`` a missing C compiler (or Cython) only prints a
warning: the install still succeeds and every facade falls back to its twin.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


NO_EXTENSIONS = _flag("RTCORE_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = _flag("RTCORE_REQUIRE_EXTENSIONS")
DEBUG = _flag("RTCORE_DEBUG")
TRACE = _flag("RTCORE_CYTHON_TRACE")

MODULES = ["_frames", "_fanout"]


class OptionalBuildExt(build_ext):
    """build_ext that degrades to the pure-Python twins unless told not to."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            self._fail(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if REQUIRE_EXTENSIONS:
            raise exc
        # Loud on purpose: the twins work, but fan-out and framing cost several
        # times more CPU, which an operator must not discover in production.
        bar = "!" * 78
        sys.stderr.write(
            f"\n{bar}\n"
            f"WARNING: rtcore's compiled modules were NOT built ({exc!r}).\n"
            "rtcore will run on its pure-Python twins: correct, but several times slower\n"
            "at framing and fan-out. Install a C compiler and Python headers (Debian:\n"
            "apt-get install build-essential python3-dev) and reinstall, or set\n"
            "RTCORE_REQUIRE_EXTENSIONS=1 to make this an error.\n"
            f"{bar}\n\n"
        )


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    sources = {m: os.path.join("src", "rtcore", m + ".pyx") for m in MODULES}
    present = [m for m, path in sources.items() if os.path.exists(path)]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        sys.stderr.write("WARNING: Cython is not installed; building without extensions.\n")
        return []
    cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
    # Release builds ship stripped modules (no symbol tables: a fraction of the size).
    ldflags = [] if DEBUG or TRACE else ["-s"]
    macros = [("CYTHON_TRACE_NOGIL", "1")] if TRACE else []
    exts = [
        Extension(
            f"rtcore.{m}",
            [sources[m]],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
            define_macros=macros,
        )
        for m in present
    ]
    directives = {
        "language_level": "3",
        "embedsignature": True,
        "binding": True,
    }
    if TRACE:
        directives["linetrace"] = True
    if DEBUG:
        directives["boundscheck"] = True
        directives["wraparound"] = True
    if DEBUG:
        for ext in exts:
            ext.define_macros.append(("RTCORE_DEBUG", "1"))
    # Debug and trace builds change the generated C: always regenerate it.
    return cythonize(
        exts, compiler_directives=directives, annotate=DEBUG, quiet=True, force=DEBUG or TRACE
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
