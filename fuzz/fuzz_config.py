"""Fuzzing of the configuration loader (``rtcore.config.load_config``).

The input is the text of a ``.toml``, ``.yaml`` or ``.json`` file (chosen by
the first byte), written to a scratch file and loaded, or a set of
``RTCORE_*`` environment variables (one ``NAME=value`` per line, the name
completed from a list of real keys when it is short). Loading may only raise
:class:`~rtcore.errors.ConfigError`, and a configuration that loads must
dump to plain data (``config_to_mapping``, what ``checkconfig`` prints).

    python fuzz/fuzz_config.py -atheris_runs=1000000
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

from fuzzlib import Input, instrumented, main


# The loader warns about weak secrets and the like: silent while fuzzing,
# but never when imported by the suite (logging.disable is process-wide).
if __name__ == "__main__":
    logging.disable(logging.WARNING)

with instrumented(__name__ == "__main__"):
    from rtcore.config import config_to_mapping, load_config
    from rtcore.errors import ConfigError

# Memory-backed when the machine has /dev/shm: rewriting a file on a disk
# mounted with `discard` cost 40% of the harness's time.
_SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_SCRATCH = Path(tempfile.mkdtemp(prefix="rtcore-fuzz-config-", dir=_SHM))
atexit.register(shutil.rmtree, _SCRATCH, True)
_SUFFIXES = (".toml", ".yaml", ".json")
_ENV_NAMES = (
    "RTCORE_HTTP__PORT",
    "RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY",
    "RTCORE_CLIENT__ALLOWED_ORIGINS",
    "RTCORE_CHANNEL__NAMESPACES",
    "RTCORE_CHANNEL__WITHOUT_NAMESPACE__HISTORY_TTL",
    "RTCORE_ENGINE__TYPE",
    "RTCORE_ENGINE__PRESENCE_TTL",
    "RTCORE_WEBSOCKET__COMPRESSION",
    "RTCORE_PROXY__CONNECT__ENDPOINT",
    "RTCORE_LOG__LEVEL",
)


def _env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.split("\n"):
        name, _, value = line.partition("=")
        if len(name) <= 1:
            name = _ENV_NAMES[ord(name or "\0") % len(_ENV_NAMES)]
        env[name] = value
    return env


def load(data: bytes) -> ConfigError | None:
    """Load the configuration the input describes: the error that refused it, or None."""
    inp = Input(data)
    mode = inp.byte() % 4
    text = inp.rest()
    try:
        if mode == 3:
            config = load_config(None, _env(text.decode("latin-1")))
        else:
            path = _SCRATCH / f"config{_SUFFIXES[mode]}"
            path.write_bytes(text)
            config = load_config(path, {})
    except ConfigError as exc:
        return exc
    config_to_mapping(config)
    return None


def TestOneInput(data: bytes) -> None:
    load(data)


#: Inputs of findings of this harness, now fixed (docs/fuzzing.md): each is
#: refused with a ConfigError naming the file or variable. Too long for
#: seeds (libFuzzer would raise its input size to fit them);
#: tests/test_fuzz_smoke.py runs them.
FINDINGS = [
    # An integer past Python's int digit limit: JSON, TOML and YAML files,
    # an integer variable and a JSON variable.
    b"\x02[" + b"9" * 5000 + b"]",
    b"\x00a = " + b"9" * 5000,
    b"\x01a: " + b"9" * 5000,
    b"\x03\x00=" + b"9" * 5000,
    b"\x03\x03=[" + b"9" * 5000 + b"]",
    # Nesting past the recursion limit: JSON, TOML and YAML files, a JSON variable.
    b"\x02" + b"[" * 100_000,
    b"\x00a=" + b"[" * 5000,
    b"\x01" + b"[" * 10_000,
    b"\x03\x03=" + b"[" * 100_000,
    # An integer variable padded with a character that re's \s matches but int() refuses.
    b"\x03\x00=\x1f9000",
    # YAML aliases: a cycle, and a few lines that expand to a billion values.
    b"\x01http: &a {x: *a}\n",
    b"\x01a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        b"a%d: &a%d [" % (i, i) + b", ".join([b"*a%d" % (i - 1)] * 10) + b"]\n" for i in range(1, 9)
    ),
    # An integer past the float range in a number and in a duration.
    b'\x02{"client": {"connect_rate_limit": 1' + b"0" * 400 + b"}}",
    b'\x02{"engine": {"presence_ttl": 1' + b"0" * 400 + b"}}",
]


SEEDS = [
    b"\x00"
    + b'[http]\nport = 8000\n[client]\nallowed_origins = ["https://a.example.com"]\n'
    + b'[client.token]\nhmac_secret_key = "0123456789abcdef0123456789abcdef"\n'
    + b'[[channel.namespaces]]\nname = "chat"\nhistory_size = 10\nhistory_ttl = "5m"\n'
    + b"allow_subscribe_for_client = true\n",
    b"\x01"
    + b"http:\n  port: 9000\nengine:\n  type: memory\n  presence_ttl: 30s\nchannel:\n"
    + b"  namespaces:\n    - name: a\n      presence: true\n    - &n {name: b}\n",
    b"\x02"
    + b'{"log": {"level": "debug", "format": "json"}, "websocket": {"compression": true},'
    + b' "channel": {"without_namespace": {"history_size": 5, "history_ttl": 60.5}}}',
    b'\x03\x00=9000\n\x03=[{"name":"n","history_size":1,"history_ttl":"1s"}]\n'
    + b"\x02=https://x,https://y\nRTCORE_UNKNOWN__KEY=1",
]


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
