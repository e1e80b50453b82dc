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
    config_from_mapping,
    env_var_name,
    format_duration,
    load_config,
    parse_duration,
)
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
        ({"htp": {}}, "htp", "unknown key"),
        ({"http": {"prot": 1}}, "http.prot", "unknown key"),
        (
            {"channel": {"namespaces": [{"name": "a"}, {"name": "b", "histroy_size": 1}]}},
            "channel.namespaces[1].histroy_size",
            "unknown key",
        ),
        ({"client": {"token": {"section": "x"}}}, "client.token.section", "unknown key"),
        ({"http": 5}, "http", "expected a table/object, got an integer"),
        ({"http": {"port": "eighty"}}, "http.port", "expected an integer, got 'eighty'"),
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
        ("http.port", "expected an integer, got 'x'"),
        ("http.prot", "unknown key"),
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
    assert ("http.prot", "unknown key (set by environment variable RTCORE_HTTP__PROT)") in errs
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
