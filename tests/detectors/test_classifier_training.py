"""Training pipeline: split by source recording, spray-can physics, threshold tuning, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from detectors import features
from detectors.classifier import CLASSES, EventClassifier
from detectors.training.data import Clip, background_weights, split_by_group, synthetic_spray_cans
from detectors.training.synth import spray_can_clip
from detectors.training.thresholds import cross_validated_thresholds, evaluate_thresholds, fold_of, tune_thresholds


def fake_clip(label: str, group: str) -> Clip:
    return Clip(label, np.zeros(16000, np.float32), group, "test", "test")


def test_split_keeps_every_source_group_on_one_side() -> None:
    clips = [fake_clip(label, f"{label}:{g}") for label in ("gunshot", "background") for g in range(12) for _ in range(g % 3 + 1)]
    clips += [fake_clip("crash", "crash:a")] * 16 + [fake_clip("crash", "crash:b")] * 2
    train, validation = split_by_group(clips, 0.2, seed=7)
    assert {c.group for c in train}.isdisjoint({c.group for c in validation})
    for label in ("gunshot", "background", "crash"):
        total = sum(c.label == label for c in clips)
        held = sum(c.label == label for c in validation)
        assert 0 < held <= 0.5 * total, label
    # Same seed, same split; a different seed, a different one.
    assert split_by_group(clips, 0.2, seed=7)[1] == validation
    assert {c.group for c in split_by_group(clips, 0.2, seed=8)[1]} != {c.group for c in validation}


def test_synthetic_spray_can_is_a_high_frequency_hiss_or_rattle_and_reproducible() -> None:
    a = spray_can_clip(np.random.default_rng(3))
    b = spray_can_clip(np.random.default_rng(3))
    assert np.array_equal(a, b)
    for seed in range(8):
        clip = spray_can_clip(np.random.default_rng(seed))
        spectrum = np.abs(np.fft.rfft(clip)) ** 2
        freqs = np.fft.rfftfreq(clip.size, 1 / 16000)
        centroid = float((spectrum * freqs).sum() / spectrum.sum())
        assert centroid > 1500.0, f"seed {seed}: centroid {centroid:.0f} Hz is not a hiss/rattle"
        assert 0.4 < np.abs(clip).max() <= 0.5 + 1e-6
    groups = {c.group for c in synthetic_spray_cans(5, 1, "synthetic-x")}
    assert len(groups) == 5


def probs(label_index: int, p: float, windows: int = 3) -> np.ndarray:
    out = np.full((windows, len(CLASSES)), (1 - p) / (len(CLASSES) - 1), np.float32)
    out[1, label_index] = p
    return out


def test_thresholds_respect_the_false_alarm_budget() -> None:
    gun = CLASSES.index("gunshot")
    # Gunshots score 0.6-0.9; one background clip scores 0.55 on gunshot.
    probabilities = [probs(gun, p) for p in (0.6, 0.7, 0.8, 0.9)]
    labels = ["gunshot"] * 4
    probabilities += [probs(gun, 0.55)] + [probs(CLASSES.index("background"), 0.9)] * 19
    labels += ["background"] * 20
    thresholds = tune_thresholds(probabilities, labels, false_alarm_weight=20.0)
    assert 0.55 < thresholds["gunshot"] <= 0.6
    report = evaluate_thresholds(probabilities, labels, thresholds)
    assert report.background_false_alarm_rate == 0.0
    assert report.per_class["gunshot"].recall == 1.0
    assert thresholds["spray_can"] >= 0.9


def test_hard_negative_weights_give_rare_background_kinds_their_share() -> None:
    clips = [Clip("background", np.zeros(1600, np.float32), f"c{i}", "t", "t", "casual") for i in range(90)]
    clips += [Clip("background", np.zeros(1600, np.float32), f"r{i}", "t", "t", "rooster") for i in range(10)]
    assert np.allclose(background_weights(clips, 0.0), 0.01)
    weights = background_weights(clips, 0.5)
    assert weights.sum() == pytest.approx(1.0)
    rooster_share = float(weights[90:].sum())
    # 0.5 x 10 % (uniform over clips) + 0.5 x 50 % (uniform over kinds) = 30 %.
    assert rooster_share == pytest.approx(0.30)


def test_cross_validated_thresholds_score_each_group_with_thresholds_tuned_without_it() -> None:
    gun, background = CLASSES.index("gunshot"), CLASSES.index("background")
    groups = [f"g{i}" for i in range(40)]
    labels = ["gunshot" if i % 2 else "background" for i in range(40)]
    probabilities = [
        probs(gun, 0.6 if i % 4 == 1 else 0.9) if label == "gunshot" else probs(background, 0.9) for i, label in enumerate(labels)
    ]
    # One background recording that looks like a gunshot: tuned on everything, the
    # threshold steps over it; scored by CV, the fold that holds it out cannot know it.
    probabilities[0] = probs(gun, 0.7)
    report, per_fold = cross_validated_thresholds(probabilities, labels, groups, folds=4, seed=7)
    assert report.clips == 40 and len(per_fold) == 4
    tuned_all = tune_thresholds(probabilities, labels)
    assert evaluate_thresholds(probabilities, labels, tuned_all).background_false_alarms == 0
    assert tuned_all["gunshot"] > 0.7
    held_out_fold = fold_of("g0", 4, 7)
    assert per_fold[held_out_fold]["gunshot"] <= 0.6
    assert report.background_false_alarms == 1
    assert all(t["gunshot"] > 0.7 for k, t in enumerate(per_fold) if k != held_out_fold)


# A training run small enough for a test (seconds), on write_tiny_dataset's clips.
TINY_RECIPE = dict(
    rounds=1, epochs_per_round=1, events_per_class=16, background_per_round=32, synthetic_train=4,
    synthetic_validation=2, batch_size=16,
)


def write_tiny_dataset(folder: Path) -> None:
    """Three clips per class, each its own source group: enough to run the whole pipeline."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    rows = []
    for k, label in enumerate(c for c in CLASSES if c != "spray_can"):
        (folder / label).mkdir()
        for i in range(3):
            t = np.arange(32000) / 16000
            audio = 0.01 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (300 + 400 * k) * t) * (t > 0.8)
            path = f"{label}/c{i}.wav"
            sf.write(folder / path, audio.astype(np.float32), 16000)
            rows.append({"path": path, "label": label, "source_group": f"{label}-{i}", "source_repo": "test", "license": "test"})
    with (folder / "LABELS.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_training_is_deterministic_and_exports_a_usable_model(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (dev dependency)")
    from detectors.training.train import TrainConfig, train

    write_tiny_dataset(tmp_path / "data")
    models = []
    for run in ("a", "b"):
        config = TrainConfig(data=tmp_path / "data", out=tmp_path / run, **TINY_RECIPE)
        metrics = train(config)
        models.append((tmp_path / run / "sound_events.onnx").read_bytes())
        assert (tmp_path / run / "MODEL_CARD.md").read_text().count("spray_can") >= 3
        saved = json.loads((tmp_path / run / "thresholds.json").read_text())
        assert saved["model_id"] == metrics["model_id"]
    assert models[0] == models[1], "same seed and data must give the same model"
    classifier = EventClassifier(tmp_path / "a" / "sound_events.onnx")
    assert classifier.model_id == metrics["model_id"]
    p = classifier.window_probabilities(np.zeros(2 * features.SAMPLE_RATE, np.float32), features.SAMPLE_RATE)
    assert p.shape == (3, len(CLASSES))
