"""``sonopolis check-edge``: a gateway's fidelity verdict and its cost per sensor, measured on it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from detectors.cli import ANOTHER_MODEL_EXIT
from detectors.gateway_check import GatewayReport, levels_rtf, probe_audio, sensors_per_core
from sonopolis import cli

SUMMARY = re.compile(r"^check-edge: faithful=(yes|NO) levels_rtf=[\d.]+ classifier_rtf=([\d.]+|off) sensors_per_core=\d+$")


def _check(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> Result:
    """``sonopolis check-edge --seconds 2 ARGS`` with only ``env`` of the edge settings (none of this machine's)."""
    for key in [k for k in os.environ if k.startswith("SONOPOLIS_EDGE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(cli.app, ["check-edge", "--seconds", "2", *args])


def _summary(result: Result) -> str:
    last = result.stdout.strip().splitlines()[-1]
    assert SUMMARY.match(last), last
    return last


def test_a_gateway_computing_the_shipped_model_passes_and_says_what_one_core_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _check(monkeypatch)
    assert result.exit_code == 0, result.output
    last = _summary(result)
    assert "faithful=yes" in last and "computes the model its card validated" in result.stdout
    levels, crtf, per_core = (float(v) for v in re.findall(r"=([\d.]+)", last))
    assert per_core >= 1 and abs(per_core - sensors_per_core(levels, crtf)) <= 1  # the printed figures are rounded


@pytest.mark.usefixtures("cpu_off_by_0_3")
def test_a_gateway_computing_another_model_fails_with_its_own_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _check(monkeypatch)
    assert result.exit_code == ANOTHER_MODEL_EXIT == 3
    assert "ANOTHER MODEL" in result.stdout and "faithful=NO" in _summary(result)


def test_levels_only_gateways_are_measured_without_a_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _check(monkeypatch, SONOPOLIS_EDGE_CLASSIFIER_ENABLED="false")
    assert result.exit_code == 0, result.output
    assert "classifier: disabled" in result.stdout and "classifier_rtf=off" in _summary(result)


def test_the_sensors_rate_is_the_one_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    at_16k = _check(monkeypatch, "--rate", "16000")  # the model's own rate: nothing to resample
    assert at_16k.exit_code == 0, at_16k.output
    assert "faithful=yes" in _summary(at_16k)
    # 16 kHz keeps the 25 Hz-6.3 kHz bands: far fewer samples and filters than at 48 kHz.
    assert levels_rtf(probe_audio(2.0, 16_000), 16_000, repeats=1) > levels_rtf(probe_audio(2.0, 48_000), 48_000, repeats=1)
    assert _check(monkeypatch, "--rate", "5000").exit_code == 2  # below what any sensor delivers: refused by the option


def test_unusable_settings_or_model_exit_2_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = _check(monkeypatch, SONOPOLIS_EDGE_MODEL_PATH=str(tmp_path / "nowhere.onnx"))
    assert missing.exit_code == 2 and "nowhere.onnx" in missing.output
    (tmp_path / "edge.toml").write_text("sensor_id = 'Not A Valid Id!'\n")
    bad = _check(monkeypatch, "--config", str(tmp_path / "edge.toml"))
    assert bad.exit_code == 2 and "sensor_id" in bad.output
    unreadable = _check(monkeypatch, "--config", str(tmp_path))  # a directory: an OSError, not a crash
    assert unreadable.exit_code == 2


def test_sensors_per_core_adds_the_two_costs_and_rounds_down() -> None:
    assert sensors_per_core(200.0, 50.0) == 40  # 1 / (1/200 + 1/50)
    assert sensors_per_core(184.0, 27.6) == 24  # exactly 24: no float rounding to 23
    assert sensors_per_core(250.0, None) == 250
    assert not GatewayReport("m", 0.06, 100.0, 100.0).faithful and not GatewayReport("m", float("nan"), 1.0, 1.0).faithful
    assert GatewayReport(None, None, 1.0, None).faithful
    blocks = probe_audio(2.0, 48_000)
    assert len(blocks) == 20 and all(b.size == 4_800 and b.dtype == "float32" for b in blocks)
