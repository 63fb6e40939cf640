"""The start-up check that this CPU computes an int8 graph as the graph says (``detectors.int8_fidelity``).

The saturation it exists for is shown on a one-layer graph: 64 input channels at uint8 255
against int8 weights of 127 make pairs of products (64 770) that a saturating int16 cannot
hold; weights of 64 (7 bits, what the export now writes) make pairs that it can (32 640).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from detectors import int8_fidelity
from detectors.classifier import DEFAULT_MODEL, OnnxRunner, open_session

CHANNELS, WIDTH, OUT = 64, 16, 8


def _qdq_conv(weight: int) -> bytes:
    """x (float) -> Q/DQ uint8 -> 1x1 Conv with int8 weights all equal to ``weight`` (DQ per channel) -> Q/DQ uint8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    peak = CHANNELS * 255 * weight  # the exact sum when every input is 255
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
        numpy_helper.from_array(np.full((OUT, CHANNELS, 1, 1), weight, np.int8), "w_q"),
        numpy_helper.from_array(np.ones(OUT, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(OUT, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(peak / 255.0, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "y_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, CHANNELS, 1, WIDTH])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, OUT, 1, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def test_8_bit_weights_saturate_where_the_cpu_lacks_vnni_and_7_bit_weights_never_do() -> None:
    x = np.full((1, CHANNELS, 1, WIDTH), 255.0, np.float32)
    for weight in (127, 64):
        graph = _qdq_conv(weight)
        as_written = open_session(graph, threads=1, optimise=False).run(None, {"x": x})[0]
        assert np.allclose(as_written, CHANNELS * 255.0 * weight, rtol=1e-6)  # the ONNX arithmetic, in float: exact
        kernels = open_session(graph, threads=1).run(None, {"x": x})[0]
        if weight == 64:
            assert np.allclose(kernels, as_written, rtol=1e-6), "7-bit weights must compute the same on every CPU"
            continue
        flags = _cpu_flags()
        if platform.machine() not in ("x86_64", "AMD64") or not flags:
            pytest.skip("which int8 kernels saturate is known for x86 only")
        if {"avx512_vnni", "avx_vnni"} & flags:
            assert np.allclose(kernels, as_written, rtol=1e-6)  # VNNI adds in int32: no saturation
        else:
            # VPMADDUBSW: each pair of products is clipped to 32 767, so the layer reads about half its input.
            assert np.all(kernels < 0.6 * as_written)


@pytest.mark.usefixtures("cpu_off_by_0_3")
def test_a_cpu_that_computes_another_model_is_reported_loudly(caplog: pytest.LogCaptureFixture) -> None:
    """The verdict path: a reference that disagrees by 0.3 is logged with the model id and the remedy."""
    with caplog.at_level("ERROR", logger="detectors.classifier"):
        runner = OnnxRunner(DEFAULT_MODEL)
    assert runner.fidelity >= 0.25
    assert f"model {runner.model_id} computes differently on this CPU" in caplog.text
    assert "7-bit weights" in caplog.text


def test_the_check_is_kept_per_graph_bytes_so_a_replaced_model_is_measured_again() -> None:
    calls: list[int] = []

    def run(offset: float):  # noqa: ANN202
        def f(batch: np.ndarray) -> np.ndarray:
            calls.append(1)
            return np.zeros((batch.shape[0], 9), np.float32) + offset
        return f

    identity = lambda w: w  # noqa: E731 - the probes' samples stand in for features
    same = int8_fidelity.measure(b"graph-a", run(0.0), run(0.0), identity)
    assert same == 0.0 and int8_fidelity.measure(b"graph-a", run(0.0), run(0.5), identity) == 0.0  # kept: not run again
    assert int8_fidelity.measure(b"graph-b", run(0.0), run(0.5), identity) == pytest.approx(0.5)
    assert len(calls) == 4


def test_probes_span_silence_to_loud_within_full_scale() -> None:
    probes = int8_fidelity.probe_windows()
    peaks = np.abs(probes).max(axis=1)
    assert probes.shape == (7, 16_000) and peaks.max() <= 1.0 and peaks[0] == 0.0
    rms_db = 20 * np.log10(np.sqrt((probes[1:] ** 2).mean(axis=1)))
    assert rms_db.min() < -45 and rms_db.max() > -6
