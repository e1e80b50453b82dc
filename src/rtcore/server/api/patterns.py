"""Channel patterns of the ``channels`` method: Centrifugo's gobwas/glob syntax."""

from __future__ import annotations

import re


__all__ = ["glob_to_regex"]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: ``*``, ``?``, ``[abc]``, ``[!a-z]``, ``{a,b}`` and ``\\`` escapes.

    Raises:
        ValueError: an unclosed ``[`` or ``{``, or a trailing backslash.
    """
    out: list[str] = []
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                raise ValueError(f"unclosed '[' at {i}")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            if not body:
                raise ValueError(f"empty character class at {i}")
            out.append(
                "[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("^", "\\^") + "]"
            )
            i = end + 1
            continue
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError("unclosed '{'")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise ValueError(str(exc)) from None
