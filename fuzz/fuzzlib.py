"""Shared pieces of the fuzz harnesses (see docs/fuzzing.md).

Every harness in this folder is a script with one ``TestOneInput(data)``
function. Run as a script, it fuzzes with atheris (coverage-guided, libFuzzer
flags such as ``-atheris_runs=N`` or ``-max_total_time=S`` pass through);
imported, it is a plain function that ``tests/test_fuzz_smoke.py`` calls with
inputs from hypothesis. ``TestOneInput`` raises only on a real failure: an
exception the parser does not document, a broken invariant, or the two frame
parsers disagreeing.

This module must not import rtcore: a harness imports rtcore inside
:func:`instrumented` so that atheris can instrument it for coverage.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


__all__ = ["Input", "instrumented", "main"]

FUZZ_DIR = Path(__file__).resolve().parent


class Input:
    """Reads structured values off the front of a fuzz input, never failing.

    Past the end every read returns zeros/empty values, so any byte string is
    a valid input and small mutations change few decisions.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def uint(self, nbytes: int) -> int:
        value = 0
        for _ in range(nbytes):
            value = (value << 8) | self.byte()
        return value

    def pick(self, options: Sequence[object]) -> object:
        return options[self.byte() % len(options)]

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def sized(self) -> bytes:
        """A length byte, then that many bytes."""
        return self.take(self.byte())

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def split(self, data: bytes) -> list[bytes]:
        """``data`` cut into pieces at points read from the input (at most 8 cuts)."""
        cuts = sorted({self.uint(2) % (len(data) + 1) for _ in range(self.byte() % 9)})
        pieces = []
        start = 0
        for cut in cuts:
            pieces.append(data[start:cut])
            start = cut
        pieces.append(data[start:])
        return pieces


@contextlib.contextmanager
def instrumented(enabled: bool) -> Iterator[None]:
    """Instrument the modules imported in the block for coverage when ``enabled``.

    Harnesses pass ``__name__ == "__main__"``: imported by the smoke test,
    nothing is instrumented and atheris need not be installed.
    """
    if not enabled:
        yield
        return
    import atheris

    with atheris.instrument_imports(include=["rtcore"]):
        yield


def main(test_one_input: Callable[[bytes], None], seeds: Sequence[bytes] = ()) -> None:
    """Fuzz ``test_one_input`` with atheris; ``seeds`` start the corpus.

    With no corpus directory on the command line, ``fuzz/corpus/<harness>/``
    is used (created and filled with the seeds), so coverage carries over
    from run to run. Crashing inputs go to ``fuzz/artifacts/``; an input
    running longer than 10 s counts as a hang unless ``-timeout=`` says
    otherwise. Both folders are ignored by git.
    """
    import atheris

    argv = list(sys.argv)
    # A hang is an input that takes more than 10 s (libFuzzer's default is 20 min).
    if not any(a.startswith("-timeout=") for a in argv[1:]):
        argv.append("-timeout=10")
    if not any(a.startswith("-artifact_prefix=") for a in argv[1:]):
        artifacts = FUZZ_DIR / "artifacts"
        artifacts.mkdir(exist_ok=True)
        argv.append(f"-artifact_prefix={artifacts}/{Path(argv[0]).stem}-")
    if not any(not a.startswith("-") for a in argv[1:]):
        name = Path(argv[0]).stem
        corpus = FUZZ_DIR / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(seeds):
            path = corpus / f"seed-{n:03d}"
            if not path.exists():
                path.write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def to_protobuf(value: object, message: object) -> None:
    """Fill the Protobuf ``message`` from a protocol dataclass (fields of the same names).

    Only set fields are written, so a value that came from one codec can be
    encoded for the other one and decoded again for comparison.
    """
    import dataclasses

    for field in dataclasses.fields(value):  # type: ignore[arg-type]
        item = getattr(value, field.name)
        if item is None:
            continue
        target = getattr(message, field.name)
        if dataclasses.is_dataclass(item):
            target.SetInParent()
            to_protobuf(item, target)
        elif isinstance(item, dict):
            for key, entry in item.items():
                if dataclasses.is_dataclass(entry):
                    to_protobuf(entry, target[key])
                    target[key].SetInParent()
                else:
                    target[key] = entry
        elif isinstance(item, list):
            for entry in item:
                if dataclasses.is_dataclass(entry):
                    to_protobuf(entry, target.add())
                else:
                    target.append(entry)
        elif item:
            setattr(message, field.name, item)
