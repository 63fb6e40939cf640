"""Clip-level evaluation of the sound-event classifier (``sonopolis eval-detector``).

A folder holds clips and a ``LABELS.csv`` (``path,label``, paths relative to the
folder; extra columns are ignored). Each clip is cut into the classifier's 1 s
windows; its prediction is the highest-confidence class that fired on any window
(``background`` when none fired). Scores:

* per-class precision / recall / F1 at clip level;
* ``macro_f1_security``: mean F1 over the security classes present (as true labels)
  in the folder, so a folder without spray-can clips is not scored on spray cans;
* ``background_false_alarm_rate``: fraction of ``background`` clips on which *any*
  security class fired on *any* window (stricter than "predicted a security class").

The training script scores its validation split with the same functions, so the
numbers in the model card and those of ``eval-detector`` are computed alike.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from detectors.classifier import BACKGROUND, CLASSES, SECURITY_CLASSES, EventClassifier


class EvaluationError(ValueError):
    """The evaluation folder or its LABELS.csv is unusable (says which row and why)."""


class LabelledClip(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    label: str


class ClipResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    predicted: str
    confidence: float
    security_fired: bool


class ClassScore(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


class EvalReport(BaseModel):
    clips: int
    per_class: dict[str, ClassScore]
    security_classes_present: list[str]
    macro_f1_security: float
    background_clips: int
    background_false_alarms: int
    background_false_alarm_rate: float


def read_labels(folder: Path) -> list[LabelledClip]:
    """Rows of ``folder/LABELS.csv``; an unknown label or missing file is an error naming the row."""
    labels_file = folder / "LABELS.csv"
    try:
        with labels_file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
                raise EvaluationError(f"{labels_file}: needs columns path,label (got {reader.fieldnames})")
            rows = list(reader)
    except OSError as exc:
        raise EvaluationError(f"cannot read {labels_file}: {exc}") from exc
    clips: list[LabelledClip] = []
    for line, row in enumerate(rows, start=2):
        label = (row["label"] or "").strip()
        if label not in CLASSES:
            raise EvaluationError(f"{labels_file}:{line}: unknown label {label!r} (expected one of {', '.join(CLASSES)})")
        path = folder / (row["path"] or "").strip()
        if not path.is_file():
            raise EvaluationError(f"{labels_file}:{line}: clip {row['path']!r} not found")
        clips.append(LabelledClip(path=path, label=label))
    if not clips:
        raise EvaluationError(f"{labels_file}: no clips")
    return clips


def load_clip(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of an audio file (stereo is averaged)."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise EvaluationError(f"cannot decode {path}: {exc}") from exc
    return audio.mean(axis=1).astype(np.float32), int(rate)


def clip_result(label: str, probabilities: np.ndarray, fired: np.ndarray) -> ClipResult:
    """Prediction of one clip from its per-window probabilities and fired flags."""
    scores = np.where(fired, probabilities, -1.0)
    best = np.unravel_index(int(np.argmax(scores)), scores.shape) if scores.size else None
    security = [CLASSES.index(c) for c in SECURITY_CLASSES]
    security_fired = bool(fired[:, security].any()) if fired.size else False
    if best is None or scores[best] < 0:
        background = probabilities[:, CLASSES.index(BACKGROUND)]
        return ClipResult(label=label, predicted=BACKGROUND, confidence=float(background.min(initial=1.0)), security_fired=False)
    return ClipResult(label=label, predicted=CLASSES[best[1]], confidence=float(scores[best]), security_fired=security_fired)


def score(results: Sequence[ClipResult]) -> EvalReport:
    """Clip-level metrics of a set of results."""
    per_class: dict[str, ClassScore] = {}
    for cls in CLASSES:
        tp = sum(1 for r in results if r.label == cls and r.predicted == cls)
        support = sum(1 for r in results if r.label == cls)
        predicted = sum(1 for r in results if r.predicted == cls)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[cls] = ClassScore(precision=precision, recall=recall, f1=f1, support=support, predicted=predicted)
    present = [c for c in SECURITY_CLASSES if per_class[c].support]
    macro = float(np.mean([per_class[c].f1 for c in present])) if present else 0.0
    background = [r for r in results if r.label == BACKGROUND]
    alarms = sum(1 for r in background if r.security_fired)
    return EvalReport(
        clips=len(results),
        per_class=per_class,
        security_classes_present=present,
        macro_f1_security=macro,
        background_clips=len(background),
        background_false_alarms=alarms,
        background_false_alarm_rate=alarms / len(background) if background else 0.0,
    )


def evaluate(
    classifier: EventClassifier, clips: Iterable[LabelledClip], *, on_clip: Callable[[], None] | None = None
) -> EvalReport:
    """Run the classifier over labelled clips and score them."""
    results = []
    for clip in clips:
        audio, rate = load_clip(clip.path)
        probabilities = classifier.window_probabilities(audio, rate)
        results.append(clip_result(clip.label, probabilities, classifier.fired(probabilities)))
        if on_clip:
            on_clip()
    return score(results)


def report_lines(report: EvalReport) -> list[str]:
    """Human-readable table; the last line is the machine-readable summary."""
    lines = [f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'clips':>6} {'predicted':>9}"]
    for cls, s in report.per_class.items():
        lines.append(f"{cls:<12} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {s.support:>6d} {s.predicted:>9d}")
    lines.append(f"security classes scored: {', '.join(report.security_classes_present) or 'none'}")
    lines.append(
        f"background false alarms: {report.background_false_alarms}/{report.background_clips} background clips"
    )
    lines.append(summary_line(report))
    return lines


def summary_line(report: EvalReport) -> str:
    return (
        f"eval: clips={report.clips} macro_f1_security={report.macro_f1_security:.4f} "
        f"background_false_alarm_rate={report.background_false_alarm_rate:.4f}"
    )
