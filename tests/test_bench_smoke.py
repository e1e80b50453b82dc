"""Short smoke runs of the benchmarks, so they keep working between the by-hand runs.

The real runs (and their results) are in bench/ and docs/benchmarks.md; here
only correctness is checked: the fan-out load scenario delivers every
publication to every subscriber, and the micro-benchmarks execute once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_fanout_load_smoke_has_no_loss() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fanout_load.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("bench", ["bench_frames.py", "bench_fanout.py", "bench_codec.py"])
def test_micro_benchmarks_run(bench: str) -> None:
    path = ROOT / "bench" / bench
    if not path.exists():
        pytest.fail(f"{bench} is missing")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(path),
            "--benchmark-disable",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
