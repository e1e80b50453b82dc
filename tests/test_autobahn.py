"""Autobahn|Testsuite (fuzzingclient, cases 1.* - 13.*) against the echo server.

Runs ``../shared/tools/autobahn/run_fuzzingclient.sh`` with the venv that
``scripts/test.sh`` installs (``RTCORE_AUTOBAHN_VENV``). Fails on any FAILED
case; OK, NON-STRICT, INFORMATIONAL and UNIMPLEMENTED verdicts pass.

Case group 9.* (performance: up to 16 MiB messages) is excluded here to keep
CI short; it runs in the by-hand conformance job (``bench/autobahn_report.py``)
whose full results are in docs/autobahn.md. ``RTCORE_AUTOBAHN_CASES`` /
``RTCORE_AUTOBAHN_EXCLUDE`` override the selection.

The cases run in chunks, one wstest run and one server each, so that
pytest-xdist spreads them over its workers: the compression groups (12.*,
13.*) take most of the time and are cut finer. The compiled frame core runs
every chunk; the pure-Python twin runs the frame groups and the first chunk
of each compression group. The rest of the compression cases exercise the
permessage-deflate code and the echo server, which both cores share, and
took 9 of the suite's 40 worker-minutes on the twin in a CI run;
``bench/autobahn_report.py`` runs all of them on both cores.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI
from servers import free_port, run_server


ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("RTCORE_AUTOBAHN_TOOLS", ROOT.parent / "shared" / "tools" / "autobahn"))
VENV = Path(
    os.environ.get("RTCORE_AUTOBAHN_VENV", Path.home() / ".cache" / "rtcore" / "autobahn-venv")
)


def _suite_available() -> bool:
    return (TOOLS / "run_fuzzingclient.sh").exists() and (VENV / "bin" / "wstest").exists()


# Together these cover every case group (9.* is excluded below, see the docstring).
CHUNKS = [
    "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*",
    "12.1.*,12.2.*",
    "12.3.*,12.4.*",
    "12.5.*",
    "13.1.*,13.2.*",
    "13.3.*,13.4.*",
    "13.5.*,13.6.*,13.7.*",
]
# What the twin runs (see the docstring).
TWIN_CHUNKS = CHUNKS[0], CHUNKS[1], CHUNKS[4]


def _runs() -> list[tuple[str, str]]:
    if "RTCORE_AUTOBAHN_CASES" in os.environ:
        return [("cython", "selected"), ("python", "selected")]
    return [("cython", c) for c in CHUNKS] + [("python", c) for c in TWIN_CHUNKS]


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.parametrize(("server_impl", "chunk"), _runs(), indirect=["server_impl"])
def test_autobahn_no_failed_cases(server_impl: str, chunk: str, tmp_path: Path) -> None:
    if not _suite_available():
        if IN_CI:
            pytest.fail(
                f"Autobahn|Testsuite not installed (tools {TOOLS}, venv {VENV}); run scripts/test.sh"
            )
        pytest.skip("Autobahn|Testsuite not installed (scripts/test.sh installs it)")
    port = free_port()
    out = tmp_path / "report"
    env = dict(os.environ, AUTOBAHN_VENV=str(VENV))
    env["EXCLUDE"] = os.environ.get("RTCORE_AUTOBAHN_EXCLUDE", "9.*")
    cases = os.environ.get("RTCORE_AUTOBAHN_CASES", chunk)
    with run_server(["-m", "rtcore.examples.echo", "--port", str(port)], port, server_impl):
        proc = subprocess.run(
            ["bash", str(TOOLS / "run_fuzzingclient.sh"), "127.0.0.1", str(port), str(out), cases],
            env=env,
            capture_output=True,
            text=True,
            timeout=2900,
        )
    summary = [line for line in proc.stdout.splitlines() if line.startswith("autobahn:")]
    assert summary, (
        f"no Autobahn summary (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    index = json.loads((out / "index.json").read_text())
    results = next(iter(index.values()))
    failed = sorted(case for case, r in results.items() if r["behavior"] == "FAILED")
    assert not failed, f"FAILED cases: {failed}\n{summary[-1]}"
    assert proc.returncode == 0, summary[-1]
