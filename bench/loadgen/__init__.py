"""Load generator for sizing an rtcore deployment on one machine.

``python -m bench.loadgen SCENARIO ...`` (or ``python bench/loadgen SCENARIO ...``)
runs one scenario against a server on 127.0.0.1 / ::1, either one it starts
itself (``--spawn-server``) or one already running (``--url``):

* ``hold``: N idle subscribed connections over C channels, held for a while;
* ``storm``: every client drops at once, K publications per channel while
  they are away, then all reconnect at the same moment and recover;
* ``publish``: publish -> receive latency at a target rate of deliveries;
* ``plot`` / ``report``: PNG plots and tables from a results file.

Modules: ``proto`` (the client side of the Centrifuge protocol), ``client``
(one client process: its connections, as asyncio protocols on uvloop),
``server`` (spawning a server, the server API client, picking the target),
``fleet`` (the client processes seen from the orchestrator, /proc sampling,
progress bars), ``scenarios`` (hold, storm, publish), ``report`` (tables
and plots), ``cli`` (the command line). See bench/README.md.

The shared helpers of bench/ (``procstat``, ``histogram``, ``load_control``)
are plain modules, as for every script there: bench/ goes on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path


BENCH_DIR = str(Path(__file__).resolve().parent.parent)
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)
