#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine
# (Python packages, Debian packages, npm packages, the Autobahn|Testsuite) and
# runs the whole suite: compiled modules and their pure-Python twins.
#
#   bash scripts/test.sh [extra pytest args]
#
# Environment: CI=true makes every integration test that lacks its service
# fail instead of skip. RTCORE_TEST_WORKERS sets pytest-xdist workers (default 4:
# most of the suite waits on servers, browsers and timers, so two workers per
# core keep a 2-core machine busy; see docs/dev.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi

log() { printf '\n== %s\n' "$*"; }

# --- Debian packages -----------------------------------------------------------
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# PostgreSQL for the outbox consumer tests (its postinst creates the "main" cluster).
command -v pg_lsclusters >/dev/null 2>&1 || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
$PY -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# --- services ---------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/rtcore-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/rtcore-redis --logfile /tmp/rtcore-redis/redis.log
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if ! pg_lsclusters -h 2>/dev/null | awk '$4 == "online"' | grep -q .; then
  log "starting PostgreSQL"
  read -r pg_version pg_cluster _ < <(pg_lsclusters -h 2>/dev/null | head -n 1) || true
  if [ -z "${pg_version:-}" ]; then
    pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_cluster=main
    $SUDO pg_createcluster "$pg_version" "$pg_cluster"
  fi
  $SUDO pg_ctlcluster "$pg_version" "$pg_cluster" start
  for _ in $(seq 100); do pg_lsclusters -h | awk '$4 == "online"' | grep -q . && break; sleep 0.1; done
fi

# --- the package, in its own virtual environment --------------------------------
# (compiled: a build failure is an error here)
VENV=${RTCORE_TEST_VENV:-$ROOT/.venv-test}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  $PY -m venv "$VENV"
fi
PY=$VENV/bin/python
log "pip install .[test] (compiled extensions required)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "setuptools>=70" "Cython>=3.1,<3.4" wheel
$PY -m pip uninstall -q -y rtcore >/dev/null 2>&1 || true
RTCORE_REQUIRE_EXTENSIONS=1 $PY -m pip install -q --no-build-isolation "$ROOT[test,nats,postgres]"
$PY -c 'import rtcore.frames as f, rtcore.fanout as g; print("frame core:", f.IMPLEMENTATION, "| fan-out:", g.IMPLEMENTATION)'

# --- npm packages for the JavaScript SDK and browser tests ---------------------------
for dir in tests/protocol/js tests/browser; do
  if [ -f "$dir/package.json" ]; then
    log "npm ci ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

# --- Autobahn|Testsuite (Python 3 port from ../shared/tools/autobahn) ----------------
AB_TOOLS=${RTCORE_AUTOBAHN_TOOLS:-$ROOT/../shared/tools/autobahn}
export RTCORE_AUTOBAHN_VENV=${RTCORE_AUTOBAHN_VENV:-$HOME/.cache/rtcore/autobahn-venv}
export RTCORE_AUTOBAHN_TOOLS=$AB_TOOLS
if [ -x "$AB_TOOLS/setup_autobahn.sh" ] || [ -f "$AB_TOOLS/setup_autobahn.sh" ]; then
  if [ ! -x "$RTCORE_AUTOBAHN_VENV/bin/wstest" ]; then
    log "installing the Autobahn|Testsuite into $RTCORE_AUTOBAHN_VENV"
    rm -rf "$RTCORE_AUTOBAHN_VENV"
    mkdir -p "$(dirname "$RTCORE_AUTOBAHN_VENV")"
    bash "$AB_TOOLS/setup_autobahn.sh" "$RTCORE_AUTOBAHN_VENV"
  fi
fi

# --- the suite ------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin"   # nats-server lives there on Debian
log "pytest"
# Run from a directory where ./src is not importable, so the installed
# (compiled) package is what the tests import.
set +e
$PY -m pytest -n "${RTCORE_TEST_WORKERS:-4}" --dist load --maxschedchunk=1 --durations=30 -p no:cacheprovider "$@"
status=$?
set -e
if [ $status -ne 0 ]; then exit $status; fi

log "pytest again on the pure-Python twins (in-process engine tests)"
RTCORE_NO_EXTENSIONS=1 $PY -m pytest -n "${RTCORE_TEST_WORKERS:-4}" -p no:cacheprovider -m "not slow" \
  tests/test_wsconn.py $( [ -d tests/protocol ] && echo tests/protocol )
