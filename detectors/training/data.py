"""Training data: real clips, a split by source recording, and augmented 1 s windows.

* The split keeps every clip of one ``source_group`` (one source recording, one
  weapon, one Edge-Impulse sample...) on the same side, so validation measures
  generalisation to *recordings never heard*, as the hidden evaluation set does.
* Augmentation mixes each event into a random street/background crop at an SNR of
  0-30 dB (or leaves it clean), shifts it in the window and draws the overall level
  between -50 and -10 dBFS; background windows are sometimes mixes of two
  backgrounds; windows may go through a random recording chain (tilt, high/low-pass)
  and 8-bit quantisation so that no source's channel colouring tells its class, and
  may be played 0.8-1.25x faster (another weapon's calibre, another voice's pitch).
  Fresh augmented windows are drawn at each training round.

Audio is held in memory only while the script runs; nothing derived from it is
written except the model.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detectors import features
from detectors.classifier import BACKGROUND, CLASSES
from detectors.evaluation import load_clip
from detectors.training.synth import spray_can_clip

W = features.WINDOW_SAMPLES


class DataError(ValueError):
    """The training folder is unusable (missing LABELS.csv column, unknown label, bad file)."""


@dataclass
class Clip:
    label: str
    audio: np.ndarray
    group: str
    source: str
    license: str
    kind: str = ""  # the source dataset's own class (``original_label``), e.g. rooster
    peak: int = field(init=False)

    def __post_init__(self) -> None:
        self.peak = loudest_point(self.audio)


def loudest_point(audio: np.ndarray) -> int:
    """Centre of the loudest 100 ms (the README cut event clips around it)."""
    if audio.size <= 1600:
        return audio.size // 2
    energy = np.convolve(np.square(audio, dtype=np.float64), np.ones(1600), mode="valid")
    return int(np.argmax(energy)) + 800


def load_training_clips(folder: Path) -> list[Clip]:
    """All clips of ``folder/LABELS.csv`` (needs path, label, source_group columns)."""
    labels = folder / "LABELS.csv"
    try:
        with labels.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"cannot read {labels}: {exc}") from exc
    clips = []
    for line, row in enumerate(rows, start=2):
        if row.get("label") not in CLASSES:
            raise DataError(f"{labels}:{line}: unknown label {row.get('label')!r}")
        if not row.get("source_group"):
            raise DataError(f"{labels}:{line}: no source_group (needed for the split by recording)")
        audio, rate = load_clip(folder / row["path"])
        audio = features.resample_to_model_rate(audio, rate)
        clips.append(Clip(row["label"], audio, row["source_group"], row.get("source_repo", ""), row.get("license", ""),
                          row.get("original_label", "") or row["label"]))
    return clips


def _group_sizes(clips: list[Clip]) -> dict[str, dict[str, int]]:
    """label -> source group -> number of clips (what the split and the folds balance)."""
    by_label: dict[str, dict[str, int]] = {}
    for clip in clips:
        by_label.setdefault(clip.label, {}).setdefault(clip.group, 0)
        by_label[clip.label][clip.group] += 1
    return by_label


def split_by_group(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(train, validation): per label, whole source groups go to validation until ``fraction`` of its clips.

    Groups are ordered by a seeded hash, so the split is stable across runs and
    machines. A group that spans labels goes wherever its first label sends it.
    """
    by_label = _group_sizes(clips)
    validation_groups: set[str] = set()
    decided: set[str] = set()
    for label in sorted(by_label):
        groups = by_label[label]
        total = sum(groups.values())
        order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        taken = sum(groups[g] for g in order if g in validation_groups)
        for group in order:
            if group in decided:
                continue
            if taken < fraction * total and len(groups) > 1 and taken + groups[group] <= max(0.5 * total, 1):
                validation_groups.add(group)
                taken += groups[group]
            decided.add(group)
    train = [c for c in clips if c.group not in validation_groups]
    validation = [c for c in clips if c.group in validation_groups]
    return train, validation


def group_folds(clips: list[Clip], folds: int, seed: int) -> list[int]:
    """Fold (0..folds-1) of each clip: whole source groups, each label spread evenly over the folds.

    Per label, groups from the biggest down (ties in a seeded-hash order) each go to the
    fold that holds the fewest clips of that label so far (ties to the lower fold), so every fold has about
    ``1/folds`` of every class and no recording is on two sides. A group that spans labels
    stays where its first label (alphabetically) put it. Stable across runs and machines.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    by_label = _group_sizes(clips)
    fold_of_group: dict[str, int] = {}
    for label in sorted(by_label):
        groups = by_label[label]
        load = [0] * folds
        for group, n in groups.items():
            if group in fold_of_group:
                load[fold_of_group[group]] += n
        for group in sorted(groups, key=lambda g: (-groups[g], hashlib.sha256(f"fold:{seed}:{g}".encode()).hexdigest())):
            if group not in fold_of_group:
                fold_of_group[group] = min(range(folds), key=lambda k: (load[k], k))
                load[fold_of_group[group]] += groups[group]
    return [fold_of_group[c.group] for c in clips]


def synthetic_spray_cans(n: int, seed: int, group_prefix: str) -> list[Clip]:
    rng = np.random.default_rng(seed)
    return [Clip("spray_can", spray_can_clip(rng), f"{group_prefix}:{i}", "synthetic", "project (synthetic)") for i in range(n)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-9


def _crop(audio: np.ndarray, start: int, length: int = W) -> np.ndarray:
    out = np.zeros(length, np.float32)
    lo, hi = max(0, start), min(audio.size, start + length)
    if hi > lo:
        out[lo - start : hi - start] = audio[lo:hi]
    return out


def _at_speed(segment: np.ndarray) -> np.ndarray:
    """A segment of ``speed x W`` samples played back in W samples (pitch and tempo x speed)."""
    if segment.size == W:
        return segment
    from scipy.signal import resample

    return resample(segment.astype(np.float64), W).astype(np.float32)


def _event_window(clip: Clip, rng: np.random.Generator, speed: float = 1.0) -> np.ndarray:
    """1 s crop with the clip's loudest point somewhere inside (5-95 %), played at ``speed``."""
    span = int(round(W * speed))
    if clip.audio.size <= span:
        offset = int(rng.integers(0, span - clip.audio.size + 1))
        return _at_speed(_crop(clip.audio, -offset, span))
    return _at_speed(_crop(clip.audio, clip.peak - int(rng.uniform(0.05, 0.95) * span), span))


def background_weights(clips: list[Clip], kind_share: float) -> np.ndarray:
    """Sampling probabilities of background clips: ``kind_share`` spread evenly over source classes.

    The background is dominated by a few big sources (SESA ``casual``, Edge-Impulse
    chunks, speech) while the sounds that cause false alarms (roosters, cats, laughing,
    door knocks...) have ~6 clips each. Giving every ``kind`` an equal slice of
    ``kind_share`` shows those hard negatives several times more often; the rest stays
    uniform over clips so the common street backgrounds are not forgotten.
    """
    if not clips:
        return np.zeros(0)
    kinds: dict[str, int] = {}
    for clip in clips:
        kinds[clip.kind] = kinds.get(clip.kind, 0) + 1
    weights = np.array([(1 - kind_share) / len(clips) + kind_share / (len(kinds) * kinds[c.kind]) for c in clips])
    return weights / weights.sum()


def _background_window(
    clips: list[Clip], rng: np.random.Generator, weights: np.ndarray | None = None, speed: float = 1.0
) -> np.ndarray:
    clip = clips[int(rng.choice(len(clips), p=weights))] if weights is not None else clips[int(rng.integers(len(clips)))]
    span = int(round(W * speed))
    start = int(rng.integers(0, max(1, clip.audio.size - span + 1)))
    return _at_speed(_crop(clip.audio, start, span))


def random_colouring(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The window through a random recording chain: spectral tilt, maybe a high-pass and a low-pass.

    Each source here has its own channel colouring (SESA's 8-bit Freesound uploads,
    YouTube codecs, one Edge-Impulse microphone); a network can learn "this colouring
    means gunshot" instead of the sound itself. A random tilt of -4..+4 dB per octave
    around 1 kHz, a 2nd-order high-pass at 50-600 Hz (half the time) and a 2nd-order
    low-pass at 2.5-7.5 kHz (half the time), applied as a zero-phase gain on the
    window's spectrum, make the colouring uninformative.
    """
    spectrum = np.fft.rfft(x.astype(np.float64))
    freqs = np.maximum(np.fft.rfftfreq(x.size, 1.0 / features.SAMPLE_RATE), 10.0)
    gain_db = rng.uniform(-4.0, 4.0) * np.log2(freqs / 1000.0)
    if rng.random() < 0.5:
        cutoff = float(np.exp(rng.uniform(np.log(50.0), np.log(600.0))))
        gain_db -= 10.0 * np.log10(1.0 + (cutoff / freqs) ** 4)
    if rng.random() < 0.5:
        cutoff = float(np.exp(rng.uniform(np.log(2500.0), np.log(7500.0))))
        gain_db -= 10.0 * np.log10(1.0 + (freqs / cutoff) ** 4)
    gain_db = np.clip(gain_db, -60.0, 20.0)
    return np.fft.irfft(spectrum * 10.0 ** (gain_db / 20.0), n=x.size).astype(np.float32)


def quantise_8bit(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8-bit quantisation at a random headroom (0-20 dB below the peak): SESA's noise floor on any source."""
    full_scale = float(np.abs(x).max()) * 10 ** (rng.uniform(0.0, 20.0) / 20.0) + 1e-9
    return (np.round(x / full_scale * 127.0) / 127.0 * full_scale).astype(np.float32)


def _set_level(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    target = 10 ** (rng.uniform(-50.0, -10.0) / 20.0)
    return np.clip(x * (target / _rms(x)), -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """How training windows are drawn (defaults = the recipe of the shipped model)."""

    mix_probability: float = 0.65  # share of event windows mixed into a background crop
    snr_db: tuple[float, float] = (0.0, 30.0)  # event-to-background RMS ratio of those mixes
    hard_negative_share: float = 0.0  # see background_weights
    colouring_probability: float = 0.0  # share of windows through random_colouring
    quantise_probability: float = 0.0  # share of windows through quantise_8bit
    speed_probability: float = 0.0  # share of windows played faster or slower (event and background alike)
    speed_range: tuple[float, float] = (0.8, 1.25)  # playback speed of those windows, log-uniform

    def speed(self, rng: np.random.Generator) -> float:
        """Playback speed of the next window; draws nothing when off, so older recipes replay identically."""
        if not self.speed_probability or rng.random() >= self.speed_probability:
            return 1.0
        return float(np.exp(rng.uniform(np.log(self.speed_range[0]), np.log(self.speed_range[1]))))


def augmented_windows(
    clips: list[Clip], per_class: dict[str, int], rng: np.random.Generator, augmentation: Augmentation = Augmentation()
) -> tuple[np.ndarray, np.ndarray]:
    """(``logmel64`` model inputs, labels) of freshly augmented 1 s windows, ``per_class[label]`` of each."""
    stacked, labels = augmented_audio(clips, per_class, rng, augmentation)
    inputs = np.concatenate([features.window_features(stacked[i : i + 256]) for i in range(0, len(stacked), 256)])
    return inputs, labels


def augmented_audio(
    clips: list[Clip], per_class: dict[str, int], rng: np.random.Generator, augmentation: Augmentation = Augmentation()
) -> tuple[np.ndarray, np.ndarray]:
    """(1 s audio windows (n, W), labels) freshly augmented, ``per_class[label]`` of each, shuffled.

    Audio rather than features so that any front end can be trained on the same draws.
    """
    background = [c for c in clips if c.label == BACKGROUND]
    weights = background_weights(background, augmentation.hard_negative_share) if augmentation.hard_negative_share else None
    by_label = {label: [c for c in clips if c.label == label] for label in CLASSES}
    windows: list[np.ndarray] = []
    labels: list[int] = []
    for label, count in per_class.items():
        pool = by_label[label]
        if not pool:
            continue
        for _ in range(count):
            speed = augmentation.speed(rng)
            if label == BACKGROUND:
                x = _background_window(background, rng, weights, speed)
                if rng.random() < 0.3:
                    other = _background_window(background, rng, weights)
                    x = x + other * (_rms(x) / _rms(other)) * 10 ** (rng.uniform(-15, 5) / 20)
            else:
                x = _event_window(pool[int(rng.integers(len(pool)))], rng, speed)
                if rng.random() < augmentation.mix_probability:
                    noise = _background_window(background, rng, weights)
                    snr = rng.uniform(*augmentation.snr_db)
                    x = x + noise * (_rms(x) / _rms(noise)) * 10 ** (-snr / 20)
            if augmentation.colouring_probability and rng.random() < augmentation.colouring_probability:
                x = random_colouring(x, rng)
            if augmentation.quantise_probability and rng.random() < augmentation.quantise_probability:
                x = quantise_8bit(x, rng)
            windows.append(_set_level(x, rng))
            labels.append(CLASSES.index(label))
    order = rng.permutation(len(labels))
    return np.stack(windows)[order], np.asarray(labels, np.int64)[order]
