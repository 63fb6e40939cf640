"""Lawful by default: no complete legal declaration, no camera and no alert."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from safecity_bridge.cli import REFUSAL_EXIT
from safecity_bridge.runner import NoCameras
from safecity_bridge.service import BridgeService, DeclarationMissing
from safecity_bridge.settings import LegalDeclaration, SafeSettings, demo_declaration
from sonopolis.cli import app


def test_bridge_command_refuses_without_a_declaration(tmp_path, monkeypatch):
    for k in ("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS", "SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", "SONOPOLIS_SAFE_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    result = CliRunner().invoke(app, ["bridge", "--validate-config"])
    assert result.exit_code == REFUSAL_EXIT
    assert "refuses to steer cameras or deliver alerts" in result.output
    assert "legal_basis" in result.output and "dpia_reference" in result.output and "2104478" in result.output


def test_only_the_dpia_missing_is_still_refused(monkeypatch):
    monkeypatch.setenv("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS", "Loi n° 2099-1 art. 3 (hypothetical)")
    monkeypatch.delenv("SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", raising=False)
    result = CliRunner().invoke(app, ["bridge", "--validate-config"])
    assert result.exit_code == REFUSAL_EXIT and "dpia_reference" in result.output and "legal_basis (" not in result.output


def test_complete_declaration_and_demo_declaration_are_accepted(monkeypatch):
    monkeypatch.setenv("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS", "Loi n° 2099-1 art. 3 (hypothetical)")
    monkeypatch.setenv("SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", "AIPD-2099-07")
    assert CliRunner().invoke(app, ["bridge", "--validate-config"]).exit_code == 0
    monkeypatch.delenv("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS")
    demo = CliRunner().invoke(app, ["bridge", "--validate-config", "--demo-declaration"])
    assert demo.exit_code == 0 and "FICTITIOUS" in demo.output


def test_service_itself_refuses_to_exist_without_declaration():
    settings = SafeSettings(db={"dsn": "postgresql://x@127.0.0.1/none"})
    with pytest.raises(DeclarationMissing, match="no complete legal declaration"):
        BridgeService(settings, NoCameras(), httpx.AsyncClient())


def test_demo_declaration_refuses_real_cameras():
    cam = {"id": "cam-1", "host": "10.1.2.3", "username": "u", "password": "p", "latitude": 45.0, "longitude": 4.0}
    settings = SafeSettings(declaration=demo_declaration(), cameras=[cam], db={"dsn": "postgresql://x@127.0.0.1/none"})
    with pytest.raises(DeclarationMissing, match="simulated cameras"):
        BridgeService(settings, NoCameras(), httpx.AsyncClient())


def test_blank_text_is_no_declaration():
    """Spaces passed the length checks once, and enabled the safe path."""
    blank = LegalDeclaration(legal_basis=" " * 10, dpia_reference="   ", declared_by="  ")
    assert not blank.complete
    assert len(blank.missing()) == 2
    padded = LegalDeclaration(legal_basis="  Arrêté n°2027-001  ", dpia_reference=" AIPD-7 ")
    assert padded.complete and padded.legal_basis == "Arrêté n°2027-001" and padded.dpia_reference == "AIPD-7"


@pytest.mark.parametrize("host", ["127.cams.example.org", "127.0.0.1.nip.io", "localhost.example.org"])
def test_demo_declaration_refuses_camera_names_that_only_look_local(host):
    cam = {"id": "cam-1", "host": host, "username": "u", "password": "p", "latitude": 45.0, "longitude": 4.0}
    settings = SafeSettings(declaration=demo_declaration(), cameras=[cam], db={"dsn": "postgresql://x@127.0.0.1/none"})
    with pytest.raises(DeclarationMissing, match="simulated cameras"):
        BridgeService(settings, NoCameras(), httpx.AsyncClient())


def test_retention_above_30_days_is_refused_at_load():
    from common.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="at most 30 days"):
        load_settings(SafeSettings, retention_days=45)
    assert load_settings(SafeSettings).retention_days == 15


def test_hash_password_command_never_echoes_the_password():
    out = subprocess.run([sys.executable, "-m", "sonopolis.cli", "bridge", "--hash-password"], input="a long enough password\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("$argon2id$") and "long enough" not in out.stdout


@pytest.mark.parametrize(
    ("overrides", "what"),
    [
        ({"webhooks": [{"name": "vms", "url": "https://vms.city.example/hook", "secret": "0123456789abcdef-x"}]}, "webhook vms"),
        ({"mqtt": {"host": "safe-broker.city.example"}}, "safe broker"),
        ({"http_host": "0.0.0.0"}, "console"),
    ],
)
def test_demo_declaration_delivers_no_alert_off_this_machine(overrides, what):
    """The fictitious declaration once checked cameras only: with none configured, it read
    real events from a city's broker and delivered alerts to its VMS and control room,
    with no legal basis. Under it, every way in and out stays on this machine."""
    settings = SafeSettings(declaration=demo_declaration(), db={"dsn": "postgresql://x@127.0.0.1/none"}, **overrides)
    with pytest.raises(DeclarationMissing, match=what):
        BridgeService(settings, NoCameras(), httpx.AsyncClient())


def test_demo_declaration_on_this_machine_is_accepted():
    settings = SafeSettings(declaration=demo_declaration(), db={"dsn": "postgresql://x@127.0.0.1/none"}, http_host="127.0.0.1",
                            mqtt={"host": "localhost"}, webhooks=[{"name": "vms", "url": "http://127.0.0.1:9000/hook", "secret": "0123456789abcdef-x"}])
    assert BridgeService(settings, NoCameras(), httpx.AsyncClient()).settings.declaration.fictitious


@pytest.mark.parametrize("name", ["bridge", "Bridge", " bridge"])
def test_no_operator_may_act_under_the_bridges_own_journal_name(name):
    """The journal names the bridge's own actions "bridge" and each operator's by name: an
    account called "bridge" made an operator's legal hold read as an automatic action."""
    from pydantic import ValidationError

    from safecity_bridge.console.auth import hash_password

    with pytest.raises(ValidationError, match="reserved"):
        SafeSettings(operators=[{"name": name, "password_hash": hash_password("correct horse battery")}])
