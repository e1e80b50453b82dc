"""The admin web UI (``admin.enabled``, off by default; docs/admin.md).

A single-page app without dependencies (``static/``: HTML, CSS and plain
JavaScript, shipped in the wheel) and the endpoints it talks to
(:mod:`~rtcore.server.admin.endpoints`): sign-in with ``admin.password``,
tokens signed with ``admin.secret`` (:mod:`~rtcore.server.admin.auth`), and
the server API methods run on the admin's behalf.

It is served on the internal port when ``api.port`` is set, else on the
public port, at ``/`` (under ``admin.handler_prefix`` when one is set);
``admin.external`` puts it on the public port even with an internal one.
"""

from __future__ import annotations

from typing import Any

from rtcore.server.admin.auth import AdminAuth, SignInLimiter
from rtcore.server.admin.endpoints import ADMIN_METHODS, AdminEndpoints


__all__ = ["ADMIN_METHODS", "AdminAuth", "AdminEndpoints", "SignInLimiter", "mount_admin"]


def mount_admin(app: Any, *, internal: bool) -> AdminEndpoints | None:
    """Mount the admin UI on ``app`` when the configuration puts it there.

    ``app`` is a :class:`~rtcore.server.app.NodeApp` (``internal=False``) or an
    :class:`~rtcore.server.internal.InternalApp` (``internal=True``). Returns the
    endpoints, or None when the UI belongs elsewhere or is off.
    """
    config = app.node.config
    admin = config.admin
    if not admin.enabled:
        return None
    on_internal_port = bool(config.api.port) and not admin.external
    if on_internal_port != internal:
        return None
    endpoints = AdminEndpoints(app.node)
    endpoints.mount(app)
    return endpoints
