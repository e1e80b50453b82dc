"""The wheel and the container image, as a user installs them.

The wheel is built from this checkout the way the Dockerfile's build stage
builds it (RTCORE_REQUIRE_EXTENSIONS=1, no build isolation) and inspected:
both compiled modules, stripped; the protocol schema, the type marker and the
licence ship. Where a Docker daemon answers, the image is built and its
health check must pass; elsewhere the Dockerfile's promises are checked in
its text (two stages, compiled or nothing, non-root, health check).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # A copy keeps build/ and *.egg-info out of the checkout.
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, build / name)
    shutil.copytree(
        ROOT / "src",
        build / "src",
        ignore=shutil.ignore_patterns("*.so", "*.c", "*.egg-info", "__pycache__", "*.html"),
    )
    env = dict(os.environ, RTCORE_REQUIRE_EXTENSIONS="1")
    env.pop("RTCORE_NO_EXTENSIONS", None)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(build),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    (found,) = out.glob("rtcore-*.whl")
    return found


@pytest.mark.timeout(900)
def test_wheel_ships_compiled_stripped_modules(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        modules = [n for n in names if re.fullmatch(r"rtcore/_(frames|fanout)\..*\.so", n)]
        assert len(modules) == 2, names
        for name in modules:
            zf.extract(name, tmp_path)
    for name in ("rtcore/protocol/client.proto", "rtcore/py.typed"):
        assert name in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert not [n for n in names if n.endswith(".c")], "generated C does not ship"
    if shutil.which("nm") is None:
        pytest.fail("nm (binutils) is needed to check that the modules are stripped")
    for name in modules:
        nm = subprocess.run(["nm", str(tmp_path / name)], capture_output=True, text=True)
        assert "no symbols" in nm.stderr, f"{name} is not stripped"


def _dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for raw in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_builds_compiled_and_runs_unprivileged() -> None:
    build, run = _dockerfile_stages()
    assert build[0].endswith(" AS build")
    assert any("RTCORE_REQUIRE_EXTENSIONS=1" in line and "pip wheel" in line for line in build)
    assert not any("build-essential" in line for line in run), "no compiler in the final image"
    assert any(line.startswith("COPY --from=build") for line in run)
    users = [line.split()[1] for line in run if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    health = [line for line in run if line.startswith("HEALTHCHECK ")]
    assert health and "/health" in health[0]
    for line in build + run:
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is missing"


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_image_serves_health() -> None:
    if not _docker_works():
        pytest.skip("no Docker daemon here: the Dockerfile is checked as text above")
    tag = "rtcore-test:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], check=True, timeout=1500)
    name = f"rtcore-test-{os.getpid()}"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "-p", "127.0.0.1::8000", tag], check=True
    )
    try:
        port = (
            subprocess.run(
                ["docker", "port", name, "8000"], capture_output=True, text=True, check=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
