"""A smoke run of bench/api_publish.py (the server API publish path), so that it keeps working.

Correctness only, never timings: every request is answered with one result
per publication, the server made exactly the publications the clients were
answered, and every subscriber received every one of them. The measured
figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent

RUN_KEYS = {
    "src",
    "subscribers",
    "mode",
    "batch_size",
    "requests_sent",
    "requests",
    "publications",
    "window_publications",
    "publications_per_s",
    "server_cpu_us_per_publication",
    "server_user_us_per_publication",
    "server_sys_us_per_publication",
    "server_core_busy_pct",
    "clients_cpu_pct",
    "latency_ms",
    "deliveries",
    "problems",
}


@pytest.mark.timeout(120)
def test_api_publish_smoke_answers_and_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "api_publish.py"), "--smoke", "--no-pin"]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["tool"] == "bench/api_publish.py"
    assert result["problems"] == []
    runs = result["runs"]
    assert sorted(r["mode"] for r in runs) == ["batch", "publish"]
    for run in runs:
        assert RUN_KEYS <= run.keys(), RUN_KEYS - run.keys()
        assert run["problems"] == []
        assert run["requests"] == run["requests_sent"] > 0
        assert run["publications"] == run["requests"] * run["batch_size"]
        assert run["batch_size"] == (5 if run["mode"] == "batch" else 1)
        assert run["deliveries"]["expected"] == run["publications"] * run["subscribers"] > 0
        assert run["deliveries"]["received"] == run["deliveries"]["expected"]
        assert run["latency_ms"]["count"] == run["window_publications"] // run["batch_size"]
    summary = result["summary"]
    assert {(row["subscribers"], row["mode"]) for row in summary} == {(3, "publish"), (3, "batch")}
    for row in summary:
        assert row["runs"] == 1
        assert row["publications_per_s"] > 0
