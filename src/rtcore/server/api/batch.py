"""Several commands in one request: ``POST /api/batch`` and the legacy ``POST /api``."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from rtcore.errors import HttpError
from rtcore.server.api.errors import ERROR_NOT_FOUND, ApiError, bad_request, reply_of
from rtcore.server.api.methods import Executor
from rtcore.server.api.rawjson import dump, iter_json, parse_json
from rtcore.server.api.schema import (
    BATCH_SPEC,
    FIELDS,
    LEGACY_SPEC,
    RAW_SPECS,
    kind_of,
    request_params,
)


__all__ = ["run_batch", "run_legacy"]

# Legacy ``POST /api``: Centrifugo's numeric method ids.
_LEGACY_IDS: Final = {
    0: "publish",
    1: "broadcast",
    2: "unsubscribe",
    3: "disconnect",
    4: "presence",
    5: "presence_stats",
    6: "history",
    7: "history_remove",
    8: "channels",
    9: "info",
    10: "rpc",
    11: "subscribe",
    12: "refresh",
}


async def run_batch(executor: Executor, text: str) -> dict[str, Any]:
    """``{"commands": [...], "parallel": bool}``: ``{"replies": [...]}``, one per command.

    Raises:
        HttpError: 400 for a malformed batch (then no command runs).
    """
    value = parse_json(text, BATCH_SPEC) if text.strip() else {}
    if type(value) is not dict:
        raise HttpError(400, f"expected a JSON object, got {kind_of(value)}")
    for key in value:
        if key not in ("commands", "parallel"):
            raise HttpError(400, f"{key}: unknown field (known: commands, parallel)")
    commands = value.get("commands")
    if commands is None:
        commands = []
    parallel = value.get("parallel")
    if parallel is not None and type(parallel) is not bool:
        raise HttpError(400, f"parallel: expected true or false, got {kind_of(parallel)}")
    if type(commands) is not list:
        raise HttpError(400, f"commands: expected an array, got {kind_of(commands)}")
    # Validate every command before running any: a malformed batch runs nothing.
    jobs: list[tuple[str, dict[str, Any]] | ApiError] = []
    for n, command in enumerate(commands):
        where = f"commands[{n}]"
        if command is None:
            jobs.append(bad_request("null command"))
            continue
        if type(command) is not dict:
            raise HttpError(400, f"{where}: expected an object, got {kind_of(command)}")
        known = [k for k in command if k in FIELDS and command[k] is not None]
        if not known:
            jobs.append(ERROR_NOT_FOUND)
        elif len(known) > 1:
            jobs.append(bad_request(f"one method per command, got {', '.join(known)}"))
        else:
            method = known[0]
            jobs.append((method, request_params(method, command[method], f"{where}.{method}")))

    async def run(job: tuple[str, dict[str, Any]] | ApiError) -> dict[str, Any]:
        if isinstance(job, ApiError):
            return {"error": job.to_json()}
        method, params = job
        # reply_of(method, ...) inline: one coroutine fewer per command.
        try:
            return {method: await executor.call(method, params)}
        except ApiError as exc:
            return {"error": exc.to_json()}

    if parallel:
        replies = list(await asyncio.gather(*(run(job) for job in jobs)))
    else:
        replies = [await run(job) for job in jobs]
    return {"replies": replies}


async def run_legacy(executor: Executor, text: str) -> bytes:
    """Commands ``{"id", "method", "params"}`` separated by whitespace: one reply line each.

    Raises:
        HttpError: 400 for an empty body, a command that is not an object, a bad
            ``id`` or ``method`` (a bad ``params`` is that command's error 107).
    """
    if not text.strip():
        raise HttpError(400, "empty request body")
    lines: list[bytes] = []
    for n, command in enumerate(iter_json(text, LEGACY_SPEC)):
        if type(command) is not dict:
            raise HttpError(400, f"command {n}: expected an object, got {kind_of(command)}")
        reply: dict[str, Any] = {}
        cid = command.get("id")
        if cid is not None:
            if type(cid) is not int or not 0 <= cid < (1 << 32):
                raise HttpError(400, f"command {n}: id must be an unsigned 32-bit integer")
            if cid:
                reply["id"] = cid
        method = _legacy_method(command.get("method"), n)
        reply |= await reply_of("result", _legacy_call(executor, method, command.get("params")))
        lines.append(dump(reply))
    return b"\n".join(lines)


async def _legacy_call(
    executor: Executor, method: str | None, params: bytes | None
) -> dict[str, Any]:
    if method is None:
        raise ERROR_NOT_FOUND
    try:
        value = parse_json(params.decode("utf-8"), RAW_SPECS[method]) if params else {}
        p = request_params(method, value, "params")
    except HttpError as exc:
        raise bad_request(exc.message) from None
    return await executor.call(method, p)


def _legacy_method(value: Any, n: int) -> str | None:
    if value is None:
        return "publish"  # Centrifugo's enum value 0
    if type(value) is int:
        return _LEGACY_IDS.get(value)
    if type(value) is str:
        name = value.lower()
        return name if name in FIELDS else None
    raise HttpError(
        400, f"command {n}: method must be a string or an integer, got {kind_of(value)}"
    )
