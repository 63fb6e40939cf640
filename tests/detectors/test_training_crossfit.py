"""Cross-fitting: folds by source group, out-of-fold scores from the shipped members, one averaged graph."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detectors import features
from detectors.classifier import CLASSES, EventClassifier
from detectors.training.data import Clip, group_folds
from detectors.training.thresholds import thresholds_by_fold


def _clips(spec: dict[str, list[int]]) -> list[Clip]:
    """label -> sizes of its source groups (one clip of silence per group member)."""
    return [
        Clip(label, np.zeros(1600, np.float32), f"{label}:{g}", "test", "test")
        for label, sizes in spec.items() for g, n in enumerate(sizes) for _ in range(n)
    ]


def test_folds_keep_each_recording_whole_and_spread_every_class_evenly() -> None:
    clips = _clips({"gunshot": [5, 3, 3, 2, 2, 1, 1, 1, 1, 1], "background": [1] * 47, "crash": [16, 2]})
    fold = group_folds(clips, 5, seed=7)
    by_group: dict[str, set[int]] = {}
    for clip, f in zip(clips, fold, strict=True):
        by_group.setdefault(clip.group, set()).add(f)
    assert all(len(folds) == 1 for folds in by_group.values()), "a source recording was cut across folds"
    for label, total in (("gunshot", 20), ("background", 47)):
        counts = Counter(f for c, f in zip(clips, fold, strict=True) if c.label == label)
        assert sum(counts.values()) == total and len(counts) == 5
        assert max(counts.values()) - min(counts.values()) <= (4 if label == "gunshot" else 1), counts
    crash = Counter(f for c, f in zip(clips, fold, strict=True) if c.label == "crash")
    assert sorted(crash.values()) == [2, 16], "the big crash video and the small one go to different folds"
    assert fold == group_folds(list(reversed(clips)), 5, seed=7)[::-1], "the order of LABELS.csv does not matter"
    assert fold != group_folds(clips, 5, seed=8)
    with pytest.raises(ValueError, match="at least 2 folds"):
        group_folds(clips, 1, seed=7)


def test_a_group_spanning_labels_stays_in_one_fold() -> None:
    clips = _clips({"background": [1] * 10, "scream": [1] * 5})
    clips += [Clip("scream", np.zeros(10, np.float32), "background:3", "test", "test")]
    fold = group_folds(clips, 3, seed=1)
    assert len({f for c, f in zip(clips, fold, strict=True) if c.group == "background:3"}) == 1


def test_thresholds_by_fold_never_scores_a_fold_with_thresholds_it_helped_tune() -> None:
    gunshot = CLASSES.index("gunshot")

    def probs(p: float) -> np.ndarray:
        row = np.full((1, len(CLASSES)), 0.0, np.float32)
        row[0, gunshot] = p
        return row

    # Fold 0's gunshots score 0.6; elsewhere gunshots score 0.97 and background 0.7: the other
    # folds set the gunshot threshold above 0.7, so fold 0's gunshots are all missed.
    probabilities = [probs(0.6)] * 4 + [probs(0.97)] * 8 + [probs(0.7)] * 8
    labels = ["gunshot"] * 12 + ["background"] * 8
    fold = [0] * 4 + [1] * 4 + [2] * 4 + [1] * 4 + [2] * 4
    report, per_fold = thresholds_by_fold(probabilities, labels, fold)
    assert len(per_fold) == 3
    assert per_fold[0]["gunshot"] > 0.7
    assert report.per_class["gunshot"].support == 12
    assert report.per_class["gunshot"].recall == pytest.approx(8 / 12)


@pytest.mark.slow
def test_cross_fit_training_ships_the_members_mean_with_out_of_fold_thresholds(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (dev dependency)")
    from detectors.training.crossfit import train_cross_fitted
    from detectors.training.train import TrainConfig
    from tests.detectors.test_classifier_training import TINY_RECIPE, write_tiny_dataset

    write_tiny_dataset(tmp_path / "data")
    recipe = dict(data=tmp_path / "data", **{**TINY_RECIPE, "synthetic_validation": 3}, width=8, cross_fit=3)
    ticks: list[str] = []
    metrics = train_cross_fitted(TrainConfig(out=tmp_path / "a", checkpoint_dir=tmp_path / "ckpt", **recipe), tick=ticks.append)
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert [name.split("-")[1] for name in saved] == ["seed107", "seed207", "seed7"]
    assert metrics["scheme"] == "cross_fit" and metrics["config"]["members"] == 3
    assert json.loads((tmp_path / "a" / "thresholds.json").read_text())["thresholds"] == metrics["thresholds"]
    # Every real clip (3 per class, 8 real classes) is scored exactly once, out of fold.
    assert metrics["validation_real_at_0_5"]["clips"] == 24
    assert metrics["validation_real_cross_validated"]["clips"] == 24
    assert metrics["validation_with_synthetic_spray_can"]["clips"] == 27
    assert metrics["split"]["gunshot"] == {"clips": 3, "groups": 3, "fold_min_clips": 1, "fold_max_clips": 1}
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "Validation (cross-fitting)" in card and "member k trained without fold k" in card

    classifier = EventClassifier(tmp_path / "a" / "sound_events.onnx")
    assert classifier.model_id == metrics["model_id"] and classifier.runner.session.get_modelmeta().custom_metadata_map["members"] == "3"
    p = classifier.window_probabilities(np.zeros(2 * features.SAMPLE_RATE, np.float32), features.SAMPLE_RATE)
    assert p.shape == (3, len(CLASSES)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)

    # The checkpointed members give back the very out-of-fold scores the run tuned on (nested_check --compare).
    from detectors.training.data import load_training_clips
    from detectors.training.nested_check import checkpointed_out_of_fold
    from detectors.training.thresholds import evaluate_thresholds

    clips = load_training_clips(tmp_path / "data")
    config = TrainConfig(out=tmp_path / "a", checkpoint_dir=tmp_path / "ckpt", **recipe)
    replayed = evaluate_thresholds(checkpointed_out_of_fold(config, clips), [c.label for c in clips], metrics["thresholds"])
    assert replayed.model_dump() == metrics["validation_real_tuned"]
    with pytest.raises(ValueError, match="checkpoint directory"):
        checkpointed_out_of_fold(TrainConfig(out=tmp_path, **recipe), clips)
    with pytest.raises(FileNotFoundError, match="member 0"):
        checkpointed_out_of_fold(TrainConfig(out=tmp_path, checkpoint_dir=tmp_path / "ckpt", **{**recipe, "width": 4}), clips)

    again: list[str] = []
    second = train_cross_fitted(TrainConfig(out=tmp_path / "b", checkpoint_dir=tmp_path / "ckpt", **recipe), tick=again.append)
    assert sum(t.startswith("reusing member-seed") for t in again) == 3
    assert second["model_id"] == metrics["model_id"] and second["thresholds"] == metrics["thresholds"]
    assert (tmp_path / "a" / "sound_events.onnx").read_bytes() == (tmp_path / "b" / "sound_events.onnx").read_bytes()


@pytest.mark.slow
def test_nested_check_scores_the_inner_ensemble_on_an_outer_fold_none_of_its_members_heard(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (dev dependency)")
    from detectors.training import data
    from detectors.training.nested_check import outer_fold_check
    from detectors.training.train import TrainConfig
    from tests.detectors.test_classifier_training import TINY_RECIPE, write_tiny_dataset

    write_tiny_dataset(tmp_path / "data")
    config = TrainConfig(data=tmp_path / "data", out=tmp_path, **TINY_RECIPE, width=8, cross_fit=3)
    ticks: list[str] = []
    result = outer_fold_check(config, outer=1, tick=ticks.append)
    clips = data.load_training_clips(tmp_path / "data")
    outer = [c for c, f in zip(clips, data.group_folds(clips, 3, config.seed), strict=True) if f == 1]
    assert result["clips"] == len(outer) == 8, "one clip of each of the 8 real classes per fold"
    assert ticks[0].startswith("16 real clips in 2 folds"), "the scheme runs on the other folds only, one fold fewer"
    assert len(result["members"]) == 2 and result["ensemble"]["clips"] == 8
    assert all(m["clips"] == 8 for m in result["members"])
    assert set(result["thresholds"]) == {c for c in CLASSES if c != "background"}


def test_train_detector_refuses_a_single_fold(tmp_path: Path) -> None:
    """--cross-fit 1 would train one member on nothing held out: a clear error before any audio is read."""
    from typer.testing import CliRunner

    from sonopolis import cli

    result = CliRunner().invoke(cli.app, ["train-detector", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--cross-fit", "1"])
    assert result.exit_code == 2
    assert "--cross-fit needs at least 2 folds" in result.output
    assert not (tmp_path / "m").exists()
