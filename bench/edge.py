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
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from detectors.gateway_check import classifier_rtf, levels_rtf, sensors_per_core  # noqa: E402
from detectors.meter import SoundLevelMeter  # noqa: E402
from simulators.scene import SCENE_OFFSET_DB, SceneEvent, street_scene  # noqa: E402

FS = 48000
SECONDS = 60.0
BLOCK = FS // 10
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _blocks(audio: np.ndarray):  # type: ignore[no-untyped-def]
    return [audio[i : i + BLOCK] for i in range(0, audio.size, BLOCK)]


def bench_levels(blocks: list[np.ndarray], repeats: int = 3) -> float:
    rtf = levels_rtf(blocks, FS, repeats)
    assert len(SoundLevelMeter(FS, SCENE_OFFSET_DB, T0).feed(np.concatenate(blocks))) == int(SECONDS)
    return rtf


def bench_classifier(blocks: list[np.ndarray], model: Path | None = None) -> float | None:
    try:
        from detectors.classifier import FLAT_THRESHOLDS, ClassifierError, StreamingClassifier
        from detectors.int8_fidelity import FIDELITY_LIMIT
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
    verdict = "as the graph says" if runner.fidelity <= FIDELITY_LIMIT else "ANOTHER MODEL than the graph says"
    print(f"{runner.model_id}: this CPU's int8 kernels are within {runner.fidelity:.3f} of the graph's own "
          f"arithmetic (limit {FIDELITY_LIMIT}): it computes {verdict}")
    return classifier_rtf(clf, blocks, FS)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-model", type=Path, default=None, help="another ONNX classifier to time in the same run")
    baseline = parser.parse_args().baseline_model
    events = [SceneEvent("car_horn", 7.0, 0.6, 85), SceneEvent("siren", 20.0, 5.0, 80), SceneEvent("impulse", 41.0, 0.3, 105), SceneEvent("glass", 50.0, 0.8, 90)]
    audio = street_scene(SECONDS, FS, seed=2026, events=events).audio
    blocks = _blocks(audio)
    levels_rtf = bench_levels(blocks)
    print(f"levels (weighting + F/Leq/peak + 30 third-octave bands): {levels_rtf:.1f}x real time per core")
    classifier_rtf = bench_classifier(blocks)
    if classifier_rtf is None:
        print("note: sensors_per_core below counts the levels only")
        crtf = "nan"
    else:
        print(f"classifier (resample 48->16 kHz + streaming ONNX): {classifier_rtf:.1f}x real time per core")
        if baseline is not None:
            baseline_rtf = bench_classifier(blocks, baseline)
            if baseline_rtf is not None:
                print(f"baseline classifier {baseline.name}: {baseline_rtf:.1f}x real time per core; "
                      f"the shipped one costs {baseline_rtf / classifier_rtf:.2f}x as much CPU")
        crtf = f"{classifier_rtf:.1f}"
    print(f"edge: levels_rtf={levels_rtf:.1f} classifier_rtf={crtf} sensors_per_core={sensors_per_core(levels_rtf, classifier_rtf)}")


if __name__ == "__main__":
    main()
