"""``rtcore serve --workers 2`` on the Redis engine: one port, two processes,
one user base. Clients land on both workers (SO_REUSEPORT) and a publication
made through the server API reaches every one of them.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import websockets
from conftest import IN_CI
from servers import free_port, wait_port


KEY = "workers-test-key"


def _redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping())
    except Exception:  # noqa: BLE001
        return False


def _worker_pids_with_connections(port: int) -> set[int]:
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_two_workers_share_one_port_and_channels(tmp_path: Path) -> None:
    if not _redis_available():
        if IN_CI:
            pytest.fail("Redis is required on 127.0.0.1:6379")
        pytest.skip("no Redis on 127.0.0.1:6379")
    port = free_port()
    config = tmp_path / "rtcore.toml"
    config.write_text(
        f"""
[http]
port = {port}
[api]
key = "{KEY}"
[engine]
type = "redis"
redis_prefix = "rtcore-workers-{uuid.uuid4().hex[:8]}"
[client]
allow_anonymous_connect_without_token = true
reconnect_jitter = "500ms"
[channel.without_namespace]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtcore", "serve", "--config", str(config), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port("127.0.0.1", port, proc=proc)
        time.sleep(1.0)  # both workers bound

        async def main() -> None:
            url = f"ws://127.0.0.1:{port}/connection/websocket"
            clients = []
            for _ in range(24):
                ws = await websockets.connect(url)
                await ws.send(
                    json.dumps({"id": 1, "connect": {}})
                    + "\n"
                    + json.dumps({"id": 2, "subscribe": {"channel": "news"}})
                )
                replies: dict[int, dict] = {}
                while len(replies) < 2:
                    for line in (await asyncio.wait_for(ws.recv(), 10)).splitlines():
                        msg = json.loads(line)
                        replies[msg["id"]] = msg
                assert "subscribe" in replies[2], replies
                clients.append(ws)
            assert len(_worker_pids_with_connections(port)) == 2, "connections did not spread"
            import aiohttp

            async with aiohttp.ClientSession() as http:
                r = await http.post(
                    f"http://127.0.0.1:{port}/api/publish",
                    json={"channel": "news", "data": {"n": 1}},
                    headers={"X-API-Key": KEY},
                )
                assert r.status == 200, await r.text()
            for ws in clients:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["push"]["channel"] == "news" and msg["push"]["pub"]["data"] == {"n": 1}
            for ws in clients:
                await ws.close()

        asyncio.run(main())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
