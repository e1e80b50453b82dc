"""Fossil deltas: the ``delta: "fossil"`` compression of publications (PROTOCOL.md §4.5).

A delta turns a *source* (the previous publication's data) into a *target*
(the new data). Its format is the one of the Fossil SCM, which the SDKs
decode (centrifuge-js and centrifuge-python ship an ``applyDelta``):

* the target's length as a base-64 integer, then ``\\n``;
* commands: ``<n>@<offset>,`` copies ``n`` bytes of the source from
  ``offset``; ``<n>:`` followed by ``n`` bytes inserts them literally;
* ``<checksum>;`` ends the delta: the sum, modulo 2**32, of the target read
  as big-endian 32-bit words (a short last word padded with zero bytes).

Integers are written most significant digit first with the digits
``0-9 A-Z _ a-z ~``.

:func:`create_delta` finds the copies by indexing the source's aligned
:data:`BLOCK`-byte blocks and looking each target position up in that
index; a hit is extended both ways with slice comparisons (done in C), so a
target that differs from its source in a few places costs a few Python loop
turns per difference, not one per byte. When the target is valid UTF-8 the
copies start and end on character boundaries of the target, so the literal
parts, and with them the whole delta, are valid UTF-8 too: on JSON
connections the delta travels inside a JSON string, which only holds text.

:func:`apply_delta` is the decoder (the SDKs' ``applyDelta``), used by tests
and available to Python clients.
"""

from __future__ import annotations

import struct
from typing import Final


__all__ = ["BLOCK", "DeltaError", "apply_delta", "checksum", "create_delta"]

#: Length of the source blocks that seed a copy: a common run of at least
#: ``2 * BLOCK - 1`` bytes is always found.
BLOCK: Final = 16

_DIGITS: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUES: Final = {c: i for i, c in enumerate(_DIGITS)}


class DeltaError(ValueError):
    """A delta that does not apply to the given source (malformed or for another source)."""


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value:
        out.append(_DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    """The 32-bit checksum that ends a delta (see the module docstring)."""
    n = len(data)
    whole = n & ~3
    total = sum(struct.unpack(f">{whole // 4}I", data[:whole])) if whole else 0
    if whole != n:
        total += int.from_bytes(data[whole:] + b"\0" * (4 - (n - whole)), "big")
    return total & 0xFFFF_FFFF


def _common_forward(a: bytes, ai: int, b: bytes, bi: int) -> int:
    """Length of the common run of ``a[ai:]`` and ``b[bi:]``."""
    limit = min(len(a) - ai, len(b) - bi)
    n = 0
    step = 64
    while n < limit:
        k = min(step, limit - n)
        if a[ai + n : ai + n + k] == b[bi + n : bi + n + k]:
            n += k
            step <<= 1
            continue
        if k == 1:
            break
        step = k >> 1  # the mismatch is inside these k bytes: narrow down
    return n


def _common_backward(a: bytes, ai: int, b: bytes, bi: int, limit: int) -> int:
    """Length (at most ``limit``) of the common run ending before ``a[ai]`` and ``b[bi]``."""
    n = 0
    step = 16
    while n < limit:
        k = min(step, limit - n)
        if a[ai - n - k : ai - n] == b[bi - n - k : bi - n]:
            n += k
            step <<= 1
            continue
        if k == 1:
            break
        step = k >> 1
    return n


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _digits(value: int) -> int:
    """Length of ``_int(value)``."""
    return (value.bit_length() + 5) // 6 or 1


def create_delta(source: bytes, target: bytes) -> bytes:
    """A fossil delta that turns ``source`` into ``target``.

    Valid UTF-8 when ``target`` is. Applying it to ``source`` with
    :func:`apply_delta` (or an SDK's ``applyDelta``) returns ``target``.
    """
    source = bytes(source)
    target = bytes(target)
    n = len(target)
    out = [_int(n), b"\n"]
    literal_from = 0
    if source and n > BLOCK:
        text = _is_utf8(target)
        # Aligned source blocks by value; the first of equal blocks wins.
        index = {
            source[p : p + BLOCK]: p
            for p in range((len(source) - BLOCK) // BLOCK * BLOCK, -1, -BLOCK)
        }
        get = index.get
        i = 0
        last = n - BLOCK
        while i <= last:
            p = get(target[i : i + BLOCK])
            if p is None:
                i += 1
                continue
            back_limit = i - literal_from
            if p < back_limit:
                back_limit = p
            back = _common_backward(source, p, target, i, back_limit) if back_limit else 0
            length = back + BLOCK + _common_forward(source, p + BLOCK, target, i + BLOCK)
            start_t = i - back
            start_s = p - back
            if text:
                # Copies start and end on character boundaries of the target
                # (continuation bytes are 0b10xxxxxx), so literals stay UTF-8.
                while length and start_t < n and target[start_t] & 0xC0 == 0x80:
                    start_t += 1
                    start_s += 1
                    length -= 1
                end = start_t + length
                while end > start_t and end < n and target[end] & 0xC0 == 0x80:
                    end -= 1
                length = end - start_t
            if length <= _digits(length) + _digits(start_s) + 2:
                i += 1  # a copy would not be shorter than the bytes themselves
                continue
            if start_t > literal_from:
                out += (_int(start_t - literal_from), b":", target[literal_from:start_t])
            out += (_int(length), b"@", _int(start_s), b",")
            literal_from = i = start_t + length
    if literal_from < n:
        out += (_int(n - literal_from), b":", target[literal_from:])
    out += (_int(checksum(target)), b";")
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def number(self) -> int:
        data = self.data
        value = 0
        pos = self.pos
        while pos < len(data):
            digit = _VALUES.get(data[pos])
            if digit is None:
                break
            value = (value << 6) + digit
            pos += 1
        self.pos = pos
        return value

    def char(self) -> int:
        if self.pos >= len(self.data):
            raise DeltaError("unterminated delta")
        c = self.data[self.pos]
        self.pos += 1
        return c


def apply_delta(source: bytes, delta: bytes) -> bytes:
    """Apply a fossil ``delta`` to ``source`` and return the target.

    Raises:
        DeltaError: the delta is malformed, does not fit ``source``, or its
            length or checksum do not match what it produced.
    """
    source = bytes(source)
    delta = bytes(delta)
    r = _Reader(delta)
    size = r.number()
    if r.char() != 0x0A:
        raise DeltaError("size integer not terminated by '\\n'")
    out = bytearray()
    while r.pos < len(delta):
        count = r.number()
        op = r.char()
        if op == 0x40:  # '@'
            offset = r.number()
            if r.pos < len(delta) and r.char() != 0x2C:
                raise DeltaError("copy command not terminated by ','")
            if len(out) + count > size:
                raise DeltaError("copy exceeds output file size")
            if offset + count > len(source):
                raise DeltaError("copy extends past end of input")
            out += source[offset : offset + count]
        elif op == 0x3A:  # ':'
            if len(out) + count > size:
                raise DeltaError("insert command gives an output larger than predicted")
            if r.pos + count > len(delta):
                raise DeltaError("insert count exceeds size of delta")
            out += delta[r.pos : r.pos + count]
            r.pos += count
        elif op == 0x3B:  # ';'
            result = bytes(out)
            if count != checksum(result):
                raise DeltaError("bad checksum")
            if len(result) != size:
                raise DeltaError("generated size does not match predicted size")
            return result
        else:
            raise DeltaError(f"unknown delta operator {chr(op)!r}")
    raise DeltaError("unterminated delta")
