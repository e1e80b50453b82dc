"""Configuration loading (rtcore.config.load_config): formats, precedence, errors, docs.

Every class of invalid value is checked for the key path its error names,
for values from a file, from the environment (the error names the variable)
and from the command line. docs/config.md is regenerated and compared, and
every example configuration under docs/ must load.
"""

from __future__ import annotations

import importlib.util
import json
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rtcore.config import (
    Config,
    ConfigErrors,
    LocatedConfigError,
    config_from_mapping,
    env_var_name,
    format_duration,
    load_config,
    parse_duration,
)
from rtcore.config.centrifugo import import_centrifugo
from rtcore.config.centrifugo_table import KEY_MAP, parse_go_duration
from rtcore.config.documents import Document, default_document, default_env, render
from rtcore.config.keys import model_key
from rtcore.config.positions import key_lines, line_of_path
from rtcore.errors import ConfigError
from rtcore.server.cli import starter_config


ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

SECRET = "config-tests-hmac-secret-0123456789abcdef"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(exc: ConfigError) -> list[tuple[str, str]]:
    errs = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    return [(e.path, e.message) for e in errs]


def load_error(
    path: Path | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {}, overrides)
    return errors_of(info.value)


# -- formats ---------------------------------------------------------------------------

TOML = f"""
[http]
port = 9001
[client]
allowed_origins = ["https://a.example"]
ping_interval = "20s"
[client.token]
hmac_secret_key = "{SECRET}"
[[channel.namespaces]]
name = "chat"
history_size = 10
history_ttl = "5m"
"""

YAML = f"""
http:
  port: 9001
client:
  allowed_origins: [https://a.example]
  ping_interval: 20s
  token:
    hmac_secret_key: {SECRET}
channel:
  namespaces:
    - name: chat
      history_size: 10
      history_ttl: 5m
"""

JSON = json.dumps(
    {
        "http": {"port": 9001},
        "client": {
            "allowed_origins": ["https://a.example"],
            "ping_interval": "20s",
            "token": {"hmac_secret_key": SECRET},
        },
        "channel": {"namespaces": [{"name": "chat", "history_size": 10, "history_ttl": "5m"}]},
    }
)


@pytest.mark.parametrize(
    ("name", "text"), [("c.toml", TOML), ("c.yaml", YAML), ("c.yml", YAML), ("c.json", JSON)]
)
def test_every_format_loads_the_same(tmp_path: Path, name: str, text: str) -> None:
    config = load_config(write(tmp_path, name, text), {})
    assert config.http.port == 9001
    assert config.client.allowed_origins == ["https://a.example"]
    assert config.client.ping_interval == 20.0
    assert config.client.token.hmac_secret_key == SECRET
    (ns,) = config.channel.namespaces
    assert (ns.name, ns.history_size, ns.history_ttl) == ("chat", 10, 300.0)
    assert config == load_config(write(tmp_path, "ref.toml", TOML), {})


def test_no_file_gives_defaults() -> None:
    assert load_config(None, {}) == Config()


def test_empty_files(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "e.toml", ""), {}) == Config()
    assert load_config(write(tmp_path, "e.yaml", "# nothing\n"), {}) == Config()
    assert load_config(write(tmp_path, "e.json", "{}"), {}) == Config()


# -- precedence ------------------------------------------------------------------------


def test_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path, "p.toml", '[http]\nport = 8001\naddress = "10.0.0.1"\n[log]\nlevel = "warning"\n'
    )
    assert load_config(None, {}).http.port == 8000
    assert load_config(path, {}).http.port == 8001
    env = {"RTCORE_HTTP__PORT": "8002", "RTCORE_LOG__LEVEL": "error"}
    config = load_config(path, env)
    assert (config.http.port, config.http.address, config.log.level) == (8002, "10.0.0.1", "error")
    config = load_config(path, env, {"http.port": 8003, "log": {"level": "debug"}})
    assert (config.http.port, config.http.address, config.log.level) == (8003, "10.0.0.1", "debug")


def test_env_nested_lists_tables_and_switches(tmp_path: Path) -> None:
    env = {
        "RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY": SECRET,
        "RTCORE_CLIENT__ALLOWED_ORIGINS": "https://a.example, https://b.example,",
        "RTCORE_CLIENT__PONG_TIMEOUT": "250ms",
        "RTCORE_WEBSOCKET__COMPRESSION": "yes",
        "RTCORE_CHANNEL__NAMESPACES": '[{"name": "chat", "presence": true}]',
        "RTCORE_CLIENT__SUBSCRIPTION_TOKEN__HMAC_SECRET_KEY": SECRET + "-sub",
        "RTCORE_ENGINE__REDIS_ADDRESS": "redis://a:6379/0,redis://b:6379/0",
        # Not configuration keys: no "__".
        "RTCORE_NO_EXTENSIONS": "1",
        "RTCORE_CONFIG": "/nonexistent.toml",
        "RTCORE_TEST_WORKERS": "2",
        "OTHER__VAR": "x",
    }
    config = load_config(None, env)
    assert config.client.token.hmac_secret_key == SECRET
    assert config.client.allowed_origins == ["https://a.example", "https://b.example"]
    assert config.client.pong_timeout == 0.25
    assert config.websocket.compression is True
    assert config.channel.namespaces[0].name == "chat" and config.channel.namespaces[0].presence
    assert config.client.subscription_token is not None
    assert config.client.subscription_token.hmac_secret_key == SECRET + "-sub"
    assert config.client.subscription_token.section == "client.subscription_token"
    assert config.engine.redis_address == ["redis://a:6379/0", "redis://b:6379/0"]


def test_env_replaces_a_file_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "l.toml",
        '[[channel.namespaces]]\nname = "a"\n[[channel.namespaces]]\nname = "b"\n',
    )
    config = load_config(path, {"RTCORE_CHANNEL__NAMESPACES": '[{"name": "c"}]'})
    assert [ns.name for ns in config.channel.namespaces] == ["c"]


def test_jwks_public_endpoint_alias(tmp_path: Path) -> None:
    url = "https://auth.example/.well-known/jwks.json"
    path = write(tmp_path, "j.yaml", f"client:\n  token:\n    jwks_public_endpoint: {url}\n")
    assert load_config(path, {}).client.token.jwks_url == url
    env = {"RTCORE_CLIENT__TOKEN__JWKS_PUBLIC_ENDPOINT": url}
    assert load_config(None, env).client.token.jwks_url == url
    both = {"client": {"token": {"jwks_url": url, "jwks_public_endpoint": url}}}
    with pytest.raises(ConfigError) as info:
        config_from_mapping(both)
    assert errors_of(info.value) == [
        ("client.token.jwks_public_endpoint", "is another name of jwks_url; set only one of them")
    ]
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"client": {"token": {"jwks_public_endpoint": "ftp://x"}}})
    assert info.value.path == "client.token.jwks_url"


# -- every class of invalid value ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"htp": {}}, "htp", "unknown key; did you mean 'http'?"),
        ({"http": {"prot": 1}}, "http.prot", "unknown key"),
        (
            {"channel": {"namespaces": [{"name": "a"}, {"name": "b", "histroy_size": 1}]}},
            "channel.namespaces[1].histroy_size",
            "unknown key",
        ),
        ({"client": {"token": {"section": "x"}}}, "client.token.section", "unknown key"),
        ({"http": 5}, "http", "expected a table/object, got an integer"),
        ({"http": {"port": "eighty"}}, "http.port", "expected an integer, got the string 'eighty'"),
        ({"http": {"port": True}}, "http.port", "expected an integer, got True"),
        ({"http": {"port": 80.5}}, "http.port", "expected an integer, got 80.5"),
        (
            {"websocket": {"compression": "maybe"}},
            "websocket.compression",
            "expected true or false",
        ),
        ({"http": {"address": 1}}, "http.address", "expected a string, got an integer"),
        (
            {"client": {"connect_rate_limit": "fast"}},
            "client.connect_rate_limit",
            "expected a number",
        ),
        (
            {"client": {"connect_rate_limit": float("nan")}},
            "client.connect_rate_limit",
            "expected a finite number",
        ),
        (
            {"client": {"allowed_origins": 5}},
            "client.allowed_origins",
            "expected a list, got an integer",
        ),
        (
            {"client": {"allowed_origins": ["a", 5]}},
            "client.allowed_origins[1]",
            "expected a string",
        ),
        (
            {"channel": {"namespaces": {"name": "a"}}},
            "channel.namespaces",
            "expected a list, got a table",
        ),
        ({"channel": {"namespaces": ["chat"]}}, "channel.namespaces[0]", "expected a table/object"),
        (
            {"client": {"ping_interval": "5 minutes"}},
            "client.ping_interval",
            "invalid duration '5 minutes'",
        ),
        (
            {"client": {"ping_interval": -1}},
            "client.ping_interval",
            "duration must not be negative",
        ),
        (
            {"client": {"ping_interval": True}},
            "client.ping_interval",
            "expected a duration, got a boolean",
        ),
        (
            {"client": {"ping_interval": [1]}},
            "client.ping_interval",
            "expected a duration, got list",
        ),
        (
            {"channel": {"namespaces": [{"name": "a", "history_ttl": "5x"}]}},
            "channel.namespaces[0].history_ttl",
            "invalid duration '5x'",
        ),
        ({"http": {"port": 70000}}, "http.port", "must be within 0..65535"),
        ({"api": {"port": -1}}, "api.port", "must be within 0..65535"),
        ({"http": {"max_body_size": 0}}, "http.max_body_size", "must be >= 1"),
        ({"client": {"channel_limit": -1}}, "client.channel_limit", "must be >= 0"),
        ({"client": {"max_frame_size": 0}}, "client.max_frame_size", "must be >= 1"),
        ({"websocket": {"message_size_limit": -5}}, "websocket.message_size_limit", "must be >= 0"),
        ({"log": {"level": "verbose"}}, "log.level", "must be debug, info, warning or error"),
        ({"log": {"format": "xml"}}, "log.format", "must be 'text' or 'json'"),
        ({"engine": {"type": "kafka"}}, "engine.type", "must be 'memory' or 'redis'"),
        ({"engine": {"presence_ttl": 0}}, "engine.presence_ttl", "must be > 0"),
        ({"api": {"error_mode": "loud"}}, "api.error_mode", "must be 'default' or 'transport'"),
        (
            {"channel": {"without_namespace": {"force_recovery_mode": "all"}}},
            "channel.without_namespace.force_recovery_mode",
            "must be 'stream' or 'cache'",
        ),
        (
            {"channel": {"namespaces": [{"name": "a", "history_size": 5}]}},
            "channel.namespaces[0].history_size",
            "history_size and history_ttl must be set together",
        ),
        (
            {"channel": {"namespaces": [{"name": "a", "history_size": -1}]}},
            "channel.namespaces[0].history_size",
            "must be >= 0",
        ),
        (
            {"channel": {"namespaces": [{"name": "a", "force_recovery": True}]}},
            "channel.namespaces[0].force_recovery",
            "recovery needs history_size and history_ttl",
        ),
        (
            {
                "channel": {
                    "namespaces": [
                        {
                            "name": "a",
                            "history_size": 1,
                            "history_ttl": "2h",
                            "history_meta_ttl": "1h",
                        }
                    ]
                }
            },
            "channel.namespaces[0].history_meta_ttl",
            "must be >= history_ttl",
        ),
        (
            {"channel": {"namespaces": [{"name": "bad name"}]}},
            "channel.namespaces[0].name",
            "invalid namespace name",
        ),
        (
            {"channel": {"namespaces": [{}]}},
            "channel.namespaces[0].name",
            "invalid namespace name ''",
        ),
        (
            {"channel": {"namespaces": [{"name": "a"}, {"name": "a"}]}},
            "channel.namespaces[1].name",
            "duplicate namespace 'a'",
        ),
        (
            {"channel": {"namespace_boundary": "::"}},
            "channel.namespace_boundary",
            "must be a single character",
        ),
        ({"channel": {"max_length": 0}}, "channel.max_length", "must be >= 1"),
        (
            {"client": {"ping_interval": "5s", "pong_timeout": "5s"}},
            "client.pong_timeout",
            "must be shorter than ping_interval",
        ),
        ({"http": {"tls_cert": "cert.pem"}}, "http.tls_cert", "tls_cert and tls_key go together"),
        ({"api": {"port": 8000}}, "api.port", "must differ from http.port"),
        (
            {"client": {"token": {"audience": "a", "audience_regex": "b"}}},
            "client.token.audience_regex",
            "cannot be combined with audience",
        ),
        (
            {"client": {"subscription_token": {"issuer_regex": "("}}},
            "client.subscription_token.issuer_regex",
            "invalid regular expression",
        ),
        (
            {"client": {"token": {"hmac_previous_secret_key": "x" * 40}}},
            "client.token.hmac_previous_secret_key",
            "requires hmac_secret_key",
        ),
    ],
)
def test_invalid_values_name_their_key(data: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    errs = errors_of(info.value)
    assert any(p == path and message in m for p, m in errs), errs


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = """
[http]
port = "x"
prot = 1
[log]
level = "loud"
[[channel.namespaces]]
name = "ok"
history_ttl = "bad"
[[channel.namespaces]]
name = "bad name"
"""
    errs = load_error(write(tmp_path, "many.toml", text))
    assert errs == [
        ("http.port", "expected an integer, got the string 'x'"),
        ("http.prot", "unknown key; did you mean 'port'?"),
        (
            "channel.namespaces[0].history_ttl",
            "invalid duration 'bad' (use e.g. 500ms, 25s, 10m, 1h, 30d)",
        ),
        (
            "channel.namespaces[1].name",
            "invalid namespace name 'bad name' (1-64 of letters, digits, -, _, .)",
        ),
        ("log.level", "must be debug, info, warning or error"),
    ]
    with pytest.raises(ConfigErrors) as info:
        load_config(write(tmp_path, "many.toml", text), {})
    assert info.value.path == "http.port"
    assert str(info.value).count("\n") == 4


def test_single_error_keeps_the_plain_form() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"http": {"port": -1}})
    assert not isinstance(info.value, ConfigErrors)
    assert str(info.value) == "http.port: must be within 0..65535"


def test_env_errors_name_the_variable() -> None:
    errs = load_error(
        env={
            "RTCORE_HTTP__PORT": "x",
            "RTCORE_HTTP__PROT": "1",
            "RTCORE_CHANNEL__NAMESPACES": '[{"name": "a", "history_ttl": "soon"}]',
            "RTCORE_CLIENT__ALLOWED_ORIGINS__X": "1",
        }
    )
    assert (
        "http.port",
        "expected an integer, got 'x' (set by environment variable RTCORE_HTTP__PORT)",
    ) in errs
    assert (
        "http.prot",
        "unknown key; did you mean 'port'? (set by environment variable RTCORE_HTTP__PROT)",
    ) in errs
    assert (
        "channel.namespaces[0].history_ttl",
        "invalid duration 'soon' (use e.g. 500ms, 25s, 10m, 1h, 30d) "
        "(set by environment variable RTCORE_CHANNEL__NAMESPACES)",
    ) in errs
    assert any(
        p == "client.allowed_origins" and "RTCORE_CLIENT__ALLOWED_ORIGINS__X" in m for p, m in errs
    ), errs


def test_env_cross_field_and_json_errors() -> None:
    errs = load_error(env={"RTCORE_HTTP__TLS_CERT": "cert.pem"})
    assert errs == [
        (
            "http.tls_cert",
            "tls_cert and tls_key go together (set by environment variable RTCORE_HTTP__TLS_CERT)",
        )
    ]
    errs = load_error(env={"RTCORE_CHANNEL__NAMESPACES": "[{oops"})
    assert errs[0][0] == "channel.namespaces"
    assert "expected a JSON array in the environment value" in errs[0][1]
    assert "RTCORE_CHANNEL__NAMESPACES" in errs[0][1]
    errs = load_error(env={"RTCORE_CLIENT__TOKEN": "x"})
    assert errs[0][0] == "client.token" and "expected a JSON object" in errs[0][1]
    errs = load_error(env={"RTCORE_HTTP____PORT": "1"})
    assert errs == [
        ("RTCORE_HTTP____PORT", "malformed variable name (use RTCORE_<SECTION>__<KEY>)")
    ]


def test_file_error_is_not_blamed_on_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "f.toml", "[http]\nport = -1\n")
    errs = load_error(path, {"RTCORE_HTTP__ADDRESS": "0.0.0.0"})
    assert errs == [("http.port", "must be within 0..65535")]


def test_override_errors_name_the_command_line() -> None:
    errs = load_error(overrides={"http.port": 70000})
    assert errs == [("http.port", "must be within 0..65535 (set by the command line)")]
    errs = load_error(overrides={"log.level": "loud"})
    assert errs == [
        ("log.level", "must be debug, info, warning or error (set by the command line)")
    ]
    errs = load_error(overrides={"http..port": 1})
    assert errs == [("http..port", "malformed key path")]


# -- file errors -----------------------------------------------------------------------


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert load_error(missing) == [(str(missing), "no such file")]
    ini = write(tmp_path, "c.ini", "[http]\n")
    assert load_error(ini) == [
        (str(ini), "unknown configuration format; use a .toml, .yaml, .yml or .json file")
    ]
    assert load_error(tmp_path.joinpath("dir.toml")) == [
        (str(tmp_path / "dir.toml"), "no such file")
    ]
    (tmp_path / "d.toml").mkdir()
    assert load_error(tmp_path / "d.toml")[0][1] == "is a directory, not a configuration file"
    bad_toml = write(tmp_path, "b.toml", "[http]\nport = \n")
    ((path, message),) = load_error(bad_toml)
    assert path == str(bad_toml) and message.startswith("invalid TOML:") and "line 2" in message
    bad_yaml = write(tmp_path, "b.yaml", "http:\n  port: [1\n")
    ((path, message),) = load_error(bad_yaml)
    assert message.startswith("invalid YAML:") and "line" in message
    bad_json = write(tmp_path, "b.json", '{"http": {"port": 1,}}')
    ((path, message),) = load_error(bad_json)
    assert message.startswith("invalid JSON:") and "line 1, column" in message
    assert (
        load_error(write(tmp_path, "l.json", "[1, 2]"))[0][1]
        == "the top level must be a table/object, got a list"
    )
    assert load_error(write(tmp_path, "s.yaml", "just text"))[0][1] == (
        "the top level must be a table/object, got a string"
    )
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[log]\nlevel = "\xe9"\n')
    assert load_error(latin)[0][1].startswith("not UTF-8 text")


def test_tls_files_are_checked(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = load_config(None, {}, {"http.tls_cert": str(cert), "http.tls_key": str(key)})
    assert config.http.tls_cert == str(cert)
    errs = load_error(
        overrides={"http.tls_cert": str(tmp_path / "no.pem"), "http.tls_key": str(key)}
    )
    assert errs == [
        ("http.tls_cert", f"no such file: {tmp_path / 'no.pem'} (set by the command line)")
    ]
    junk = write(tmp_path, "junk.pem", "not a certificate")
    errs = load_error(overrides={"http.tls_cert": str(junk), "http.tls_key": str(key)})
    assert (
        errs[0][0] == "http.tls_cert" and "cannot load the certificate chain and key" in errs[0][1]
    )


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
    return cert_path, key_path


# -- durations and names ---------------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration(" 30d ") == 30 * 86400.0
    assert parse_duration(7) == 7.0
    for seconds, text in [
        (0, "0s"),
        (25, "25s"),
        (90, "90s"),
        (120, "2m"),
        (3600, "1h"),
        (2592000, "30d"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
    ]:
        assert format_duration(seconds) == text
        assert parse_duration(text) == seconds
    with pytest.raises(ConfigError):
        parse_duration("10 s x")


def test_env_var_names() -> None:
    assert env_var_name("http.port") == "RTCORE_HTTP__PORT"
    assert env_var_name("client.token.hmac_secret_key") == "RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY"


# -- docs ------------------------------------------------------------------------------


def _gen_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "tools" / "gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_config_docs"] = module
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_up_to_date() -> None:
    generated = _gen_module().render()
    committed = (DOCS / "config.md").read_text(encoding="utf-8")
    assert committed == generated, "docs/config.md is stale: run python tools/gen_config_docs.py"


def test_config_reference_lists_every_key() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for key in (
        "http.port",
        "client.token.hmac_secret_key",
        "client.subscription_token.jwks_url",
        "channel.namespaces[].history_ttl",
        "channel.without_namespace.presence",
        "api.error_mode",
        "metrics.enabled",
        "log.format",
        "client.reconnect_jitter",
        "http.shutdown_timeout",
    ):
        assert f"| `{key}` |" in text, key
    assert "`RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY`" in text
    assert "`jwks_public_endpoint`" in text


def test_generator_refuses_undocumented_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import rtcore.auth.config
    import rtcore.config

    gen = _gen_module()
    docs = dict(rtcore.config.FIELD_DOCS[rtcore.auth.config.TokenConfig])
    del docs["issuer"]
    monkeypatch.setitem(rtcore.config.FIELD_DOCS, rtcore.auth.config.TokenConfig, docs)
    with pytest.raises(SystemExit, match="client.token.issuer"):
        gen.render()


def _example_files() -> list[Path]:
    # Every configuration file under docs/examples/ (other docs may hold JSON that is no config).
    examples = DOCS / "examples"
    return sorted(p for p in examples.rglob("*") if p.suffix in (".toml", ".yaml", ".yml", ".json"))


def test_there_are_examples_in_every_format() -> None:
    assert {p.suffix for p in _example_files()} >= {".toml", ".yaml", ".json"}


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_example_in_docs_loads(path: Path) -> None:
    config = load_config(path, {})
    assert config.client.token.has_keys


def test_examples_agree_across_formats() -> None:
    examples = DOCS / "examples"
    configs = [load_config(examples / f"rtcore.{ext}", {}) for ext in ("toml", "yaml", "json")]
    assert configs[0] == configs[1] == configs[2]


def test_toml_blocks_in_the_server_docs_load() -> None:
    blocks = 0
    for doc in (DOCS / "cli.md", DOCS / "api.md", DOCS / "config.md"):
        text = doc.read_text(encoding="utf-8")
        for block in text.split("```toml\n")[1:]:
            body = block.split("```", 1)[0]
            # Snippets may name files of the reader's machine (TLS): the model must
            # accept them, the files themselves are not checked here.
            config_from_mapping(tomllib.loads(body))
            blocks += 1
    assert blocks >= 1


def test_starter_config_loads_with_fresh_secrets(tmp_path: Path) -> None:
    first = load_config(write(tmp_path, "a.toml", starter_config()), {})
    second = load_config(write(tmp_path, "b.toml", starter_config()), {})
    assert first.client.token.hmac_secret_key != second.client.token.hmac_secret_key
    assert first.api.key != second.api.key
    assert len(first.api.key) >= 32 and len(first.client.token.hmac_secret_key or "") >= 32
    assert first.metrics.enabled


# -- strict types ---------------------------------------------------------------------

STRICT = {
    "toml": """
[http]
port = "8000"
[client]
connect_rate_limit = "2.5"
allowed_origins = "https://a.example, https://b.example"
ping_interval = "20s"
[channel.without_namespace]
presence = "yes"
history_size = 10
history_ttl = 300
""",
    "yaml": """
http:
  port: "8000"
client:
  connect_rate_limit: "2.5"
  allowed_origins: "https://a.example, https://b.example"
  ping_interval: 20s
channel:
  without_namespace:
    presence: "yes"
    history_size: 10
    history_ttl: 300
""",
    "json": """{
  "http": {"port": "8000"},
  "client": {
    "connect_rate_limit": "2.5",
    "allowed_origins": "https://a.example, https://b.example",
    "ping_interval": "20s"
  },
  "channel": {
    "without_namespace": {"presence": "yes", "history_size": 10, "history_ttl": 300}
  }
}""",
}


@pytest.mark.parametrize("fmt", sorted(STRICT))
def test_strings_are_not_numbers_or_switches_in_files(tmp_path: Path, fmt: str) -> None:
    errs = load_error(write(tmp_path, f"s.{fmt}", STRICT[fmt]))
    assert errs == [
        ("http.port", "expected an integer, got the string '8000' (write 8000 without quotes)"),
        (
            "client.connect_rate_limit",
            "expected a number, got the string '2.5' (write 2.5 without quotes)",
        ),
        (
            "client.allowed_origins",
            "expected a list of strings, got the string 'https://a.example, https://b.example' "
            '(write ["https://a.example", "https://b.example"])',
        ),
        (
            "channel.without_namespace.presence",
            "expected true or false, got the string 'yes' (write true without quotes)",
        ),
    ]


def test_other_wrong_types_name_key_type_and_value() -> None:
    cases = [
        ({"http": {"port": "http"}}, "http.port", "expected an integer, got the string 'http'"),
        ({"http": {"port": [80]}}, "http.port", "expected an integer, got a list"),
        ({"log": {"level": 3}}, "log.level", "expected a string, got an integer"),
        (
            {"websocket": {"compression": "maybe"}},
            "websocket.compression",
            "expected true or false, got the string 'maybe'",
        ),
        (
            {"client": {"connect_rate_limit": "fast"}},
            "client.connect_rate_limit",
            "expected a number, got the string 'fast'",
        ),
    ]
    for data, path, message in cases:
        with pytest.raises(ConfigError) as info:
            config_from_mapping(data)
        assert errors_of(info.value) == [(path, message)]


def test_environment_values_are_text_and_converted() -> None:
    env = {
        "RTCORE_HTTP__PORT": "8000",
        "RTCORE_CLIENT__CONNECT_RATE_LIMIT": "2.5",
        "RTCORE_CLIENT__ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "RTCORE_CHANNEL__WITHOUT_NAMESPACE__PRESENCE": "yes",
        "RTCORE_WEBSOCKET__COMPRESSION": "off",
    }
    config = load_config(None, env)
    assert config.http.port == 8000
    assert config.client.connect_rate_limit == 2.5
    assert config.client.allowed_origins == ["https://a.example", "https://b.example"]
    assert config.channel.without_namespace.presence is True
    assert config.websocket.compression is False


def test_duration_strings_stay_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "d.toml", '[client]\nping_interval = "1m"\npong_timeout = "250ms"\n')
    config = load_config(path, {})
    assert (config.client.ping_interval, config.client.pong_timeout) == (60.0, 0.25)


# -- lines, "did you mean", one error per mistake ----------------------------------------

LINES = {
    "toml": (
        """# line 1
[http]
port = "x"
prot = 1

[[channel.namespaces]]
name = "ok"

[[channel.namespaces]]
name = "chat"
history_ttl = "soon"
""",
        {"http.port": 3, "http.prot": 4, "channel.namespaces[1].history_ttl": 11},
    ),
    "yaml": (
        """# line 1
http:
  port: x
  prot: 1
channel:
  namespaces:
    - name: ok
    - name: chat

      history_ttl: soon
""",
        {"http.port": 3, "http.prot": 4, "channel.namespaces[1].history_ttl": 10},
    ),
    "json": (
        """{
  "http": {
    "port": "x",
    "prot": 1
  },
  "channel": {"namespaces": [
    {"name": "ok"},
    {"name": "chat",
     "history_ttl": "soon"}
  ]}
}""",
        {"http.port": 3, "http.prot": 4, "channel.namespaces[1].history_ttl": 9},
    ),
}


@pytest.mark.parametrize("fmt", sorted(LINES))
def test_every_error_has_its_line(tmp_path: Path, fmt: str) -> None:
    text, lines = LINES[fmt]
    path = write(tmp_path, f"lines.{fmt}", text)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, {})
    errors = info.value.errors
    assert all(isinstance(e, LocatedConfigError) for e in errors)
    assert {e.path: e.line for e in errors if isinstance(e, LocatedConfigError)} == lines
    assert {e.file for e in errors if isinstance(e, LocatedConfigError)} == {str(path)}
    first = errors[0]
    assert str(first) == f"{path}:3: http.port: {first.message}"
    assert str(info.value).splitlines()[0] == str(first)


def test_lines_of_absent_keys_and_of_other_sources(tmp_path: Path) -> None:
    text = '[http]\nport = 8000\n\n[[channel.namespaces]]\nname = "a"\nhistory_size = 5\n'
    path = write(tmp_path, "x.toml", text)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, {"RTCORE_LOG__LEVEL": "loud"})
    by_path = {e.path: e for e in info.value.errors}
    # history_ttl is absent: the error is on history_size's line.
    ns = by_path["channel.namespaces[0].history_size"]
    assert isinstance(ns, LocatedConfigError) and ns.line == 6
    # A value from the environment has no file line; it names its variable.
    level = by_path["log.level"]
    assert not isinstance(level, LocatedConfigError)
    assert level.message.endswith("(set by environment variable RTCORE_LOG__LEVEL)")


def test_key_lines_of_tricky_toml() -> None:
    text = '''# comment with [brackets] and key = "value"
[http]
address = "a#b"   # a comment
[client.token]
hmac_secret_key = """multi
fake = "line"
"""
[[channel.namespaces]]
name = "a"
[channel.namespaces.proxy]
x = 1
[[channel.namespaces]]
"name" = 'b'
history = { size = 1, ttl = "5m" }
channel.max_length = 10
list = [
  {k = 1},
  {k = 2},
]
'''
    lines = key_lines(text, "toml")
    assert lines["http.address"] == 3
    assert lines["client.token.hmac_secret_key"] == 5
    assert "client.token.fake" not in lines
    assert lines["channel.namespaces[0].name"] == 9
    assert lines["channel.namespaces[0].proxy.x"] == 11
    assert lines["channel.namespaces[1]"] == 12
    assert lines["channel.namespaces[1].name"] == 13
    assert lines["channel.namespaces[1].history.ttl"] == 14
    assert lines["channel.namespaces[1].channel.max_length"] == 15
    assert lines["channel.namespaces[1].list[1].k"] == 18
    assert line_of_path("channel.namespaces[1].nothing.here", lines) == 12
    assert line_of_path("nothing", lines) is None


def test_did_you_mean_and_where_a_key_lives() -> None:
    cases = [
        ({"http": {"prot": 1}}, "http.prot", "unknown key; did you mean 'port'?"),
        (
            {"channel": {"namespaces": [{"name": "a", "histroy_size": 1}]}},
            "channel.namespaces[0].histroy_size",
            "unknown key; did you mean 'history_size'?",
        ),
        (
            {"client": {"token": {"jwks_public_endpont": "https://x"}}},
            "client.token.jwks_public_endpont",
            "unknown key; did you mean 'jwks_public_endpoint'?",
        ),
        (
            {"client": {"hmac_secret_key": "x"}},
            "client.hmac_secret_key",
            "unknown key here; a key of this name is client.token.hmac_secret_key or "
            "client.subscription_token.hmac_secret_key",
        ),
    ]
    for data, path, message in cases:
        with pytest.raises(ConfigError) as info:
            config_from_mapping(data)
        assert errors_of(info.value) == [(path, message)]
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"metrics": {"zzz": 1}})
    assert errors_of(info.value) == [("metrics.zzz", "unknown key (the keys here: enabled)")]


def test_an_unknown_key_gives_one_error_not_two(tmp_path: Path) -> None:
    # history_ttl without history_size is an error of its own, but here the size
    # is there, misspelt: only the misspelling is reported.
    text = '[[channel.namespaces]]\nname = "chat"\nhistroy_size = 10\nhistory_ttl = "5m"\n'
    errs = load_error(write(tmp_path, "one.toml", text))
    assert errs == [
        ("channel.namespaces[0].histroy_size", "unknown key; did you mean 'history_size'?")
    ]


# -- Centrifugo v6 configurations -------------------------------------------------------

# What `centrifugo genconfig` writes (v6), in its three formats.
CENTRIFUGO_GENCONFIG = {
    "json": """{
  "client": {
    "token": {
      "hmac_secret_key": "bbe7d157-a253-4094-9759-06a8236543f9"
    },
    "allowed_origins": []
  },
  "admin": {
    "enabled": false,
    "password": "d0683813-0916-4c49-979f-0e08a686b727",
    "secret": "4b9c5f5a-1d0e-4a52-8a4e-3f0b4b1e4a18"
  },
  "http_api": {
    "key": "d7627bb6-2292-4911-82e1-615c0ed3eebb"
  }
}
""",
    "toml": """[client]
  allowed_origins = []

  [client.token]
    hmac_secret_key = "bbe7d157-a253-4094-9759-06a8236543f9"

[admin]
  enabled = false
  password = "d0683813-0916-4c49-979f-0e08a686b727"
  secret = "4b9c5f5a-1d0e-4a52-8a4e-3f0b4b1e4a18"

[http_api]
  key = "d7627bb6-2292-4911-82e1-615c0ed3eebb"
""",
    "yaml": """client:
  token:
    hmac_secret_key: "bbe7d157-a253-4094-9759-06a8236543f9"
  allowed_origins: []

admin:
  enabled: false
  password: "d0683813-0916-4c49-979f-0e08a686b727"
  secret: "4b9c5f5a-1d0e-4a52-8a4e-3f0b4b1e4a18"

http_api:
  key: "d7627bb6-2292-4911-82e1-615c0ed3eebb"
""",
}


def _has_admin_section() -> bool:
    return model_key("admin.enabled") is not None


@pytest.mark.parametrize("fmt", sorted(CENTRIFUGO_GENCONFIG))
def test_a_centrifugo_file_names_the_rtcore_keys(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, f"config.{fmt}", CENTRIFUGO_GENCONFIG[fmt])
    errs = load_error(path)
    assert ("http_api.key", "unknown key: Centrifugo's http_api.key is api.key in rtcore") in errs
    if not _has_admin_section():
        assert (
            "admin.password",
            "unknown key: a Centrifugo key with no rtcore equivalent: no such key in this "
            "version of rtcore",
        ) in errs
    # client.token.hmac_secret_key and client.allowed_origins are rtcore keys too.
    assert not any(p.startswith("client.") for p, _ in errs)
    assert all("Centrifugo" in m for _, m in errs)


def test_centrifugo_keys_in_known_sections_get_hints() -> None:
    data = {
        "client": {"connection_rate_limit": 10, "insecure": True},
        "websocket": {"disabled": True},
        "channel": {"namespaces": [{"name": "a", "channel_regex": "^[a-z]+$"}]},
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert errors_of(info.value) == [
        (
            "client.connection_rate_limit",
            "unknown key: Centrifugo's client.connection_rate_limit is client.connect_rate_limit "
            "in rtcore",
        ),
        (
            "client.insecure",
            "unknown key: a Centrifugo key with no rtcore equivalent: not implemented in rtcore "
            "(allow_anonymous_connect_without_token and the allow_*_for_anonymous channel "
            "options open what is needed)",
        ),
        (
            "websocket.disabled",
            "unknown key: Centrifugo's websocket.disabled is websocket.enabled in rtcore "
            "(the opposite value)",
        ),
        (
            "channel.namespaces[0].channel_regex",
            "unknown key: a Centrifugo key with no rtcore equivalent: not implemented in rtcore "
            "(channel names are checked for length and printable characters)",
        ),
    ]


def test_go_durations() -> None:
    assert parse_go_duration("1m30s") == 90.0
    assert parse_go_duration("720h") == 2592000.0
    assert parse_go_duration("1.5s") == 1.5
    assert parse_go_duration("500ms") == 0.5
    assert parse_go_duration("0") == 0.0
    assert parse_go_duration(-1) == -1e-9
    assert parse_go_duration(2_000_000_000) == 2.0  # JSON numbers are nanoseconds
    for bad in ("5 minutes", "1x", "", "1h30", True):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


CENTRIFUGO_FULL = {
    "http_server": {
        "address": "0.0.0.0",
        "port": "9000",
        "internal_port": "9001",
        "tls": {"enabled": True, "cert_pem": "/etc/c/cert.pem", "key_pem": "/etc/c/key.pem"},
        "tls_autocert": {"enabled": True},
    },
    "log": {"level": "warn", "file": "/var/log/centrifugo.log"},
    "engine": {
        "type": "redis",
        "redis": {"address": ["redis-1:6379", "redis://redis-2:6379"], "password": "pw", "db": 2},
    },
    "client": {
        "token": {"hmac_secret_key": SECRET, "jwks_public_endpoint": ""},
        "subscription_token": {"enabled": False, "hmac_secret_key": "unused"},
        "allowed_origins": ["https://app.example"],
        "ping_interval": -1,
        "pong_timeout": -1,
        "expired_close_delay": "1m30s",
        "connection_rate_limit": 50,
        "proxy": {
            "connect": {
                "enabled": True,
                "endpoint": "http://backend/connect",
                "timeout": "1500ms",
                "grpc_metadata": ["x"],
                "http": {"static_headers": [{"key": "X-Env", "value": "prod"}]},
            }
        },
    },
    "channel": {
        "history_meta_ttl": "168h",
        "without_namespace": {"presence": True, "shared_poll": {"mode": "x"}},
        "namespaces": [
            {"name": "chat", "history_size": 10, "history_ttl": "300s", "force_recovery": True},
            {"name": "feed", "history_meta_ttl": "24h", "channel_regex": "x"},
        ],
    },
    "proxies": [{"name": "billing", "endpoint": "http://billing/", "timeout": "2s"}],
    "http_api": {"key": "api-key", "disabled": False, "external": True},
    "websocket": {"disabled": False, "message_size_limit": 131072, "write_timeout": "1s"},
    "prometheus": {"enabled": True},
    "node": {"name": "node-a"},
    "consumers": [
        {
            "name": "outbox",
            "enabled": True,
            "type": "postgresql",
            "postgresql": {"dsn": "postgresql://x/db", "outbox_table_name": "outbox"},
        },
        {"name": "events", "enabled": True, "type": "kafka", "kafka": {"brokers": ["k:9092"]}},
    ],
    "swagger": {"enabled": True},
    "not_a_key": 1,
}


def test_centrifugo_import_converts_and_lists_the_rest() -> None:
    result = import_centrifugo(CENTRIFUGO_FULL)
    data = result.data
    assert data["http"] == {
        "address": "0.0.0.0",
        "port": 9000,
        "tls_cert": "/etc/c/cert.pem",
        "tls_key": "/etc/c/key.pem",
    }
    assert data["api"] == {"port": 9001, "key": "api-key", "enabled": True}
    assert data["log"] == {"level": "warning"}
    assert data["engine"] == {
        "type": "redis",
        "redis_address": ["redis://:pw@redis-1:6379/2", "redis://redis-2:6379"],
    }
    client = data["client"]
    assert "subscription_token" not in client
    assert (client["ping_interval"], client["pong_timeout"]) == ("0s", "0s")
    assert client["expired_close_delay"] == "90s"
    assert client["connect_rate_limit"] == 50
    assert client["proxy"]["connect"] == {
        "enabled": True,
        "endpoint": "http://backend/connect",
        "timeout": "1500ms",
        "http": {"static_headers": {"X-Env": "prod"}},
    }
    channel = data["channel"]
    assert channel["without_namespace"] == {"presence": True, "history_meta_ttl": "7d"}
    assert channel["namespaces"][0]["history_meta_ttl"] == "7d"
    assert channel["namespaces"][0]["history_ttl"] == "5m"
    assert channel["namespaces"][1] == {"name": "feed", "history_meta_ttl": "1d"}
    assert data["proxy"] == {
        "named": [{"name": "billing", "endpoint": "http://billing/", "timeout": "2s"}]
    }
    assert data["websocket"] == {"enabled": True, "message_size_limit": 131072}
    assert data["metrics"] == {"enabled": True}
    assert data["client"]["node_name"] == "node-a"
    assert [c["name"] for c in data["consumers"]] == ["outbox"]
    assert data["consumers"][0]["type"] == "postgresql"
    dropped = dict(result.dropped)
    for path in (
        "http_server.tls_autocert",
        "log.file",
        "client.proxy.connect.grpc_metadata",
        "channel.without_namespace.shared_poll",
        "channel.namespaces[1].channel_regex",
        "http_api.external",
        "websocket.write_timeout",
        "consumers[1]",
        "consumers[1].kafka",
        "swagger",
        "client.subscription_token",
        "not_a_key",
    ):
        assert path in dropped, path
    assert dropped["not_a_key"] == "not a Centrifugo v6 key"
    assert ("http_api.key", "api.key") in result.renamed
    # What was converted loads (TLS files are not read here).
    config = config_from_mapping(data)
    assert config.engine.redis_address[0] == "redis://:pw@redis-1:6379/2"


def test_centrifugo_import_of_a_map_namespace() -> None:
    ns = {
        "name": "board",
        "subscription_type": "map",
        "map_clients_presence_channel_prefix": "clients:",
        "map": {
            "mode": "recoverable",
            "key_ttl": "60s",
            "stream_size": 50,
            "allow_publish_for_subscriber": True,
            "client_key": "client_id",
            "publish_proxy_enabled": True,
        },
    }
    result = import_centrifugo({"channel": {"namespaces": [ns]}})
    (board,) = result.data["channel"]["namespaces"]
    assert board["subscription_type"] == "map"
    assert board["map_clients_presence_channel_prefix"] == "clients:"
    assert board["map"] == {
        "mode": "recoverable",
        "key_ttl": "1m",
        "stream_size": 50,
        "allow_publish_for_subscriber": True,
        "client_key": "client_id",
    }
    assert "channel.namespaces[0].map.publish_proxy_enabled" in dict(result.dropped)
    opts = config_from_mapping(result.data).channel.namespaces[0].map
    assert (opts.mode, opts.key_ttl, opts.stream_len) == ("recoverable", 60.0, 50)


def test_centrifugo_values_rtcore_cannot_take_are_listed() -> None:
    result = import_centrifugo(
        {"http_server": {"tls": {"enabled": True, "cert_pem": "-----BEGIN CERTIFICATE-----"}}}
    )
    assert "http" not in result.data or "tls_cert" not in result.data["http"]
    dropped = dict(result.dropped)
    assert dropped["http_server.tls.cert_pem"].startswith("rtcore reads PEM files")
    result = import_centrifugo({"channel": {"namespaces": [{"name": "a", "history_ttl": "soon"}]}})
    assert dropped_paths(result) == ["channel.namespaces[0].history_ttl"]


def dropped_paths(result: Any) -> list[str]:
    return [path for path, _ in result.dropped]


def test_the_centrifugo_table_names_real_rtcore_keys() -> None:
    for entry in KEY_MAP.values():
        assert entry.centrifugo == entry.centrifugo.strip() and " " not in entry.centrifugo
        if entry.rtcore is None:
            assert entry.note, entry.centrifugo
            continue
        if entry.rtcore.startswith("admin.") and not _has_admin_section():
            continue  # the admin web UI's section comes with the UI
        assert model_key(entry.rtcore) is not None, (entry.centrifugo, entry.rtcore)
    # Keys that rtcore spells like Centrifugo are the same keys.
    same = [e for e in KEY_MAP.values() if e.rtcore == e.centrifugo]
    assert len(same) > 100


def test_a_centrifugo_key_that_rtcore_gains_is_that_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import rtcore.config.centrifugo as centrifugo

    path = "channel.without_namespace.delta_publish"
    assert KEY_MAP[path].rtcore is None
    real = centrifugo.model_key
    monkeypatch.setattr(
        centrifugo, "model_key", lambda p: real("http.port") if p == path else real(p)
    )
    entry = centrifugo.lookup(path)
    assert entry is not None and entry.rtcore == path
    data = {"channel": {"without_namespace": {"delta_publish": True}}}
    assert import_centrifugo(data).data == data


# -- writing configuration files ------------------------------------------------------


def _parse(text: str, fmt: str) -> Any:
    import yaml

    return {"toml": tomllib.loads, "yaml": yaml.safe_load, "json": json.loads}[fmt](text)


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_default_document_is_the_defaults(fmt: str) -> None:
    text = render(default_document(["header"]), fmt)
    assert config_from_mapping(_parse(text, fmt)) == Config()
    if fmt != "json":
        assert "# header" in text and "# TCP port." in text


def test_default_env_is_the_defaults() -> None:
    import shlex

    env = {}
    for line in default_env():
        if line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        (env[name],) = shlex.split(value) or [""]
    assert "RTCORE_HTTP__PORT" in env and "RTCORE_CHANNEL__NAMESPACES" in env
    assert load_config(None, env) == Config()


def test_documents_round_trip_with_comments() -> None:
    doc = Document(
        {
            "a": {"x": 1, "f": 0.5, "s": 'q"\\\x7f\u2028é', "l": ["a", "b"], "e": {}},
            "t": [{"name": "one", "sub": {"k": True}}, {"name": "two"}],
            "b": {"u": None},
        },
        {"": ["top"], "a": ["about a"], "t[1]": ["the second"], "a.x": ["x!"]},
        {"a": [("port", 9000, "an example")]},
    )
    for fmt in ("toml", "yaml", "json"):
        text = render(doc, fmt)
        expected = {k: v for k, v in doc.data.items() if k != "b"} | {"b": {}}
        assert _parse(text, fmt) == expected, (fmt, text)
        if fmt != "json":
            for comment in ("# top", "# about a", "# the second", "# x!", "an example"):
                assert comment in text, (fmt, comment)


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_starter_config_in_every_format(tmp_path: Path, fmt: str) -> None:
    text = starter_config("s" * 43, "k" * 43, fmt)
    config = load_config(write(tmp_path, f"start.{fmt}", text), {})
    assert config == load_config(
        write(tmp_path, "ref.toml", starter_config("s" * 43, "k" * 43)), {}
    )
    assert [ns.name for ns in config.channel.namespaces] == ["chat"]
    if fmt != "json":
        assert "rtcore gentoken -u <user id>" in text


def test_api_examples_use_channels_of_the_starter_config() -> None:
    import re

    from rtcore.engine.channels import ChannelRules

    config = config_from_mapping(tomllib.loads(starter_config()))
    rules = ChannelRules(config.channel)
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    channels = set(re.findall(r'"channel": "([^"*]+)"', text))
    channels |= set(re.findall(r'channel="([^"*]+)"', text))
    for listed in re.findall(r"channels=\[([^\]]*)\]", text):
        channels |= set(re.findall(r'"([^"]+)"', listed))
    assert "chat:room" in channels
    for channel in channels:
        opts = rules.options(channel)
        assert opts is not None, f"docs/api.md uses {channel!r}, unknown in the starter config"
        assert opts.history_enabled and opts.presence, channel


# -- docs/centrifugo.md and docs/reference.md ----------------------------------------------


def test_centrifugo_page_is_up_to_date() -> None:
    current = (DOCS / "centrifugo.md").read_text(encoding="utf-8")
    assert _gen_module().render_centrifugo(current) == current, (
        "docs/centrifugo.md is stale: run python tools/gen_config_docs.py"
    )


def _reference_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "tools" / "gen_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_reference"] = module
    spec.loader.exec_module(module)
    return module


def test_embedding_reference_is_up_to_date() -> None:
    import rtcore

    committed = (DOCS / "reference.md").read_text(encoding="utf-8")
    assert committed == _reference_module().render(), (
        "docs/reference.md is stale: run python tools/gen_reference.py"
    )
    for name in rtcore.__all__:
        assert f"### `rtcore.{name}`" in committed, name
    assert "async def publish(" in committed and "-> tuple[StreamPosition, bool]" in committed
    assert "| `on_rpc` | `RPCEvent` |" in committed


def test_the_reference_example_runs_and_shuts_down(tmp_path: Path) -> None:
    import asyncio
    import socket

    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/reference.md", "exec"), namespace)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        import websockets

        stop = asyncio.Event()
        task = asyncio.ensure_future(namespace["run_node"](stop, port))
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        for _ in range(200):
            try:
                ws = await websockets.connect(url, additional_headers={"X-User": "ann"})
                break
            except OSError:
                await asyncio.sleep(0.02)
        await ws.send(json.dumps({"id": 1, "connect": {}}))
        assert "connect" in json.loads(await ws.recv())
        stop.set()
        await asyncio.wait_for(task, 10)
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 3001

    asyncio.run(main())
