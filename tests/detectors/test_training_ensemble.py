"""Training additions: channel-colouring augmentation, 8-bit quantisation, ensemble export, member checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors import features
from detectors.classifier import BACKGROUND, CLASSES, EventClassifier
from detectors.training.data import Augmentation, Clip, augmented_windows, quantise_8bit, random_colouring


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / features.SAMPLE_RATE)
    return float(10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].mean()))


def test_random_colouring_is_reproducible_and_changes_the_spectral_balance() -> None:
    noise = np.random.default_rng(0).standard_normal(features.WINDOW_SAMPLES).astype(np.float32) * 0.1
    a = random_colouring(noise, np.random.default_rng(5))
    assert np.array_equal(a, random_colouring(noise, np.random.default_rng(5)))
    assert a.shape == noise.shape and a.dtype == np.float32 and np.isfinite(a).all()
    # White noise has a flat spectrum; each colouring tilts it differently (low vs high band balance).
    balances = []
    for seed in range(12):
        coloured = random_colouring(noise, np.random.default_rng(seed))
        balances.append(_band_db(coloured, 200, 800) - _band_db(coloured, 3000, 6000))
    flat = _band_db(noise, 200, 800) - _band_db(noise, 3000, 6000)
    assert abs(flat) < 1.0
    assert max(balances) - min(balances) > 10.0, balances
    assert all(abs(b) < 60 for b in balances)


def test_quantise_8bit_leaves_at_most_255_levels_and_a_small_error() -> None:
    t = np.arange(features.WINDOW_SAMPLES) / features.SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    q = quantise_8bit(x, np.random.default_rng(1))
    assert len(np.unique(q)) <= 255
    assert not np.array_equal(q, x)
    error_db = 10 * np.log10(np.mean((q - x) ** 2) / np.mean(x**2))
    assert -70 < error_db < -20


def _clips() -> list[Clip]:
    rng = np.random.default_rng(2)
    clips = [Clip(BACKGROUND, rng.standard_normal(32000).astype(np.float32) * 0.01, f"b{i}", "t", "t") for i in range(4)]
    clips += [Clip("gunshot", rng.standard_normal(24000).astype(np.float32) * 0.2, f"g{i}", "t", "t") for i in range(3)]
    return clips


def test_augmented_windows_with_colouring_are_deterministic_and_differ_from_plain_ones() -> None:
    per_class = {"gunshot": 6, BACKGROUND: 6}
    plain = augmented_windows(_clips(), per_class, np.random.default_rng(3))
    off = augmented_windows(_clips(), per_class, np.random.default_rng(3), Augmentation(colouring_probability=0.0))
    assert np.array_equal(plain[0], off[0]), "probability 0 must not draw random numbers (old recipes reproduce)"
    coloured = Augmentation(colouring_probability=1.0, quantise_probability=0.5)
    a = augmented_windows(_clips(), per_class, np.random.default_rng(3), coloured)
    b = augmented_windows(_clips(), per_class, np.random.default_rng(3), coloured)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == plain[0].shape
    assert not np.allclose(a[0], plain[0])


def test_ensemble_exports_one_graph_whose_output_is_the_mean_of_the_members(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="training needs torch (dev dependency)")
    from detectors.training.network import SoundEventNet
    from detectors.training.train import TrainConfig, export_onnx

    torch.manual_seed(0)
    nets = [SoundEventNet(len(CLASSES), width=4).eval() for _ in range(3)]
    config = TrainConfig(data=tmp_path, out=tmp_path, members=3, width=4)
    model_id = export_onnx(nets, tmp_path, config)
    (tmp_path / "thresholds.json").write_text(json.dumps({"thresholds": {c: 0.5 for c in CLASSES if c != BACKGROUND}}))
    classifier = EventClassifier(tmp_path / "sound_events.onnx")
    assert classifier.model_id == model_id
    meta = classifier.runner.session.get_modelmeta().custom_metadata_map
    assert meta["members"] == "3"
    x = features.window_features(np.random.default_rng(4).standard_normal((5, features.WINDOW_SAMPLES)).astype(np.float32) * 0.1)
    got = classifier.runner.probabilities(x)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(n(torch.from_numpy(x)), dim=1) for n in nets]).mean(0).numpy()
    assert np.allclose(got, expected, atol=1e-5)
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "sound_events.onnx").stat().st_size < 4_000_000


@pytest.mark.slow
def test_ensemble_training_is_deterministic_and_reuses_member_checkpoints(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (dev dependency)")
    from detectors.training.train import TrainConfig, member_key, train
    from tests.detectors.test_classifier_training import TINY_RECIPE, write_tiny_dataset

    write_tiny_dataset(tmp_path / "data")
    recipe = dict(
        data=tmp_path / "data", **TINY_RECIPE, members=2, width=8, all_data=False,
        colouring_probability=0.5, quantise_probability=0.2, mixup_alpha=0.4,
    )
    first = train(TrainConfig(out=tmp_path / "a", checkpoint_dir=tmp_path / "ckpt", **recipe))
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert len(saved) == 2 and saved[0].startswith("member-seed107-") and saved[1].startswith("member-seed7-")
    ticks: list[str] = []
    second = train(TrainConfig(out=tmp_path / "b", checkpoint_dir=tmp_path / "ckpt", **recipe), tick=ticks.append)
    assert sum(t.startswith("reusing member-seed") for t in ticks) == 2
    fresh = train(TrainConfig(out=tmp_path / "c", **recipe))
    models = [(tmp_path / run / "sound_events.onnx").read_bytes() for run in ("a", "b", "c")]
    assert models[0] == models[1] == models[2], "same seeds and data: same ensemble, fitted or reused"
    assert first["model_id"] == second["model_id"] == fresh["model_id"]
    assert first["config"]["members"] == 2 and "checkpoint_dir" not in first["config"]
    assert "Ensemble of 2" in (tmp_path / "a" / "MODEL_CARD.md").read_text()
    # Another recipe (here: no colouring) never picks up these checkpoints.
    other = TrainConfig(out=tmp_path / "d", checkpoint_dir=tmp_path / "ckpt", **{**recipe, "colouring_probability": 0.0})
    base = TrainConfig(out=tmp_path / "a", checkpoint_dir=tmp_path / "ckpt", **recipe)
    clips: list = []
    assert member_key(other, 7, clips) != member_key(base, 7, clips)
    assert member_key(base, 7, clips) != member_key(base, 107, clips)


def test_speed_augmentation_plays_a_window_faster_or_slower_and_draws_nothing_when_off() -> None:
    from detectors.training.data import _background_window, _event_window

    t = np.arange(3 * features.SAMPLE_RATE) / features.SAMPLE_RATE
    tone = Clip("siren", (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), "g", "test", "test")

    def dominant_hz(x: np.ndarray) -> float:
        return float(np.fft.rfftfreq(x.size, 1 / features.SAMPLE_RATE)[np.argmax(np.abs(np.fft.rfft(x)))])

    for speed, expected in ((1.0, 1000.0), (1.25, 1250.0), (0.8, 800.0)):
        event = _event_window(tone, np.random.default_rng(0), speed)
        background = _background_window([tone], np.random.default_rng(0), None, speed)
        assert event.shape == background.shape == (features.WINDOW_SAMPLES,)
        assert dominant_hz(event) == pytest.approx(expected, abs=2) and dominant_hz(background) == pytest.approx(expected, abs=2)

    off, on = Augmentation(), Augmentation(speed_probability=1.0)
    rng = np.random.default_rng(4)
    assert off.speed(rng) == 1.0 and rng.random() == np.random.default_rng(4).random(), "no draw when off"
    speeds = [on.speed(np.random.default_rng(s)) for s in range(200)]
    assert 0.8 <= min(speeds) < 0.85 and 1.2 < max(speeds) <= 1.25
    per_class = {"siren": 8, BACKGROUND: 8}
    noise = Clip(BACKGROUND, np.random.default_rng(1).standard_normal(t.size).astype(np.float32) * 0.01, "b", "test", "test")
    x, y = augmented_windows([tone, noise], per_class, np.random.default_rng(3), Augmentation(speed_probability=0.5))
    assert x.shape == (16, 1, features.N_MELS, features.WINDOW_FRAMES) and np.isfinite(x).all()
