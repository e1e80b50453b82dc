"""Smoke runs of the load generator (bench/loadgen), so that it keeps working.

Every scenario runs at a few hundred connections against a server the
generator spawns itself; the assertions are on correctness only (counts,
recovery verdicts, ordering), never on timings. The real runs and their
figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("rich", reason="the load generator needs the 'bench' extra (rich)")

# No progress bars, a short idle baseline.
FAST = ("--no-progress", "--idle", "0.2")


def loadgen(tmp_path: Path, *args: str, expect_rc: int = 0) -> dict[str, Any]:
    """Run ``python -m bench.loadgen ARGS`` and return its results file."""
    results = tmp_path / f"{args[0]}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args, *FAST, "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == expect_rc, output
    data: dict[str, Any] = json.loads(results.read_text())
    assert data["tool"] == "bench.loadgen"
    return data


@pytest.mark.timeout(180)
def test_hold_keeps_every_connection_and_answers_pings(tmp_path: Path) -> None:
    # A 1.5 s ping interval: every connection must answer pings to stay alive.
    data = loadgen(
        tmp_path,
        *("hold", "--spawn-server", "-n", "300", "-c", "3", "--hold", "2.5"),
        *("--ping-interval", "1.5", "--pong-timeout", "1.4", "--processes", "2"),
    )
    summary = data["summary"]
    assert data["ok"] is True, data["problems"]
    assert summary["ready"] == 300
    assert summary["failed"] == 0
    assert summary["still_ready"] == 300
    assert summary["lost"] == {}
    # Pongs were sent, and none was missing: an unanswered ping closes with 3012 (in "lost").
    assert summary["pings_answered"] > 0
    assert data["histograms"]["connect_us"]
    assert sum(data["histograms"]["connect_us"].values()) == 300
    assert [p["name"] for p in data["phases"]] == ["idle", "connect", "hold"]
    # The server's process tree was sampled.
    assert data["phases"][1]["server"]["processes"] >= 1
    assert summary["server_rss_mib"] > 0
    assert data["clients"]["sources"] == ["127.0.0.2", "127.0.0.3"]
    # The plots and tables of that results file.
    out = tmp_path / "plots"
    for sub in (
        ["plot", str(tmp_path / "hold.json"), "-o", str(out)],
        ["report", str(tmp_path / "hold.json")],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", *sub],
            capture_output=True,
            text=True,
            timeout=100,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == ["hold-latency.png", "hold-timeline.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.timeout(180)
def test_storm_recovers_every_client_in_order(tmp_path: Path) -> None:
    data = loadgen(
        tmp_path,
        *("storm", "--spawn-server", "-n", "200", "-c", "10", "--missed", "3", "--processes", "2"),
        *("--away", "0.2"),
    )
    summary = data["summary"]
    assert data["ok"] is True, data["problems"]
    assert summary["dropped"] == 200
    assert summary["recovered"] == 200
    # Every verdict is "ok": recovered, the 3 missed publications, no gap, no duplicate.
    assert summary["verdicts"] == {"ok": 200}
    assert summary["reconnect_failures"] == {}
    assert sum(data["histograms"]["recovery_us"].values()) == 200
    assert sum(data["histograms"]["api_publish_us"].values()) == 10 * 3
    assert [p["name"] for p in data["phases"]] == [
        "idle",
        "connect",
        "drop",
        "publish",
        "reconnect",
    ]


@pytest.mark.timeout(180)
def test_storm_reports_lost_history_after_a_restart(tmp_path: Path) -> None:
    # The memory engine forgets history on restart: the checks must say so (exit 1).
    data = loadgen(
        tmp_path,
        *("storm", "--spawn-server", "-n", "50", "-c", "5", "--missed", "2", "--restart"),
        *("--away", "0"),
        expect_rc=1,
    )
    assert data["ok"] is False
    assert data["summary"]["recovered"] == 0
    assert data["summary"]["verdicts"] == {"not recovered": 50}
    assert "restart" in [p["name"] for p in data["phases"]]


@pytest.mark.timeout(180)
def test_publish_delivers_everything_in_order_over_protobuf(tmp_path: Path) -> None:
    # 100 subscribers on 2 channels, 200 deliveries/s for 2 s: 8 publications, 400 deliveries.
    data = loadgen(
        tmp_path,
        *("publish", "--spawn-server", "-n", "100", "-c", "2", "--format", "protobuf"),
        *("--deliveries", "200", "--duration", "2", "--warmup", "0"),
    )
    summary = data["summary"]
    assert data["ok"] is True, data["problems"]
    assert summary["publications"] == 8
    assert summary["api_errors"] == 0
    assert summary["deliveries_expected"] == 400
    assert summary["deliveries_received"] == 400
    assert summary["gaps"] == 0
    assert summary["duplicates"] == 0
    assert summary["complete_connections"] == 100
    assert summary["latency_ms"]["count"] == 400


@pytest.mark.parametrize("url", ["ws://10.1.2.3:8000/connection/websocket", "wss://127.0.0.1:1/"])
def test_only_loopback_targets(url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "hold", "--url", url, "--secret", "s", "-n", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "only targets 127.0.0.1 or ::1" in proc.stderr or "TLS is not supported" in proc.stderr
