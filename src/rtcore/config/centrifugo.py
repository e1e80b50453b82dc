"""Centrifugo v6 configuration files: their keys' rtcore names, and conversion.

The table itself is :mod:`rtcore.config.centrifugo_table` (:data:`KEY_MAP`).
The loader names the rtcore key when a file holds a Centrifugo key
(:func:`centrifugo_key_errors`), and ``rtcore config import`` converts a
Centrifugo file (:func:`import_centrifugo`), listing what has no equivalent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtcore.config.centrifugo_table import (
    CENTRIFUGO_MARK,
    KEY_MAP,
    NOT_IMPLEMENTED,
    KeyMapping,
    NoEquivalent,
    duration_text,
)
from rtcore.config.consumers import CONSUMER_TYPES
from rtcore.config.keys import generic_path, model_key


__all__ = [
    "CentrifugoImport",
    "centrifugo_key_errors",
    "describe",
    "import_centrifugo",
    "lookup",
]


def _prefixes(paths: Iterator[str]) -> frozenset[str]:
    out: set[str] = set()
    for path in paths:
        parts = re.findall(r"\.?[^.\[]+|\[\]", path)
        for n in range(1, len(parts)):
            out.add("".join(parts[:n]))
    return frozenset(out)


# The tables of the Centrifugo layout (every path that has keys under it).
_PREFIXES = _prefixes(iter(KEY_MAP))


def lookup(path: str) -> KeyMapping | None:
    """The mapping of a Centrifugo key (indexes allowed), or of a table covering it."""
    generic = generic_path(path)
    entry = KEY_MAP.get(generic)
    if entry is not None:
        return _effective(entry)
    while generic:
        cut = max(generic.rfind("."), generic.rfind("["))
        generic = generic[:cut] if cut > 0 else ""
        entry = KEY_MAP.get(generic)
        if entry is not None and entry.subtree:
            return _effective(entry)
    return None


def _effective(entry: KeyMapping) -> KeyMapping:
    """The entry as this version of the model reads it.

    A key the model does not have is reported as having no equivalent; a
    key listed without one that the model has gained under the same path
    (rtcore follows Centrifugo's names) is that key.
    """
    if entry.rtcore is not None and model_key(entry.rtcore) is None:
        return KeyMapping(entry.centrifugo, None, "no such key in this version of rtcore")
    if entry.rtcore is None and not entry.structural and not entry.subtree:
        if model_key(entry.centrifugo) is not None:
            return KeyMapping(entry.centrifugo, entry.centrifugo)
    return entry


def _fill(target: str, source: str) -> str:
    """``target`` with its ``[]`` replaced by the indexes of ``source``, in order."""
    indexes = iter(re.findall(r"\[([0-9]+)\]", source))
    return re.sub(r"\[\]", lambda _: f"[{next(indexes, '0')}]", target)


def _is_leaf(path: str) -> bool:
    generic = generic_path(path)
    if not generic:
        return False
    if generic not in _PREFIXES:
        return True
    entry = KEY_MAP.get(generic)
    # A table entry with keys of its own under it (http_server.tls) is walked into.
    return entry is not None and not entry.subtree


def _leaves(path: str, value: Any) -> Iterator[tuple[str, Any]]:
    """The keys under ``path`` that the table knows as keys (or does not know at all)."""
    if isinstance(value, Mapping) and not _is_leaf(path):
        for key, sub in value.items():
            yield from _leaves(f"{path}.{key}" if path else str(key), sub)
    elif (
        isinstance(value, list)
        and not _is_leaf(path)
        and all(isinstance(v, Mapping) for v in value)
    ):
        for index, item in enumerate(value):
            yield from _leaves(f"{path}[{index}]", item)
    else:
        yield path, value


def describe(entry: KeyMapping) -> str:
    """What a Centrifugo key becomes, in words."""
    if entry.rtcore is None:
        return f"a {CENTRIFUGO_MARK} key with no rtcore equivalent: {entry.note}"
    note = f" ({entry.note})" if entry.note else ""
    return f"{CENTRIFUGO_MARK}'s {entry.centrifugo} is {entry.rtcore} in rtcore{note}"


def centrifugo_key_errors(path: str, value: Any) -> list[tuple[str, str]] | None:
    """``(path, message)`` for each Centrifugo key under an unknown key, else None.

    None when ``path`` is not part of Centrifugo's layout either.
    """
    if generic_path(path) not in _PREFIXES and lookup(path) is None:
        return None
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for leaf, _ in _leaves(path, value):
        entry = lookup(leaf)
        if entry is None:
            out.append((leaf, "unknown key (neither an rtcore nor a Centrifugo v6 key)"))
            continue
        where = leaf if not entry.subtree else _fill(entry.centrifugo, leaf)
        if where in seen:
            continue
        seen.add(where)
        out.append((where, "unknown key: " + describe(entry)))
    return out


# -- rtcore config import -------------------------------------------------------------


@dataclass(slots=True)
class CentrifugoImport:
    """What :func:`import_centrifugo` made of a Centrifugo configuration.

    ``data`` is the rtcore configuration; ``dropped`` lists ``(path, why)``
    for every Centrifugo key (or table) without an equivalent; ``renamed``
    lists ``(centrifugo path, rtcore path)`` for the keys that moved.
    """

    data: dict[str, Any] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    node: Any = target
    parts = re.findall(r"[^.\[\]]+|\[[0-9]+\]", path)
    for part, nxt in zip(parts, parts[1:] + [None], strict=True):
        if nxt is None:
            break
        is_index = nxt.startswith("[")
        if part.startswith("["):
            index = int(part[1:-1])
            while len(node) <= index:
                node.append({})
            if not isinstance(node[index], dict | list):  # pragma: no cover - fresh lists
                node[index] = [] if is_index else {}
            node = node[index]
        else:
            child = node.get(part)
            if not isinstance(child, dict | list):
                child = node[part] = [] if is_index else {}
            node = child
    last = parts[-1]
    if last.startswith("["):
        index = int(last[1:-1])
        while len(node) <= index:
            node.append({})
        node[index] = value
    else:
        node[last] = value


def import_centrifugo(data: Mapping[str, Any]) -> CentrifugoImport:
    """Convert a parsed Centrifugo v6 configuration to rtcore's layout."""
    result = CentrifugoImport()
    structural: dict[str, Any] = {}
    seen: set[str] = set()
    for path, value in _leaves("", data):
        entry = lookup(path)
        if entry is None:
            result.dropped.append((path, "not a Centrifugo v6 key"))
            continue
        if entry.structural:
            structural[path if "[" in path else generic_path(path)] = value
            continue
        if entry.rtcore is None:
            where = _fill(entry.centrifugo, path) if entry.subtree else path
            if where not in seen:
                seen.add(where)
                result.dropped.append((where, entry.note))
            continue
        key = model_key(entry.rtcore)
        try:
            if entry.convert is not None:
                value = entry.convert(value)
            elif key is not None and key.duration and value is not None:
                value = duration_text(value)
        except NoEquivalent as exc:
            result.dropped.append((path, str(exc)))
            continue
        target = _fill(entry.rtcore, path)
        _set(result.data, target, copy.deepcopy(value))
        if generic_path(target) != generic_path(path):
            result.renamed.append((path, target))
    _post_process(result, structural)
    return result


def _post_process(result: CentrifugoImport, values: dict[str, Any]) -> None:
    out = result.data
    # Redis addresses: host:port becomes a URL carrying user, password and database.
    if "engine.redis.address" in values or any(k.startswith("engine.redis.") for k in values):
        addresses = values.get("engine.redis.address", "redis://127.0.0.1:6379")
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        user = values.get("engine.redis.user") or ""
        password = values.get("engine.redis.password") or ""
        db = values.get("engine.redis.db") or 0
        urls = []
        for address in addresses if isinstance(addresses, list) else []:
            address = str(address)
            if "://" not in address:
                auth = f"{user}:{password}@" if (user or password) else ""
                address = f"redis://{auth}{address}" + (f"/{db}" if db else "")
            urls.append(address)
        if urls:
            out.setdefault("engine", {})["redis_address"] = urls
            result.renamed.append(("engine.redis.address", "engine.redis_address"))
    # channel.history_meta_ttl: per namespace in rtcore.
    if "channel.history_meta_ttl" in values:
        try:
            ttl = duration_text(values["channel.history_meta_ttl"])
        except NoEquivalent as exc:
            result.dropped.append(("channel.history_meta_ttl", str(exc)))
        else:
            channel = out.setdefault("channel", {})
            scopes = [channel.setdefault("without_namespace", {})]
            scopes += [ns for ns in channel.get("namespaces", []) if isinstance(ns, dict)]
            for scope in scopes:
                scope.setdefault("history_meta_ttl", ttl)
            result.renamed.append(
                ("channel.history_meta_ttl", "channel.*.history_meta_ttl (every namespace)")
            )
    # A separate subscription token section only when it is enabled.
    client = out.get("client")
    if isinstance(client, dict) and "subscription_token" in client:
        if values.get("client.subscription_token.enabled") is not True:
            del client["subscription_token"]
            result.dropped.append(
                ("client.subscription_token", "left out: its enabled is not true")
            )
    # A broker of its own only for NATS; memory and redis brokers are the engine's.
    if values.get("broker.enabled") is True:
        kind = values.get("broker.type", "memory")
        if kind == "nats":
            out.setdefault("broker", {})["type"] = "nats"
        elif kind not in ("memory", "redis"):
            result.dropped.append(("broker.type", f"a {kind} broker is {NOT_IMPLEMENTED}"))
    # Consumers of a type rtcore implements.
    consumers = out.get("consumers")
    if isinstance(consumers, list):
        kept = []
        for index, consumer in enumerate(consumers):
            kind = values.get(f"consumers[{index}].type")
            if kind in CONSUMER_TYPES:
                consumer["type"] = kind
                kept.append(consumer)
            else:
                why = f"type {kind!r}: {NOT_IMPLEMENTED}" if kind else "it has no type"
                result.dropped.append((f"consumers[{index}]", f"left out: {why}"))
        out["consumers"] = kept
    # TLS files only when TLS is enabled.
    http = out.get("http")
    if isinstance(http, dict) and ("tls_cert" in http or "tls_key" in http):
        why = ""
        if values.get("http_server.tls.enabled") is not True:
            why = "left out: its enabled is not true"
        elif "tls_cert" not in http or "tls_key" not in http:
            why = "left out: rtcore needs both cert_pem and key_pem as file paths"
        if why:
            http.pop("tls_cert", None)
            http.pop("tls_key", None)
            result.dropped.append(("http_server.tls", why))
