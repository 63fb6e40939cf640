"""What an IT team types into configuration: every misspelt key is named, no side's defaults are lost."""

from __future__ import annotations

import pytest

from common.config import ConfigError, load_settings
from detectors.settings import EdgeSettings
from safecity_bridge.settings import SafeSettings
from smart.settings import SmartSettings


def test_a_misspelt_nested_key_is_an_error_that_names_it(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Only top-level keys were checked: `[db] dns=` and `[mqtt] tls_ca_flie=` (TLS silently off) were accepted."""
    smart = tmp_path / "smart.toml"
    smart.write_text('[db]\ndns = "postgresql://x"\n[ingest]\nmetrics_prot = 1\n')
    with pytest.raises(ConfigError) as err:
        load_settings(SmartSettings, smart)
    assert "db.dns" in str(err.value) and "ingest.metrics_prot" in str(err.value)
    safe = tmp_path / "safe.toml"
    safe.write_text('[mqtt]\ntls_ca_flie = "/run/secrets/ca.crt"\n')
    with pytest.raises(ConfigError, match="mqtt.tls_ca_flie"):
        load_settings(SafeSettings, safe)
    monkeypatch.setenv("SONOPOLIS_SMART_INGEST__METRICS_PROT", "9999")
    with pytest.raises(ConfigError, match="METRICS_PROT"):
        load_settings(SmartSettings)


def test_setting_one_broker_key_keeps_that_sides_other_defaults(monkeypatch):  # type: ignore[no-untyped-def]
    """The safe side's port became the smart broker's 1883 as soon as its client id was set."""
    monkeypatch.setenv("SONOPOLIS_SAFE_MQTT__CLIENT_ID", "bridge-1")
    monkeypatch.setenv("SONOPOLIS_SAFE_MQTT__USERNAME", "svc.bridge")
    safe = load_settings(SafeSettings)
    assert (safe.mqtt.host, safe.mqtt.port, safe.mqtt.client_id) == ("127.0.0.1", 1884, "bridge-1")
    monkeypatch.setenv("SONOPOLIS_SMART_INGEST__MQTT__PORT", "1999")
    ingest = load_settings(SmartSettings).ingest
    assert (ingest.mqtt.port, ingest.mqtt.client_id) == (1999, "sonopolis-ingest")
    edge = EdgeSettings(sensor_id="s-1", safe_mqtt={"host": "safe.example", "client_id": "edge-s-1-safe"})
    assert edge.safe_mqtt is not None and edge.safe_mqtt.port == 1884
    assert EdgeSettings(sensor_id="s-1", smart_mqtt={"port": 1999}).smart_mqtt.client_id == "sonopolis-edge-smart"


def test_a_directory_given_as_the_configuration_file_is_named(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read the configuration file: IsADirectoryError"):
        load_settings(SmartSettings, tmp_path)


def test_a_list_written_without_json_in_the_environment_says_how_to_write_it(monkeypatch):  # type: ignore[no-untyped-def]
    """pydantic-settings raised its own SettingsError, a traceback out of every command, naming only `api`."""
    monkeypatch.setenv("SONOPOLIS_SMART_API__TRUSTED_PROXIES", "172.30.20.10")
    with pytest.raises(ConfigError) as err:
        load_settings(SmartSettings)
    assert '"api"' in str(err.value) and "must be JSON" in str(err.value)
    monkeypatch.setenv("SONOPOLIS_SMART_API__TRUSTED_PROXIES", '["172.30.20.10"]')
    assert [str(n) for n in load_settings(SmartSettings).api.trusted_proxies] == ["172.30.20.10/32"]
