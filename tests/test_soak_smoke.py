"""The soak (bench/soak.py) for 60 seconds: nothing lost, nothing left behind.

Mixed load on ``rtcore serve`` with the Redis engine (a redis-server of the
run's own, restarted once): recovering subscribers, churn, history reads,
server API publishes and slow clients. The verdicts are counts, never times:
every accepted publication reached every recovering subscriber exactly once,
every slow client was dropped (3008 slow, or 3012 when its pong timeout
came first), and once idle again the server holds no more asyncio tasks or
open files than before the load (the Redis client's pool, which grows on
demand up to its bound, aside).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_soak_for_a_minute(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--duration", "60",
            "--subscribers", "20",
            "--channels", "4",
            "--publish-rate", "20",
            "--churn-rate", "5",
            "--history-rate", "5",
            "--slow-every", "15",
            "--slow-hold", "30",
            "--redis-restarts", "1",
            "--sample-every", "5",
            "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["server_alive"]
    assert result["redis_restarts"] == 1
    # Recovering subscribers: every accepted publication after their first
    # subscribe, exactly once, across reconnects and the Redis restart.
    assert result["publications_accepted"] > 0
    assert result["subscribers_never_subscribed"] == 0
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    # Slow clients were dropped (3008; 3012 when the pong timeout came first).
    slow = result["counters"].get("slow_clients", 0)
    assert slow >= 1
    assert result["counters"].get("slow_dropped", 0) == slow
    assert result["slow_disconnects_3008"] + result["no_pong_disconnects_3012"] >= slow
    # The churn really ran.
    assert result["counters"].get("churn_ok", 0) > 0
    assert result["counters"].get("history_ok", 0) > 0

    before, after = result["idle_before"], result["idle_after"]
    assert after["clients"] == 0
    assert after["asyncio_tasks"] <= before["asyncio_tasks"] + 2, (before, after)
    assert after["open_files_without_redis"] <= before["open_files_without_redis"] + 2, (
        before,
        after,
    )
    assert after["redis_connections"] <= 34
    assert after["timers"] <= before["timers"]
