"""Does this CPU compute the classifier's int8 graph as the graph says? Measured once per graph.

onnxruntime replaces an int8 graph's DequantizeLinear -> Conv -> QuantizeLinear groups with
integer kernels chosen for the CPU. On x86 without VNNI (AVX2, AVX-512 without VNNI) they
multiply uint8 activations by int8 weights with VPMADDUBSW, which adds each pair of products
into a *saturating* int16: with full-range 8-bit weights a graph then computes, silently,
another model than the one its thresholds were tuned on. Graphs exported by this version have
7-bit weights, which no such pair can overflow (``detectors.training.pretrained.export_quantised``);
a graph exported before, or by other means, may not.

The reference is the same graph run unoptimised: each quantised operation is then computed
in float, as ONNX specifies it, which cannot saturate. The two still differ by float
rounding (the integer kernels round requantised values once; the reference sums in float),
which moves a uint8 activation by a step now and then: on an AVX2 machine the committed
7-bit models stay within ~0.01 of their reference, where the 8-bit ones were 0.2-0.7 away.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from detectors import features

FIDELITY_LIMIT = 0.05
"""Largest difference of any class probability between the CPU's kernels and the reference that
the classifier accepts without an error (float rounding stays ~5x below it where measured)."""

def faithful(fidelity: float) -> bool:
    """Whether a classifier this far from its graph's own arithmetic computes the model its card validated (NaN: no)."""
    return fidelity <= FIDELITY_LIMIT


_MEASURED: dict[str, float] = {}  # graph digest -> fidelity; the kernels and the probes are fixed within a process


def probe_windows() -> np.ndarray:
    """Seven 1 s windows at 16 kHz, within full scale: what a street sensor hears, quiet to loud.

    Saturation shows wherever large activations meet large weights, which depends on each
    layer, not on the input's level alone (the front ends normalise the peak): on the 8-bit
    graphs, silence and quiet street noise showed it as clearly as loud impulses did. So the
    probes span silence, street background at -50 and -26 dBFS, an impulse, clipped noise, a
    sweep and two horn tones in noise.
    """
    n = features.WINDOW_SAMPLES
    t = np.arange(n) / features.SAMPLE_RATE
    rng = np.random.default_rng(61672)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # street-like rumble, no drift
    street = brown / np.abs(brown).max()
    crack = rng.standard_normal(n) * np.exp(-np.maximum(t - 0.3, 0.0) / 0.06) * (t >= 0.3)
    horn = np.sin(2 * np.pi * 420.0 * t) + np.sin(2 * np.pi * 505.0 * t) + 0.2 * rng.standard_normal(n)
    windows = [
        np.zeros(n),
        street * 10 ** (-50 / 20),
        street * 10 ** (-26 / 20),
        0.9 * crack / np.abs(crack).max() + 0.01 * street,
        np.clip(3.0 * rng.standard_normal(n), -1.0, 1.0),
        0.7 * np.sin(2 * np.pi * (200.0 * t + 2900.0 * t**2)),  # 200 Hz -> 6 kHz
        0.9 * horn / np.abs(horn).max(),
    ]
    return np.stack(windows).astype(np.float32)


def measure(graph: bytes, run: Callable[[np.ndarray], np.ndarray], run_as_written: Callable[[np.ndarray], np.ndarray],
            window_features: Callable[[np.ndarray], np.ndarray]) -> float:
    """Largest difference between ``run`` (the optimised session) and ``run_as_written`` on the probes' features.

    Both sessions must come from these very ``graph`` bytes: the result is kept under their
    digest, so a model file replaced on disk is measured again, never confused with the old one.
    """
    digest = hashlib.sha256(graph).hexdigest()
    if digest not in _MEASURED:
        inputs = window_features(probe_windows())
        _MEASURED[digest] = float(np.abs(run(inputs) - run_as_written(inputs)).max())
    return _MEASURED[digest]
