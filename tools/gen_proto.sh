#!/usr/bin/env bash
# Regenerate src/rtcore/protocol/client_pb2.py (and its .pyi stub) from
# src/rtcore/protocol/client.proto.
#
#   tools/gen_proto.sh           regenerate in place
#   tools/gen_proto.sh --check   regenerate into a temporary directory and fail
#                                if the committed files differ (for CI)
#
# protoc comes from a pinned grpcio-tools installed into a throwaway virtual
# environment: grpcio-tools is a generation-time tool only, never a runtime
# dependency of rtcore. grpcio-tools 1.63.0 bundles protoc 26.1, whose Python
# code ("gencode 5.26.1") needs the protobuf runtime >= 5.26.1 and loads with
# every newer runtime (5.x, 6.x, 7.x).
#
# The generated module is post-processed in one way: it registers client.proto
# in a private descriptor pool instead of the process-wide default pool, so it
# can be imported next to any other copy of the Centrifuge client.proto (the
# centrifuge-python SDK registers one under the same package name, and two
# different files defining the same message names in one pool is an error).
#
# Environment:
#   PYTHON                  interpreter used to create the venv (default: python3)
#   RTCORE_PROTOC_VENV      where to keep the venv
#                           (default: ${XDG_CACHE_HOME:-~/.cache}/rtcore/grpcio-tools-<version>)
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.63.0"
# The exact protobuf this grpcio-tools release builds against; pinned so the
# environment is reproducible (it does not influence protoc's output).
GEN_PROTOBUF_VERSION="5.26.1"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="$ROOT/src/rtcore/protocol"
PYTHON="${PYTHON:-python3}"
VENV="${RTCORE_PROTOC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rtcore/grpcio-tools-$GRPCIO_TOOLS_VERSION}"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ] \
    || ! "$VENV/bin/python" -c "import grpc_tools, importlib.metadata as m, sys; sys.exit(m.version('grpcio-tools') != '$GRPCIO_TOOLS_VERSION')" 2>/dev/null; then
  echo "creating $VENV with grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION" "protobuf==$GEN_PROTOBUF_VERSION"
fi

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

"$VENV/bin/python" -m grpc_tools.protoc \
  --proto_path="$PROTO_DIR" \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  client.proto

# Switch the generated module to a private descriptor pool (see above), and
# let mypy --strict accept the stub's bare `Mapping` annotations. Fails loudly
# if protoc's output no longer has the expected shape.
"$VENV/bin/python" - "$OUT/client_pb2.py" "$OUT/client_pb2.pyi" <<'PY'
import sys

path, stub = sys.argv[1], sys.argv[2]
with open(stub, encoding="utf-8") as f:
    stub_src = f.read()
with open(stub, "w", encoding="utf-8") as f:
    f.write('# mypy: disable-error-code="type-arg"\n' + stub_src)

with open(path, encoding="utf-8") as f:
    src = f.read()

header_old = "# source: client.proto\n"
header_new = (
    "# source: client.proto\n"
    "# Post-processed by tools/gen_proto.sh: uses a private descriptor pool.\n"
)
pool_old = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
pool_new = (
    "# A private pool, so this module can be imported next to other copies of\n"
    "# client.proto (such as the centrifuge-python SDK's) in the default pool.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)
for old, new in ((header_old, header_new), (pool_old, pool_new)):
    if src.count(old) != 1:
        sys.exit(f"gen_proto.sh: unexpected protoc output, cannot find {old!r} exactly once")
    src = src.replace(old, new)

with open(path, "w", encoding="utf-8") as f:
    f.write(src)
PY

if [ "$check" = 1 ]; then
  status=0
  for f in client_pb2.py client_pb2.pyi; do
    if ! cmp -s "$OUT/$f" "$PROTO_DIR/$f"; then
      echo "src/rtcore/protocol/$f is out of date: run tools/gen_proto.sh" >&2
      status=1
    fi
  done
  exit "$status"
fi

cp "$OUT/client_pb2.py" "$OUT/client_pb2.pyi" "$PROTO_DIR/"
echo "wrote src/rtcore/protocol/client_pb2.py and client_pb2.pyi (protoc from grpcio-tools $GRPCIO_TOOLS_VERSION)" >&2
