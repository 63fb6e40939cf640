"""Edge agent speed: real-time factor per core of the levels and of the classifier.

Same 60 s of 48 kHz synthetic street audio (``simulators.scene``) for both, fed in
100 ms blocks as the agent does. Times are *CPU* seconds of this process
(``time.process_time``) with single-threaded onnxruntime, i.e. per core, so other
load on the machine inflates them only through cache sharing.

(a) levels: A/C weighting, Fast time weighting, Leq/LAFmax/LAFmin/LCpeak and the
    30-band third-octave bank (everything the smart path needs);
(b) classifier: streaming resampling 48 -> 16 kHz + ``StreamingClassifier.feed``.

``sensors_per_core = floor(1 / (1/levels_rtf + 1/classifier_rtf))``.

``--baseline-model PATH`` also times another classifier (e.g. the previous model, from
``git show REV:detectors/model/sound_events.onnx``) in the same run and prints the ratio.
Last line: ``edge: levels_rtf=<x> classifier_rtf=<y> sensors_per_core=<n>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from detectors.gateway_check import classifier_rtf, levels_rtf, sensors_per_core, verdict  # noqa: E402
from detectors.int8_fidelity import FIDELITY_LIMIT  # noqa: E402
from simulators.scene import SceneEvent, street_scene  # noqa: E402

FS = 48000
SECONDS = 60.0
BLOCK = FS // 10


def _blocks(audio: np.ndarray):  # type: ignore[no-untyped-def]
    return [audio[i : i + BLOCK] for i in range(0, audio.size, BLOCK)]


def bench_classifier(blocks: list[np.ndarray], model: Path | None = None) -> float | None:
    try:
        from detectors.classifier import FLAT_THRESHOLDS, ClassifierError, StreamingClassifier
    except ImportError as exc:
        print(f"note: classifier not importable yet ({exc}); classifier_rtf=nan")
        return None
    try:
        # A baseline graph may come without its tuned thresholds; they do not change the timing.
        clf = StreamingClassifier(model, None if model is None else FLAT_THRESHOLDS, threads=1)
    except ClassifierError as exc:
        print(f"note: classifier model not available yet ({exc}); classifier_rtf=nan")
        return None
    runner = clf.classifier.runner
    print(f"{runner.model_id}: this CPU's int8 kernels are within {runner.fidelity:.3f} of the graph's own "
          f"arithmetic (limit {FIDELITY_LIMIT}): this CPU {verdict(runner.fidelity)}")
    return classifier_rtf(clf, blocks, FS)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-model", type=Path, default=None, help="another ONNX classifier to time in the same run")
    baseline = parser.parse_args().baseline_model
    events = [SceneEvent("car_horn", 7.0, 0.6, 85), SceneEvent("siren", 20.0, 5.0, 80), SceneEvent("impulse", 41.0, 0.3, 105), SceneEvent("glass", 50.0, 0.8, 90)]
    audio = street_scene(SECONDS, FS, seed=2026, events=events).audio
    blocks = _blocks(audio)
    levels = levels_rtf(blocks, FS)
    print(f"levels (weighting + F/Leq/peak + 30 third-octave bands): {levels:.1f}x real time per core")
    shipped = bench_classifier(blocks)
    if shipped is None:
        print("note: sensors_per_core below counts the levels only")
        crtf = "nan"
    else:
        print(f"classifier (resample 48->16 kHz + streaming ONNX): {shipped:.1f}x real time per core")
        if baseline is not None:
            baseline_rtf = bench_classifier(blocks, baseline)
            if baseline_rtf is not None:
                print(f"baseline classifier {baseline.name}: {baseline_rtf:.1f}x real time per core; "
                      f"the shipped one costs {baseline_rtf / shipped:.2f}x as much CPU")
        crtf = f"{shipped:.1f}"
    print(f"edge: levels_rtf={levels:.1f} classifier_rtf={crtf} sensors_per_core={sensors_per_core(levels, shipped)}")


if __name__ == "__main__":
    main()
