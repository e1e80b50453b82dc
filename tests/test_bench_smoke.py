"""Short smoke runs of the benchmarks, so they keep working between the by-hand runs.

The real runs (and their results) are in bench/ and docs/benchmarks.md; here
only correctness is checked: the fan-out load scenario delivers every
publication to every subscriber, and the micro-benchmarks execute once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


def _run_bench(script: str, *args: str) -> str:
    """Run ``bench/<script>`` with ``args``; its stdout (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.timeout(300)
def test_fanout_load_smoke_has_no_loss() -> None:
    _run_bench("fanout_load.py", "--smoke")


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


@pytest.mark.timeout(300)
def test_setup_path_sets_up_every_connection() -> None:
    # The benchmark exits non-zero when a connection is not set up (an error
    # reply, a disconnect, or a session missing at the end).
    out = _run_bench("setup_path.py", "--connections=300", "--channels=3", "--batch=50", "--runs=1")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["connections"] == 300 and summary["setup_us_median"] > 0


FAKE_VALGRIND = """#!{python}
# Stands in for valgrind: runs the command after its options and reports an
# instruction count that is 1,000 per connection plus a start-up constant.
import re, subprocess, sys
args = sys.argv[1:]
while args and args[0].startswith("--"):
    args.pop(0)
proc = subprocess.run(args)
n = int(next(a for a in args if a.startswith("--connections=")).split("=")[1])
print(f"==1== Collected : {{n * 1000 + 5_000_000:,}}", file=sys.stderr)
sys.exit(proc.returncode)
"""


@pytest.mark.timeout(300)
def test_setup_path_instructions_subtracts_two_runs(tmp_path: Path) -> None:
    # The --instructions plumbing without valgrind itself: two child runs per
    # tree (batch * 3 and that many more connections), the counts parsed from
    # valgrind's report, their difference divided by --connections.
    fake = tmp_path / "valgrind"
    fake.write_text(FAKE_VALGRIND.format(python=sys.executable))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "setup_path.py"),
            "--instructions",
            "--connections=40",
            "--batch=10",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["instructions_per_connection"] == 1000
    assert result["instructions"] == [30 * 1000 + 5_000_000, 70 * 1000 + 5_000_000]
