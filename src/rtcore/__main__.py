"""``python -m rtcore``: the ``rtcore`` command (see :mod:`rtcore.cli`)."""

from .cli import main


raise SystemExit(main())
