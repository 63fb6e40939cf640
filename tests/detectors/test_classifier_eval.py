"""``sonopolis eval-detector``: clip-level metrics, the exact last line, bad folders."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from detectors.classifier import CLASSES, EventClassifier
from detectors.evaluation import ClipResult, EvaluationError, clip_result, evaluate, read_labels, score
from sonopolis.cli import app

LAST_LINE = re.compile(r"^eval: clips=(\d+) macro_f1_security=(\d+\.\d+) background_false_alarm_rate=(\d+\.\d+)$")


def r(label: str, predicted: str, security_fired: bool = False) -> ClipResult:
    return ClipResult(label=label, predicted=predicted, confidence=0.9, security_fired=security_fired)


def test_scores_by_hand() -> None:
    results = [
        r("gunshot", "gunshot", True), r("gunshot", "gunshot", True), r("gunshot", "explosion", True),
        r("explosion", "explosion", True), r("explosion", "background"),
        r("siren", "siren"),
        r("background", "background"), r("background", "gunshot", True), r("background", "siren"),
        r("background", "background"),
    ]
    report = score(results)
    g, e = report.per_class["gunshot"], report.per_class["explosion"]
    assert (g.precision, g.recall) == pytest.approx((2 / 3, 2 / 3))
    assert (e.precision, e.recall) == pytest.approx((1 / 2, 1 / 2))
    # Only the security classes present in the folder are averaged (not spray_can, crash...).
    assert report.security_classes_present == ["gunshot", "explosion"]
    assert report.macro_f1_security == pytest.approx((2 / 3 + 1 / 2) / 2)
    # A siren on a background clip is not a security false alarm.
    assert report.background_false_alarms == 1
    assert report.background_false_alarm_rate == pytest.approx(0.25)


def test_clip_prediction_is_the_most_confident_class_that_fired() -> None:
    gun, glass, bg = CLASSES.index("gunshot"), CLASSES.index("glass_break"), CLASSES.index("background")
    p = np.zeros((3, len(CLASSES)), np.float32)
    p[:, bg] = 0.5
    p[0, gun], p[1, glass], p[2, glass] = 0.45, 0.3, 0.2
    fired = np.zeros_like(p, dtype=bool)
    fired[0, gun] = fired[1, glass] = True
    assert clip_result("gunshot", p, fired).predicted == "gunshot"
    p[1, glass] = 0.48
    assert clip_result("gunshot", p, fired).predicted == "glass_break"
    none = clip_result("background", p, np.zeros_like(fired))
    assert none.predicted == "background" and not none.security_fired


def write_folder(folder: Path, clips: list[tuple[str, np.ndarray, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "LABELS.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for i, (label, audio, rate) in enumerate(clips):
            rel = f"{label}/clip_{i:03d}.wav"
            (folder / label).mkdir(exist_ok=True)
            sf.write(folder / rel, audio, rate)
            writer.writerow([rel, label])


def synthetic_clips() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(4)
    clips = []
    for i in range(4):
        noise = (0.01 * rng.standard_normal(3 * 16000)).astype(np.float32)
        clips.append(("background", noise, 16000))
        shot = noise.copy()
        shot[16000 : 16000 + 4000] += (0.5 * rng.standard_normal(4000) * np.exp(-np.arange(4000) / 500)).astype(np.float32)
        clips.append(("gunshot", shot, 16000))
    t = np.arange(2 * 48000) / 48000
    clips.append(("siren", (0.3 * np.sin(2 * np.pi * (700 + 300 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype(np.float32), 48000))
    return clips


def test_eval_detector_prints_table_and_exact_last_line(tmp_path: Path) -> None:
    clips = synthetic_clips()
    write_folder(tmp_path / "eval", clips)
    result = CliRunner().invoke(app, ["eval-detector", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    assert int(match.group(1)) == len(clips)
    # The printed numbers are those of the library evaluation of the same folder.
    report = evaluate(EventClassifier(), read_labels(tmp_path / "eval"))
    assert float(match.group(2)) == pytest.approx(report.macro_f1_security, abs=1e-4)
    assert float(match.group(3)) == pytest.approx(report.background_false_alarm_rate, abs=1e-4)
    assert any(line.startswith("gunshot ") for line in lines)
    assert "precision" in lines[0] and "recall" in lines[0]


def test_unknown_label_is_refused_with_its_row(tmp_path: Path) -> None:
    write_folder(tmp_path / "bad", synthetic_clips()[:2])
    with (tmp_path / "bad" / "LABELS.csv").open("a") as fh:
        fh.write("background/clip_000.wav,dog_bark\n")
    with pytest.raises(EvaluationError, match=r"LABELS.csv:4: unknown label 'dog_bark'"):
        read_labels(tmp_path / "bad")
    result = CliRunner().invoke(app, ["eval-detector", str(tmp_path / "bad")])
    assert result.exit_code == 2
    assert "dog_bark" in result.output


def test_missing_clip_is_refused(tmp_path: Path) -> None:
    write_folder(tmp_path / "gone", synthetic_clips()[:2])
    (tmp_path / "gone" / "background" / "clip_000.wav").unlink()
    with pytest.raises(EvaluationError, match="clip_000.wav' not found"):
        read_labels(tmp_path / "gone")


@pytest.mark.needs_shared
def test_eval_detector_on_real_clips_from_shared(shared_dir: Path, tmp_path: Path) -> None:
    """A few real clips per class (training clips: this checks the pipeline, not generalisation)."""
    train = shared_dir / "audio" / "train"
    if not (train / "LABELS.csv").is_file():
        pytest.skip(f"no real clips at {train}")
    with (train / "LABELS.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked: list[tuple[str, np.ndarray, int]] = []
    for label in CLASSES:
        for row in [x for x in rows if x["label"] == label][:: 17][:3]:
            audio, rate = sf.read(train / row["path"], dtype="float32")
            picked.append((label, audio, rate))
    write_folder(tmp_path / "real", picked)
    result = CliRunner().invoke(app, ["eval-detector", str(tmp_path / "real")])
    assert result.exit_code == 0, result.output
    match = LAST_LINE.match(result.stdout.strip().splitlines()[-1])
    assert match and int(match.group(1)) == len(picked)
    assert float(match.group(2)) > 0.5  # far above chance (1/6) even on this tiny sample
