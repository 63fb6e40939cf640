"""Is this gateway fit to run edge agents? Measured on the gateway itself, before sensors are assigned to it.

Two things decide it, and both depend on the CPU, not on the code:

* **fidelity**: the validation figures of the classifier hold only where the CPU computes
  the graph as written. An 8-bit graph on an x86 CPU without VNNI computes another model
  (``int8_fidelity``, ``detectors/model/EXPERIMENTS.md``);
* **cost per sensor**: the same recipe ran at 55x real time per core on an AVX-512 VNNI
  CPU and at 20x on an AVX2 one (README, ``bench/edge.py``), so the number of sensors a
  gateway serves has to be measured, not read off a table.

``bench/edge.py`` uses the same measurements on a street scene. This check uses seeded noise
with impulses, so that it needs nothing but the agent. The cost of the filters and of the
network barely depends on what the audio holds. On one machine, 20 s of it gave 58-61x for
the classifier and 220-257x for the levels, against 54-60x and 237-253x on the scene.
``sensors_per_core`` has no margin in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detectors.int8_fidelity import FIDELITY_LIMIT, faithful
from detectors.meter import SoundLevelMeter
from detectors.resample import StreamingResampler

if TYPE_CHECKING:
    from detectors.classifier import StreamingClassifier

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def probe_audio(seconds: float, fs: int, seed: int = 2026) -> list[np.ndarray]:
    """Seeded noise with a few loud impulses, cut into the agent's 100 ms blocks (float32, as the agent meters them)."""
    rng = np.random.default_rng(seed)
    audio = 0.01 * rng.standard_normal(int(seconds * fs))
    for at in rng.integers(0, audio.size - fs // 10, size=max(1, int(seconds / 5))):
        audio[at : at + fs // 10] += 0.5 * rng.standard_normal(fs // 10) * np.exp(-np.arange(fs // 10) / (fs / 100))
    block = fs // 10
    audio = audio.astype(np.float32)
    return [audio[i : i + block] for i in range(0, audio.size, block)]


def levels_rtf(blocks: Sequence[np.ndarray], fs: int, repeats: int = 3) -> float:
    """Real-time factor of the levels (weighting, time weighting, third-octave bands) on one core, best of ``repeats``.

    CPU seconds of this process (``time.process_time``), so other load on the machine
    inflates them only through shared caches. Each pass must close every whole second
    it was fed: a meter that did less work would look faster.
    """
    samples = sum(b.size for b in blocks)
    best = math.inf
    for _ in range(repeats):
        meter = SoundLevelMeter(fs, 0.0, T0)  # the filters are designed outside the timed loop
        began = time.process_time()
        periods = sum(len(meter.feed(b)) for b in blocks)
        best = min(best, time.process_time() - began)
        if periods != samples // fs:
            raise RuntimeError(f"the meter closed {periods} periods of {samples // fs} s of audio")
    return samples / fs / best


def classifier_rtf(classifier: StreamingClassifier, blocks: Sequence[np.ndarray], fs: int, repeats: int = 2) -> float:
    """Real-time factor of a ``StreamingClassifier`` (with the agent's resampling to 16 kHz) on one core."""
    seconds = sum(b.size for b in blocks) / fs
    best = math.inf
    for _ in range(repeats):
        classifier.reset()
        resampler = StreamingResampler(fs, classifier.sample_rate)
        fed = 0
        began = time.process_time()
        for b in blocks:
            chunk = resampler(b)
            classifier.feed(chunk, T0 + timedelta(seconds=fed / classifier.sample_rate))
            fed += chunk.size
        best = min(best, time.process_time() - began)
    return seconds / best


def sensors_per_core(levels: float, classifier: float | None) -> int:
    """Sensors one core keeps up with: ``1 / (1/levels + 1/classifier)``, rounded down (an upper bound: no margin)."""
    return math.floor(1.0 / (1.0 / levels + (0.0 if classifier is None else 1.0 / classifier)) + 1e-9)


def verdict(fidelity: float) -> str:
    """The fidelity verdict in words, for ``check-edge`` and ``bench/edge.py``."""
    return ("computes the model its card validated" if faithful(fidelity) else
            "computes ANOTHER MODEL than its card validated: its thresholds and figures do not hold here")


@dataclass(frozen=True)
class GatewayReport:
    model_id: str | None  # None: classifier disabled (levels only), and then fidelity and classifier_rtf are None too
    fidelity: float | None
    levels_rtf: float
    classifier_rtf: float | None

    @property
    def faithful(self) -> bool:
        """Whether the classifier computes the model its card validated (always, when there is none)."""
        return self.fidelity is None or faithful(self.fidelity)

    @property
    def sensors_per_core(self) -> int:
        return sensors_per_core(self.levels_rtf, self.classifier_rtf)

    def lines(self) -> list[str]:
        """What ``sonopolis check-edge`` prints; the last line is the machine-readable summary."""
        out = [f"levels (weighting + F/Leq/peak + third-octave bands): {self.levels_rtf:.1f}x real time per core"]
        if self.model_id is None:
            out.append("classifier: disabled (levels only)")
        else:
            out += [f"classifier {self.model_id}: within {self.fidelity:.3f} of the graph's own int8 arithmetic "
                    f"(limit {FIDELITY_LIMIT}): this CPU {verdict(self.fidelity)}",
                    f"classifier (resample to 16 kHz + streaming ONNX): {self.classifier_rtf:.1f}x real time per core"]
        crtf = "off" if self.classifier_rtf is None else f"{self.classifier_rtf:.1f}"
        out.append(f"check-edge: faithful={'yes' if self.faithful else 'NO'} levels_rtf={self.levels_rtf:.1f} "
                   f"classifier_rtf={crtf} sensors_per_core={self.sensors_per_core}")
        return out


def check_gateway(model_path: Path | None, classifier_enabled: bool = True, *, seconds: float = 20.0,
                  fs: int = 48_000) -> GatewayReport:
    """Measure this machine as an edge agent configured with ``model_path`` would use it (one core)."""
    blocks = probe_audio(seconds, fs)
    levels = levels_rtf(blocks, fs)
    if not classifier_enabled:
        return GatewayReport(None, None, levels, None)
    from detectors.classifier import StreamingClassifier

    classifier = StreamingClassifier(model_path, threads=1)
    runner = classifier.classifier.runner
    return GatewayReport(runner.model_id, runner.fidelity, levels, classifier_rtf(classifier, blocks, fs))
