"""Backends: what plugs into the engine's seams from outside the process.

The seams are :class:`~rtcore.engine.broker.Broker`,
:class:`~rtcore.engine.history.HistoryStore` and
:class:`~rtcore.engine.presence.PresenceManager` (the engine ships the
in-memory implementation, :mod:`rtcore.engine.memory`, as its embedded
default), and the node's hooks, which :mod:`rtcore.backends.proxy` forwards to
the application backend over HTTP.

* :mod:`rtcore.backends.redis`: Redis (standalone, sharded, Cluster);
* :mod:`rtcore.backends.nats`: a NATS broker for channels without history;
* :mod:`rtcore.backends.proxy`: connect/subscribe/publish/rpc/refresh proxies.

Each is imported from its own module, never from here, so importing
:mod:`rtcore.backends` needs nothing extra.
"""
