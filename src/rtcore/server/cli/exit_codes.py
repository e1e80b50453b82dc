"""Exit codes of the ``rtcore`` command (docs/cli.md)."""

from __future__ import annotations


__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
#: Invalid configuration or a runtime failure (the message says which).
EXIT_ERROR = 1
#: Wrong command-line usage.
EXIT_USAGE = 2
#: A second SIGTERM/SIGINT during a graceful shutdown.
EXIT_INTERRUPTED = 130
