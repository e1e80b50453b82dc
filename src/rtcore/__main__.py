"""``python -m rtcore``: the ``rtcore`` command (see :mod:`rtcore.server.cli`)."""

from rtcore.server.cli import main


raise SystemExit(main())
