"""``sonopolis check-edge``: a gateway's fidelity verdict and its cost per sensor, measured on it."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from detectors.gateway_check import GatewayReport, levels_rtf, probe_audio, sensors_per_core
from sonopolis import cli
from tests.detectors.test_int8_fidelity import make_cpu_disagree

SUMMARY = re.compile(r"^check-edge: faithful=(yes|NO) levels_rtf=[\d.]+ classifier_rtf=([\d.]+|off) sensors_per_core=\d+$")


def _check(monkeypatch: pytest.MonkeyPatch, **env: str):  # noqa: ANN202
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(cli.app, ["check-edge", "--seconds", "2"])


def test_a_gateway_computing_the_shipped_model_passes_and_says_what_one_core_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _check(monkeypatch)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert SUMMARY.match(lines[-1]) and "faithful=yes" in lines[-1]
    levels, crtf, per_core = (float(v) for v in re.findall(r"=([\d.]+)", lines[-1]))
    assert per_core == sensors_per_core(levels, crtf) >= 1  # what the numbers above it imply
    assert any("computes the model its card validated" in line for line in lines)


def test_a_gateway_computing_another_model_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    make_cpu_disagree(monkeypatch)
    result = _check(monkeypatch)
    assert result.exit_code == 1
    assert "ANOTHER MODEL" in result.stdout and "faithful=NO" in result.stdout.strip().splitlines()[-1]


def test_levels_only_gateways_are_measured_without_a_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _check(monkeypatch, SONOPOLIS_EDGE_CLASSIFIER_ENABLED="false")
    assert result.exit_code == 0, result.output
    assert "classifier: disabled" in result.stdout
    assert SUMMARY.match(result.stdout.strip().splitlines()[-1]) and "classifier_rtf=off" in result.stdout


def test_the_sensors_rate_is_measured_and_an_impossible_one_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONOPOLIS_EDGE_CLASSIFIER_ENABLED", "false")
    result = CliRunner().invoke(cli.app, ["check-edge", "--seconds", "2", "--rate", "16000"])
    assert result.exit_code == 0 and SUMMARY.match(result.stdout.strip().splitlines()[-1])
    refused = CliRunner().invoke(cli.app, ["check-edge", "--seconds", "2", "--rate", "5000"])
    assert refused.exit_code == 2 and "5000 Hz" in refused.output


def test_sensors_per_core_adds_the_two_costs_and_rounds_down() -> None:
    assert sensors_per_core(200.0, 50.0) == 40  # 1 / (1/200 + 1/50)
    assert sensors_per_core(250.0, None) == 250
    assert GatewayReport("m", 0.06, 100.0, 100.0).faithful is False and GatewayReport(None, None, 1.0, None).faithful
    blocks = probe_audio(2.0, 48_000)
    assert len(blocks) == 20 and all(b.size == 4_800 for b in blocks)
    assert levels_rtf(blocks, 48_000, repeats=1) > 1.0  # any machine that runs the agent keeps up with one sensor
