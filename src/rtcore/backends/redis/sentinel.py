"""Redis behind Sentinel: finding the current master, for commands and pub/sub.

With Sentinel there is one master (and its replicas) instead of shards. The
command connections come from redis-py's ``SentinelConnectionPool``: each new
connection asks the Sentinels where the master is, and a connection that
finds itself talking to a demoted master (a ``READONLY`` reply) is dropped.
The pub/sub connection asks the Sentinels too, on every (re)connect and
once per health-check interval, and moves when the master has moved.

Replication is asynchronous, so a failover can lose the last writes the old
master acknowledged. The history scripts therefore bind every stream's epoch
to the master's replication id (see :mod:`rtcore.backends.redis.scripts`): the
first access to a stream after a failover starts a new epoch, and clients get
``recovered: false`` instead of a stream whose tail was lost or, worse, whose
offsets were handed out again to other publications (docs/redis.md).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from rtcore.backends.redis.errors import RedisUnavailableError


__all__ = ["SentinelMaster", "SentinelSettings", "parse_sentinel_address"]


@dataclass(frozen=True, slots=True)
class SentinelSettings:
    """Where the Sentinels are and how to talk to them.

    Args:
        addresses: ``host:port`` or ``redis://host:port`` (``rediss://`` for TLS).
        master_name: the name under which the Sentinels monitor the master.
        username, password: the Sentinels' credentials (not the master's).
        tls: connect to the Sentinels over TLS.
        tls_ca_file: CA bundle for the Sentinels' certificates (None: the system's).
        tls_cert_file, tls_key_file: a client certificate.
        tls_insecure_skip_verify: accept any certificate (tests only).
    """

    addresses: tuple[str, ...]
    master_name: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_insecure_skip_verify: bool = False

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("at least one Sentinel address is required")
        if not self.master_name:
            raise ValueError("the Sentinel master name is required")
        for address in self.addresses:
            parse_sentinel_address(address)


def parse_sentinel_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port``, ``[v6]:port`` or ``redis://host:port``."""
    text = address.strip()
    for scheme in ("redis://", "rediss://"):
        if text.startswith(scheme):
            text = text[len(scheme) :].split("/", 1)[0].rsplit("@", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "26379"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid Sentinel address {address!r} (expected host:port)")
    return host, int(port)


class SentinelMaster:
    """The master of one Sentinel-monitored deployment.

    Args:
        settings: the Sentinels.
        socket_timeout, connect_timeout: for the Sentinel connections too.
    """

    def __init__(self, settings: SentinelSettings, socket_timeout: float, connect_timeout: float):
        self.settings = settings
        sentinel_options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
        }
        if settings.username:
            sentinel_options["username"] = settings.username
        if settings.password:
            sentinel_options["password"] = settings.password
        if settings.tls:
            sentinel_options["ssl"] = True
            sentinel_options["ssl_ca_certs"] = settings.tls_ca_file
            sentinel_options["ssl_certfile"] = settings.tls_cert_file
            sentinel_options["ssl_keyfile"] = settings.tls_key_file
            if settings.tls_insecure_skip_verify:
                sentinel_options["ssl_cert_reqs"] = ssl.CERT_NONE
                sentinel_options["ssl_check_hostname"] = False
        self._sentinel = Sentinel(
            [parse_sentinel_address(a) for a in settings.addresses],
            sentinel_kwargs=sentinel_options,
        )

    @property
    def name(self) -> str:
        return f"sentinel master {self.settings.master_name}"

    async def locate(self) -> tuple[str, int]:
        """The master's address as the Sentinels see it now.

        Raises:
            RedisUnavailableError: no Sentinel knows a healthy master (during a
                failover, or when no Sentinel can be reached).
        """
        try:
            host, port = await self._sentinel.discover_master(self.settings.master_name)
        except Exception as exc:
            raise RedisUnavailableError(f"Redis Sentinel: {exc}") from exc
        return str(host), int(port)

    def pool(self, master_options: dict[str, Any], max_connections: int) -> SentinelConnectionPool:
        """A pool of command connections to the current master.

        ``master_options`` are redis-py connection options (credentials,
        database, TLS, timeouts) taken from the engine's Redis URL.
        """
        return SentinelConnectionPool(  # type: ignore[no-untyped-call]
            self.settings.master_name,
            self._sentinel,
            max_connections=max_connections,
            **master_options,
        )

    async def close(self) -> None:
        await self._sentinel.aclose()
