"""Sound-event classifier: the one owner of the onnxruntime session.

The model (trained by ``detectors.training``: a frozen pretrained sound-effects backbone
with cross-fitted linear heads, or the project's own small CNNs; either way one ONNX graph
that averages its members' probabilities) reads the features of 1 s windows taken every
0.5 s, computed by the front end its metadata names (``detectors.features``), and
outputs class probabilities; a class *fires* on a
window when its probability reaches its per-class threshold (``model/thresholds.json``,
tuned on scores of recordings the scoring network never heard). ``background`` never fires.

Two entry points share one code path, so a stream and a file give the same answer:

* :class:`StreamingClassifier` - ``feed(samples, start)`` chunk by chunk; keeps a
  bounded in-memory tail (at most 1.5 s plus the chunk being fed) for overlapping
  windows. Audio is never written or sent anywhere.
* :class:`EventClassifier` - ``classify_clip(audio, sr)`` for offline evaluation,
  and ``window_probabilities`` for the clip-level metrics of ``eval-detector``.

One :class:`Detection` is emitted per event: while consecutive windows keep firing a
class it is the same event (two gunshots less than ~1 s apart are one detection).
Its onset is found on the waveform to the millisecond (:mod:`detectors.onset`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from detectors import features, int8_fidelity
from detectors.onset import estimate_onset

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = (
    "gunshot", "glass_break", "crash", "spray_can", "scream", "explosion", "siren", "car_horn", "background",
)
SECURITY_CLASSES: tuple[str, ...] = CLASSES[:6]
NOISE_SOURCE_CLASSES: tuple[str, ...] = ("siren", "car_horn")
BACKGROUND = "background"
MODEL_DIR = Path(__file__).resolve().parent / "model"
DEFAULT_MODEL = MODEL_DIR / "sound_events.onnx"
DEFAULT_THRESHOLDS = MODEL_DIR / "thresholds.json"
FLAT_THRESHOLDS = {c: 0.5 for c in CLASSES if c != BACKGROUND}
"""0.5 for every class: the untuned reference, and the placeholder where thresholds do not matter (timing, scoring)."""
MAX_BATCH = 64
GAP_TOLERANCE = timedelta(milliseconds=250)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ClassifierError(RuntimeError):
    """The classifier cannot run: missing/invalid model or thresholds file."""


class Detection(BaseModel):
    """One sound event heard in the stream (never carries audio)."""

    model_config = ConfigDict(frozen=True)

    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    onset: datetime = Field(description="UTC, millisecond resolution")
    window_start: datetime = Field(description="Start of the 1 s window that fired first")
    level_dbfs: float | None = Field(None, description="RMS level of that window, dBFS")

    @property
    def is_security(self) -> bool:
        return self.label in SECURITY_CLASSES


def _read_thresholds_file(path: Path) -> tuple[str | None, dict[str, float]]:
    """(model id the file declares, or None; its checked thresholds) of a ``thresholds.json`` written by training."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"cannot read thresholds {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ClassifierError(f"cannot read thresholds {path}: expected a JSON object, got {type(raw).__name__}")
    return raw.get("model_id"), check_thresholds(raw.get("thresholds", raw), source=str(path))


def check_thresholds(thresholds: Mapping[str, float], *, source: str = "thresholds") -> dict[str, float]:
    unknown = set(thresholds) - set(CLASSES) - {BACKGROUND}
    if unknown:
        raise ClassifierError(f"{source}: unknown classes {sorted(unknown)}")
    out: dict[str, float] = {}
    for label, value in thresholds.items():
        if label == BACKGROUND:
            continue
        if not 0.0 <= float(value) <= 1.0:
            raise ClassifierError(f"{source}: threshold of {label} must be in [0, 1], got {value}")
        out[label] = float(value)
    return out


def _to_ms(t: datetime) -> datetime:
    micro = int(round(t.microsecond / 1000.0)) * 1000
    return t.replace(microsecond=0) + timedelta(microseconds=micro)


def disable_onnxruntime_telemetry() -> None:
    """Stop onnxruntime (>= 1.2x on Linux) from writing a device id and a telemetry store.

    Merely importing onnxruntime creates ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/
    {deviceid,onnxruntime.db}`` and ``$TMPDIR/.ses`` unless ``ORT_DISABLE_TELEMETRY=1`` is
    set *before* the import. An edge agent writes nothing but its message queue, so the
    variable is forced here, just before the first import.
    """
    if "onnxruntime" in sys.modules:
        if os.environ.get("ORT_DISABLE_TELEMETRY") != "1":
            log.warning("onnxruntime was imported before its telemetry could be disabled")
        return
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"


def open_session(model: Path | bytes, *, threads: int, optimise: bool = True, source: object = None):  # noqa: ANN201
    """The one way this project opens an onnxruntime session: telemetry off, CPU, fixed threads, sequential.

    ``model`` is a graph file or its bytes (``source`` then names it in errors). ``optimise=False``
    runs the graph as written, each quantised operation in float: the reference the CPU's
    integer kernels are compared with (:mod:`detectors.int8_fidelity`).
    """
    disable_onnxruntime_telemetry()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors (file, graph)
        raise ClassifierError(f"cannot load model {source or model}: {exc}") from exc


def run_in_batches(session, batch: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """First output of a one-input session over ``batch`` (first axis = windows), MAX_BATCH windows per run."""
    if batch.shape[0] == 0:
        return np.zeros((0, session.get_outputs()[0].shape[1]), np.float32)
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: batch[i : i + MAX_BATCH]})[0] for i in range(0, batch.shape[0], MAX_BATCH)]
    return np.concatenate(parts).astype(np.float32)


class OnnxRunner:
    """Owns the classifier's session: class order check, front end, warm-up.

    One compute thread by default: a gateway runs one classifier per core, so the
    real-time factor measured here is per core. ``threads`` bounds the numpy front end
    too: its mel projections are BLAS products, and OpenBLAS would otherwise start one
    thread per core for them, whose spinning doubled the agent's CPU time on a 2-core
    machine (``bench/edge.py``: 18.6x real time per core without the bound, 46.4x with it).
    """

    def __init__(self, model_path: Path = DEFAULT_MODEL, *, threads: int = 1) -> None:
        self.threads = threads
        try:
            graph = Path(model_path).read_bytes()  # once: the fidelity check must see the bytes this session runs
        except OSError as exc:
            raise ClassifierError(f"cannot load model {model_path}: {exc}") from exc
        self.session = open_session(graph, threads=threads, source=model_path)
        meta = self.session.get_modelmeta().custom_metadata_map
        classes = tuple(json.loads(meta.get("classes", "[]")))
        if classes != CLASSES:
            raise ClassifierError(f"model {model_path} has classes {classes}, expected {CLASSES}")
        self.model_id = meta.get("model_id", model_path.stem)[:64]
        try:
            self.features = features.front_end(meta.get("front_end"))
        except features.FeatureError as exc:
            raise ClassifierError(f"model {model_path}: {exc}") from exc
        warm_up = self.features(np.zeros((1, features.WINDOW_SAMPLES), np.float32))  # loads the front end's libraries
        from threadpoolctl import ThreadpoolController

        self._blas = ThreadpoolController()  # after the front end's imports, so it sees their BLAS too
        self.probabilities(warm_up)
        self.fidelity = int8_fidelity.measure(
            graph, self.probabilities,
            lambda batch: run_in_batches(open_session(graph, threads=1, optimise=False, source=model_path), batch),
            self._features)
        if not int8_fidelity.faithful(self.fidelity):
            log.error("model %s computes differently on this CPU: its probabilities differ by up to %.2f from its own "
                      "int8 arithmetic (limit %.2f), so its thresholds and validation figures do not hold here. The "
                      "likely cause is 8-bit weights on an x86 CPU without VNNI: retrain it with this version of "
                      "`sonopolis train-detector` (7-bit weights) or run it on a CPU with VNNI",
                      self.model_id, self.fidelity, int8_fidelity.FIDELITY_LIMIT)

    def window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities (n, len(CLASSES)) of 1 s, 16 kHz windows (n, WINDOW_SAMPLES), through the model's front end."""
        return self.probabilities(self._features(windows))

    def _features(self, windows: np.ndarray) -> np.ndarray:
        with self._blas.limit(limits=self.threads, user_api="blas"):
            return self.features(windows)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (n, len(CLASSES)) of model inputs (front-end features, first axis = windows)."""
        return run_in_batches(self.session, batch)


class EventClassifier:
    """Stateless classifier for whole clips; also the factory of streaming classifiers."""

    sample_rate = features.SAMPLE_RATE

    def __init__(
        self, model_path: Path | None = None, thresholds: Mapping[str, float] | None = None, *, threads: int = 1
    ) -> None:
        self.runner = OnnxRunner(model_path or DEFAULT_MODEL, threads=threads)
        merged = self._thresholds_file_for(Path(model_path) if model_path is not None else DEFAULT_MODEL)
        merged.update(check_thresholds(thresholds or {}))
        missing = set(CLASSES) - {BACKGROUND} - set(merged)
        if missing:
            raise ClassifierError(f"no threshold for classes {sorted(missing)} of model {self.runner.model_id}: put the "
                                  "thresholds.json that train-detector wrote for it beside the model")
        self.thresholds = merged
        self._threshold_row = np.array([merged.get(c, np.inf) for c in CLASSES], np.float32)
        self._threshold_row[CLASSES.index(BACKGROUND)] = np.inf

    def _thresholds_file_for(self, model_path: Path) -> dict[str, float]:
        """The thresholds tuned for this model: ``thresholds.json`` beside it, else the shipped one if it is this model's.

        Thresholds are tuned per model, so a file that names another model id is never applied:
        beside the model it is an error (a half-copied model folder), and the shipped defaults
        are simply not used for another model (its explicit thresholds must then cover every class).
        """
        beside = model_path.parent / "thresholds.json"
        for path, must_match in ((beside, True), (DEFAULT_THRESHOLDS, False)):
            if not path.is_file():
                continue
            declared, tuned = _read_thresholds_file(path)
            if declared in (None, self.runner.model_id):
                return tuned
            if must_match:
                raise ClassifierError(
                    f"{path} holds the thresholds of model {declared}, not of {model_path} ({self.runner.model_id})")
        return {}

    @property
    def model_id(self) -> str:
        return self.runner.model_id

    def window_probabilities(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Class probabilities of every 1 s window of a clip, (n_windows, len(CLASSES))."""
        _, windows = features.clip_windows(features.resample_to_model_rate(audio, sample_rate))
        return self.runner.window_probabilities(windows)

    def fired(self, probabilities: np.ndarray) -> np.ndarray:
        """Boolean (n_windows, len(CLASSES)): which classes reach their threshold."""
        return probabilities >= self._threshold_row

    def classify_clip(self, audio: np.ndarray, sample_rate: int, start: datetime = EPOCH) -> list[Detection]:
        """Detections of a clip, with onsets relative to ``start`` (default: the epoch)."""
        audio = features.resample_to_model_rate(audio, sample_rate)
        if audio.size < features.WINDOW_SAMPLES:
            audio = np.pad(audio, (0, features.WINDOW_SAMPLES - audio.size))
        return self.stream().feed(audio, start)

    def stream(self) -> StreamingClassifier:
        """A streaming classifier sharing this session and thresholds."""
        return StreamingClassifier(_shared=self)


class StreamingClassifier:
    """Stateful classifier over a 16 kHz stream fed in chunks of any size."""

    sample_rate = features.SAMPLE_RATE

    def __init__(
        self,
        model_path: Path | None = None,
        thresholds: Mapping[str, float] | None = None,
        *,
        threads: int = 1,
        _shared: EventClassifier | None = None,
    ) -> None:
        self.classifier = _shared or EventClassifier(model_path, thresholds, threads=threads)
        self.reset()

    @property
    def model_id(self) -> str:
        return self.classifier.model_id

    def reset(self) -> None:
        """Forget the stream (after a gap): drops the in-memory tail."""
        self._tail = np.zeros(0, np.float32)
        self._tail_index = 0  # absolute index of _tail[0]
        self._n = 0  # absolute index of the next sample to arrive
        self._next_window = 0
        self._anchor: tuple[int, datetime] | None = None
        self._active: set[str] = set()

    def _time_of(self, index: int) -> datetime:
        assert self._anchor is not None
        anchor_index, anchor_time = self._anchor
        return anchor_time + timedelta(seconds=(index - anchor_index) / self.sample_rate)

    def feed(self, samples: np.ndarray, start: datetime) -> list[Detection]:
        """Classify ``samples`` (float32, 16 kHz) whose first sample was taken at ``start``.

        A chunk that does not follow on from the previous one (gap or overlap above
        250 ms) starts a new stream. Naive datetimes are taken as UTC.
        """
        audio = features.check_audio(samples)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if self._anchor is not None and abs(start - self._time_of(self._n)) > GAP_TOLERANCE:
            log.warning("stream discontinuity of %.3f s: restarting windows", (start - self._time_of(self._n)).total_seconds())
            self.reset()
        self._anchor = (self._n, start)
        self._tail = np.concatenate([self._tail, audio]) if self._tail.size else audio
        self._n += audio.size

        starts = np.arange(self._next_window, self._n - features.WINDOW_SAMPLES + 1, features.WINDOW_HOP, dtype=np.int64)
        if starts.size == 0:
            self._trim()
            return []
        local = starts - self._tail_index
        windows = np.stack([self._tail[i : i + features.WINDOW_SAMPLES] for i in local])
        probabilities = self.classifier.runner.window_probabilities(windows)
        fired = self.classifier.fired(probabilities)
        detections: list[Detection] = []
        for k, window_index in enumerate(local):
            now = {CLASSES[j] for j in np.nonzero(fired[k])[0]}
            for label in sorted(now - self._active, key=CLASSES.index):
                detections.append(self._detection(label, float(probabilities[k, CLASSES.index(label)]), int(window_index)))
            self._active = now
        self._next_window = int(starts[-1]) + features.WINDOW_HOP
        self._trim()
        return detections

    def _detection(self, label: str, confidence: float, window_index: int) -> Detection:
        window = self._tail[window_index : window_index + features.WINDOW_SAMPLES]
        onset_index = estimate_onset(self._tail, window_index - features.WINDOW_HOP, window_index + features.WINDOW_SAMPLES)
        return Detection(
            label=label,
            confidence=min(1.0, max(0.0, confidence)),
            onset=_to_ms(self._time_of(self._tail_index + onset_index)),
            window_start=_to_ms(self._time_of(self._tail_index + window_index)),
            level_dbfs=round(features.level_dbfs(window), 2),
        )

    def _trim(self) -> None:
        """Keep only what the next window and its onset look-back need (<= 1.5 s)."""
        keep_from = max(self._tail_index, self._next_window - features.WINDOW_HOP)
        drop = keep_from - self._tail_index
        if drop > 0:
            self._tail = self._tail[drop:].copy()
            self._tail_index = keep_from
