"""examples/chat in headless Chromium: people on different transports in one room.

The example program runs as users run it (a subprocess on a free port). The
driver (``chat.mjs``) logs Carol in over HTTP streaming to leave a message,
then Alice over WebSocket and Bob over SSE through the login form: both see
Carol's message from history, each other in the presence list and each
other's messages; Bob switches rooms and back. The screenshot of Alice's page
goes to a temporary file, or to ``docs/img/chat.png`` with
``RTCORE_UPDATE_SCREENSHOTS=1`` (how the picture in the docs is made).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protocol.helpers import run

from .harness import REPO, SDK_DIR, describe, prerequisites, run_node


EXAMPLE = REPO / "examples" / "chat" / "chat.py"
SCREENSHOT = (
    REPO / "docs" / "img" / "chat.png"
    if os.environ.get("RTCORE_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"rtcore-chat-{os.getpid()}.png"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chat example exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"chat example not listening on {port} after {timeout}s")


def test_chat_between_transports() -> None:
    browser, node_exe = prerequisites()
    port = _free_port()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--sdk",
            str(SDK_DIR / "centrifuge.js"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(proc, port)
        code, out, err = run(
            run_node(
                node_exe,
                browser,
                "chat.mjs",
                f"http://127.0.0.1:{port}",
                str(SCREENSHOT),
                timeout=120,
            ),
            timeout=150,
        )
    finally:
        proc.terminate()
        try:
            server_log = proc.communicate(timeout=10)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            server_log = proc.communicate()[0].decode(errors="replace")
    assert code == 0, describe(code, out, err) + "\nserver log:\n" + server_log[-4000:]
    assert proc.returncode == 0, (
        f"chat example did not stop cleanly ({proc.returncode}):\n{server_log[-4000:]}"
    )
    summary = json.loads(out.strip().splitlines()[-1])
    alice, bob = summary["alice"], summary["bob"]
    assert alice["status"] == "connected over websocket"
    assert bob["status"] == "connected over sse"
    assert alice["room"] == bob["room"] == "# lobby"
    assert alice["presence"] == bob["presence"] == ["Alice", "Bob"]
    texts = [m["text"] for m in alice["messages"]]
    assert texts == [
        "Welcome to the lobby!",
        "Hi Bob, I am on a WebSocket.",
        "Hi Alice! Server-Sent Events here.",
        "Bob left for #random.",
        "Back again.",
    ]
    assert [m["text"] for m in bob["messages"]] == texts
    assert alice["messages"][0] == {
        "name": "Carol",
        "text": "Welcome to the lobby!",
        "history": True,
        "mine": False,
    }
    assert [m["mine"] for m in alice["messages"]] == [False, True, False, True, False]
    # Bob's page reloaded the room from history when he came back.
    assert all(m["history"] for m in bob["messages"][:4])
    png = SCREENSHOT.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
