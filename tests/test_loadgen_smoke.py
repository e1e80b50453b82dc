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
sys.path.insert(0, str(ROOT))

pytest.importorskip("rich", reason="the load generator needs the 'bench' extra (rich)")

from bench.loadgen.client import judge_recovery  # noqa: E402
from bench.loadgen.proto import EV_PING, EV_PUB, EV_REPLY, ClientCodec, Pub, SubResult  # noqa: E402
from rtcore.protocol import (  # noqa: E402
    Error,
    Publication,
    Reply,
    SubscribeResult,
    get_codec,
)


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
        # --after: the server's loop is sampled every 0.1 s, so the window holds some.
        *("--away", "0.2", "--after", "0.3"),
    )
    summary = data["summary"]
    assert data["ok"] is True, data["problems"]
    assert summary["dropped"] == 200
    assert summary["recovered"] == 200
    # Every verdict is "ok": recovered, the 3 missed publications, no gap, no duplicate.
    assert summary["verdicts"] == {"ok": 200}
    assert summary["reconnect_failures"] == {}
    assert sum(data["histograms"]["recovery_us"].values()) == 200
    # Each reconnect passed the stages before its reply: TCP up, then the 101.
    for stage in ("tcp", "upgrade"):
        assert sum(data["histograms"][f"recovery_{stage}_us"].values()) == 200
        assert sum(data["histograms"][f"connect_{stage}_us"].values()) == 200
    tcp, upgrade = summary["reconnect_tcp_ms"], summary["reconnect_upgrade_ms"]
    assert tcp["count"] == upgrade["count"] == 200
    assert tcp["max"] <= upgrade["max"] <= summary["recovery_ms"]["max"]
    assert sum(data["histograms"]["api_publish_us"].values()) == 10 * 3
    # The server's own view of its event loop through the reconnect (its /metrics).
    loop = summary["server_loop"]
    assert loop["lag_samples"] >= 2
    assert 0 <= loop["lag_over_1.0s"] <= loop["lag_over_0.5s"] <= loop["lag_over_0.1s"]
    assert loop["lag_over_0.1s"] <= loop["lag_samples"]
    assert loop["full_collections"] >= 0
    assert [p["name"] for p in data["phases"]] == [
        "idle",
        "connect",
        "drop",
        "publish",
        "reconnect",
        "after",
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


# -- the client's protocol pieces, checked against rtcore's own codecs ----------------------


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_client_commands_decode_on_the_server(fmt: str) -> None:
    frame = ClientCodec(fmt).setup("tok", "loadgen3", recoverable=True, recover_from=(7, "ep"))
    connect, subscribe = get_codec(fmt).decode_commands(frame)
    assert (connect.id, subscribe.id) == (1, 2)
    assert connect.connect is not None and connect.connect.token == "tok"
    req = subscribe.subscribe
    assert req is not None
    assert (req.channel, req.recoverable, req.recover, req.offset, req.epoch) == (
        "loadgen3",
        True,
        True,
        7,
        "ep",
    )


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_client_decodes_server_replies(fmt: str) -> None:
    server = get_codec(fmt)
    pubs = [Publication(data=b'{"t":5,"s":%d}' % s, offset=10 + s) for s in (1, 2)]
    frame = (
        server.encode_reply(
            Reply(
                id=2,
                subscribe=SubscribeResult(
                    epoch="e1", offset=10, recovered=True, was_recovering=True, publications=pubs
                ),
            )
        )
        + server.ping
        + server.encode_publication("loadgen0", Publication(data=b'{"t":9,"s":3}', offset=13))
        + server.encode_reply(Reply(id=1, error=Error(code=103, message="permission denied")))
    )
    events = ClientCodec(fmt).decode(frame)
    assert events == [
        (EV_REPLY, 2, 0, "", SubResult(True, True, "e1", 10, [Pub(11, 5, 1), Pub(12, 5, 2)])),
        (EV_PING,),
        (EV_PUB, "loadgen0", Pub(13, 9, 3)),
        (EV_REPLY, 1, 103, "permission denied", None),
    ]


def _sub(
    offsets_and_seqs: list[tuple[int, int]], recovered: bool = True, epoch: str = "e"
) -> SubResult:
    return SubResult(recovered, True, epoch, 4, [Pub(o, 0, s) for o, s in offsets_and_seqs])


@pytest.mark.parametrize(
    ("sub", "verdict"),
    [
        (_sub([(5, 1), (6, 2), (7, 3)]), "ok"),
        (_sub([(5, 1), (6, 2), (7, 3)], recovered=False), "not recovered"),
        (_sub([(5, 1), (6, 2), (7, 3)], epoch="other"), "epoch changed"),
        (_sub([(5, 1), (5, 1), (6, 2), (7, 3)]), "duplicate"),
        (_sub([(4, 0), (5, 1), (6, 2), (7, 3)]), "duplicate"),
        (_sub([(5, 1), (7, 3), (6, 2)]), "out of order"),
        (_sub([(5, 1), (7, 3)]), "gap"),
        (_sub([(5, 1), (6, 3), (7, 4)]), "wrong data"),
        (_sub([(5, 1), (6, 2)]), "missing publications"),
        (SubResult(True, False, "e", 7, []), "no recovery attempted"),
    ],
)
def test_recovery_verdicts(sub: SubResult, verdict: str) -> None:
    # The client had offset 4 and sequence 0; the channel's stream ended at 7 after 3 missed.
    got, offset, last_s = judge_recovery(sub, ("e", 7, 3), 4, 0)
    assert got == verdict
    if verdict == "ok":
        assert (offset, last_s) == (7, 3)
    assert judge_recovery(_sub([(5, 1), (6, 2), (7, 3)]), ("e", 7, 2), 4, 0)[0] == "wrong count"


def test_metrics_scrape_sums_each_worker_once() -> None:
    """Workers answer /metrics in turn; two started in the same 10 ms share
    ``process_start_time_seconds``, so they are told apart by their node id."""
    import asyncio
    import itertools

    from bench.loadgen.server import scrape_metrics

    bodies = itertools.cycle(
        [
            f'process_start_time_seconds 1.7e+09\nrtcore_node_info{{node="w{i}"}} 1.0\n'
            f"rtcore_recovery_reads_total {reads}\n".encode()
            for i, reads in ((0, 3.0), (1, 4.0))
        ]
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = next(bodies)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main() -> dict[str, float] | None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await scrape_metrics(
                "127.0.0.1", port, ("rtcore_recovery_reads_total",), attempts=6
            )
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == {"rtcore_recovery_reads_total": 7.0, "processes_seen": 2.0}
