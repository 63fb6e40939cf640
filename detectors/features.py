"""Features of 1 s analysis windows, the one feature code of the classifier.

Training (``detectors.training``) and inference (``detectors.classifier``) both call
these functions, so a network is always fed exactly what it was trained on: no second
implementation that could drift. Pure numpy/scipy; the audio only ever lives in the
arrays passed in.

Windows are 1 s of 16 kHz audio (16 000 samples) starting every 0.5 s, whatever the
front end, so a stream and a file cut into the same windows give the same features.
Three front ends exist, named in each model's ONNX metadata (``front_end``,
:data:`FRONT_ENDS`):

* ``logmel64`` (:func:`window_features`): 512-point Hann frames every 10 ms, 64 mel
  bands 50 Hz-8 kHz, dB minus the window mean; the project's own small CNNs.
* ``sfx96`` (:func:`sfx_window_features`): the input of the pretrained sound-effects
  backbone (aiSFX, Ma & Lerch, ISMIR 2022): the window resampled to 44.1 kHz,
  peak-normalised, 2048-point Hann frames every 1024 samples (centred, 44 frames), 96
  HTK-mel bands 0-22.05 kHz of unit area, log10(1 + 10^4 x) / 9.4578. The backbone was
  trained on that geometry; at 16 kHz the bands above 8 kHz hold only the resampler's
  images, ~60 dB down (visible on this log scale, identical in training and inference).
* ``yamnet64`` (:func:`yamnet_window_features`): the input of YAMNet (Google, trained on
  AudioSet): 25 ms periodic Hann frames every 10 ms, 512-point FFT magnitude, 64 mel
  bands 125-7500 Hz (TensorFlow's triangles, drawn on the mel axis), ``log(x + 0.001)``;
  the central 96 frames (0.96 s) of each window, scaled to a peak of 0.5 first. The
  log-mel is checked against TensorFlow's YAMNet to ~1e-5 (``tests/detectors/test_yamnet.py``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16_000
N_FFT = 512
FRAME_HOP = 160
N_MELS = 64
F_MIN = 50.0
F_MAX = 8_000.0
WINDOW_SAMPLES = SAMPLE_RATE  # 1.0 s analysis window
WINDOW_HOP = SAMPLE_RATE // 2  # 0.5 s between window starts
WINDOW_FRAMES = 1 + (WINDOW_SAMPLES - N_FFT) // FRAME_HOP  # 97
FLOOR_DB = -120.0
INPUT_SCALE_DB = 20.0
"""Model inputs are (log-mel dB - window mean) / 20: level-independent shape."""


class FeatureError(ValueError):
    """Audio that cannot be turned into features (wrong shape, rate, or non-finite)."""


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = F_MIN, fmax: float = F_MAX
) -> np.ndarray:
    """Triangular mel filters, shape (n_fft // 2 + 1, n_mels), area-normalised (Slaney).

    Area normalisation keeps a broadband noise flat across bands, so wide high bands
    do not dominate the log-mel image just for being wide.
    """
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bank = _triangles(np.fft.rfftfreq(n_fft, 1.0 / sample_rate), edges) * (2.0 / (edges[2:] - edges[:-2]))
    bank.setflags(write=False)
    return bank.astype(np.float32)


def _triangles(freqs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(len(freqs), len(edges) - 2) unit-peak triangles, band m rising from edges[m] to edges[m+1], falling to edges[m+2]."""
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]
    f = freqs[:, None]
    return np.maximum(0.0, np.minimum((f - lo) / (centre - lo), (hi - f) / (hi - centre)))


def mel_band_centres(n_mels: int = N_MELS, fmin: float = F_MIN, fmax: float = F_MAX) -> np.ndarray:
    """Centre frequency (Hz) of each mel band, in feature order."""
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)[1:-1])


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    # Scale so that a full-scale sine reads about 0 dB in its band.
    return window * np.float32(2.0 / window.sum())


def check_audio(samples: np.ndarray) -> np.ndarray:
    """Mono float32 view of ``samples`` or a :class:`FeatureError` saying what is wrong."""
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise FeatureError(f"expected mono audio (1-D array), got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise FeatureError(f"expected float samples in [-1, 1], got dtype {audio.dtype}")
    audio = audio.astype(np.float32, copy=False)
    if audio.size and not np.isfinite(audio).all():
        raise FeatureError("audio contains NaN or infinite samples")
    return audio


def resample_to_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (scipy ``resample_poly``); identity at 16 kHz."""
    audio = check_audio(samples)
    if sample_rate == SAMPLE_RATE:
        return audio
    if sample_rate <= 0:
        raise FeatureError(f"sample rate must be positive, got {sample_rate}")
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(SAMPLE_RATE, int(sample_rate))
    return resample_poly(audio, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)


def log_mel_frames(frames: np.ndarray) -> np.ndarray:
    """Log-mel power (dB re full scale) of frames shaped (..., N_FFT) -> (..., N_MELS)."""
    from scipy import fft  # pocketfft in float32: ~5x numpy's rfft here

    shape = frames.shape[:-1]
    spectrum = fft.rfft((frames * _hann()).reshape(-1, N_FFT), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = power @ mel_filterbank()  # 2-D product: BLAS, not numpy's slow batched matmul
    log_mel = np.maximum(10.0 * np.log10(mel + 1e-12, dtype=np.float32), FLOOR_DB).astype(np.float32)
    return log_mel.reshape(*shape, N_MELS)


def window_starts(n_samples: int) -> np.ndarray:
    """Start offsets of every complete 1 s window in a clip of ``n_samples`` (hop 0.5 s)."""
    if n_samples < WINDOW_SAMPLES:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - WINDOW_SAMPLES + 1, WINDOW_HOP, dtype=np.int64)


def window_log_mel(windows: np.ndarray) -> np.ndarray:
    """Log-mel images of 1 s windows: (n, WINDOW_SAMPLES) -> (n, N_MELS, WINDOW_FRAMES)."""
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES:
        raise FeatureError(f"expected windows shaped (n, {WINDOW_SAMPLES}), got {windows.shape}")
    frames = sliding_window_view(windows, N_FFT, axis=1)[:, ::FRAME_HOP]  # (n, 97, 512) view
    return np.ascontiguousarray(log_mel_frames(frames).transpose(0, 2, 1))


def normalise(log_mel: np.ndarray) -> np.ndarray:
    """Model input from log-mel images (n, mels, frames) -> (n, 1, mels, frames).

    Subtracting each window's mean makes the input independent of the gain of the
    microphone chain (levels are kept separately, in dBFS, on each detection).
    """
    centred = log_mel - log_mel.mean(axis=(1, 2), keepdims=True)
    return (centred / INPUT_SCALE_DB).astype(np.float32)[:, None, :, :]


def window_features(windows: np.ndarray) -> np.ndarray:
    """Network input for 1 s windows (n, WINDOW_SAMPLES) -> (n, 1, N_MELS, WINDOW_FRAMES)."""
    return normalise(window_log_mel(windows))


SFX_RATE = 44_100
SFX_N_FFT = 2048
SFX_HOP = 1024
SFX_N_MELS = 96
SFX_LOG_MAX = 9.457798957824707
"""The backbone's own min-max scaling (the maximum over its training spectrograms)."""
SFX_FRAMES = 1 + (SFX_RATE * WINDOW_SAMPLES // SAMPLE_RATE) // SFX_HOP  # 44 centred frames per 1 s window


@lru_cache(maxsize=1)
def sfx_mel_filterbank() -> np.ndarray:
    """(SFX_N_FFT // 2 + 1, 96) HTK-mel triangles from 0 Hz to Nyquist, each summing to 1 (Essentia ``unit_sum``)."""
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(SFX_RATE / 2), SFX_N_MELS + 2))
    bank = _triangles(np.fft.rfftfreq(SFX_N_FFT, 1.0 / SFX_RATE), edges)
    bank /= np.maximum(bank.sum(axis=0, keepdims=True), 1e-12)
    out = bank.astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def _sfx_hann() -> np.ndarray:
    return np.hanning(SFX_N_FFT + 1)[:-1].astype(np.float32)


@lru_cache(maxsize=1)
def _sfx_resampling_filter() -> np.ndarray:
    """The low-pass FIR ``resample_poly(x, 441, 160)`` designs for float32 input, designed once.

    scipy designs this 8 821-tap filter on every call (a Kaiser window and a sinc), which
    cost more than the resampling itself; passed as ``window`` it gives identical output
    (scipy copies it before scaling).
    """
    from scipy.signal import firwin

    out = firwin(2 * 10 * 441 + 1, 1.0 / 441, window=("kaiser", 5.0)).astype(np.float32)
    out.setflags(write=False)
    return out


def sfx_window_features(windows: np.ndarray) -> np.ndarray:
    """Backbone input for 1 s windows (n, WINDOW_SAMPLES) -> (n, SFX_FRAMES, SFX_N_MELS).

    Peak normalisation per window makes the input independent of the microphone gain,
    as the mean removal of ``logmel64`` does (levels travel separately, in dBFS).
    """
    from scipy import fft
    from scipy.signal import resample_poly

    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES:
        raise FeatureError(f"expected windows shaped (n, {WINDOW_SAMPLES}), got {windows.shape}")
    up = resample_poly(windows, 441, 160, axis=1, window=_sfx_resampling_filter()).astype(np.float32)  # 16 -> 44.1 kHz
    peak = np.abs(up).max(axis=1, keepdims=True)
    up /= np.where(peak > 0, peak, 1.0)
    padded = np.pad(up, ((0, 0), (SFX_N_FFT // 2, SFX_N_FFT // 2)), mode="reflect")
    frames = sliding_window_view(padded, SFX_N_FFT, axis=1)[:, ::SFX_HOP]  # (n, 44, 2048) view
    spectrum = fft.rfft(frames * _sfx_hann(), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = (power.reshape(-1, power.shape[-1]) @ sfx_mel_filterbank()).reshape(*power.shape[:2], SFX_N_MELS)
    return (np.log10(1.0 + 1e4 * mel) / SFX_LOG_MAX).astype(np.float32)


YAMNET_FRAME = 400  # 25 ms
YAMNET_HOP = 160  # 10 ms
YAMNET_N_FFT = 512
YAMNET_N_MELS = 64
YAMNET_F_MIN = 125.0
YAMNET_F_MAX = 7_500.0
YAMNET_LOG_OFFSET = 0.001
YAMNET_FRAMES = 96  # YAMNet's patch: 0.96 s
_YAMNET_FIRST_FRAME = (1 + (WINDOW_SAMPLES - YAMNET_FRAME) // YAMNET_HOP - YAMNET_FRAMES) // 2  # 1 of the 98 frames


@lru_cache(maxsize=1)
def yamnet_mel_matrix() -> np.ndarray:
    """(257, 64) as ``tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125, 7500)``: triangles on the mel axis, DC zeroed."""
    bins_mel = _hz_to_mel(np.fft.rfftfreq(YAMNET_N_FFT, 1.0 / SAMPLE_RATE))
    bank = _triangles(bins_mel, np.linspace(_hz_to_mel(YAMNET_F_MIN), _hz_to_mel(YAMNET_F_MAX), YAMNET_N_MELS + 2))
    bank[0] = 0.0
    out = bank.astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def _yamnet_hann() -> np.ndarray:
    return np.hanning(YAMNET_FRAME + 1)[:-1].astype(np.float32)  # periodic, as tf.signal.stft


YAMNET_PEAK = 0.5
"""Each window's peak before YAMNet's log-mel: gain independence, as sfx96's peak normalisation."""


def yamnet_log_mel(windows: np.ndarray) -> np.ndarray:
    """YAMNet's own log-mel patch of 1 s windows (n, WINDOW_SAMPLES) -> (n, YAMNET_FRAMES, YAMNET_N_MELS), as TensorFlow's."""
    from scipy import fft

    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES:
        raise FeatureError(f"expected windows shaped (n, {WINDOW_SAMPLES}), got {windows.shape}")
    frames = sliding_window_view(windows, YAMNET_FRAME, axis=1)[:, ::YAMNET_HOP]
    frames = frames[:, _YAMNET_FIRST_FRAME : _YAMNET_FIRST_FRAME + YAMNET_FRAMES]  # (n, 96, 400) view
    spectrum = fft.rfft(frames * _yamnet_hann(), n=YAMNET_N_FFT, axis=-1)
    magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = (magnitude.reshape(-1, magnitude.shape[-1]) @ yamnet_mel_matrix()).reshape(*magnitude.shape[:2], YAMNET_N_MELS)
    return np.log(mel + np.float32(YAMNET_LOG_OFFSET)).astype(np.float32)


def yamnet_window_features(windows: np.ndarray) -> np.ndarray:
    """YAMNet input for 1 s windows: each window scaled to a peak of :data:`YAMNET_PEAK`, then :func:`yamnet_log_mel`.

    YAMNet reads absolute ``log(magnitude + 0.001)``: unscaled, a street event 40 dB below
    full scale sinks towards its "silence" floor. Peak scaling makes the input independent
    of the microphone gain, as ``sfx96`` does (levels travel separately, in dBFS); it
    scored better than unscaled input on the cross-validation (``EXPERIMENTS.md``).
    """
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2:
        raise FeatureError(f"expected windows shaped (n, {WINDOW_SAMPLES}), got {windows.shape}")
    peak = np.abs(windows).max(axis=1, keepdims=True)
    return yamnet_log_mel(windows / np.where(peak > 0, peak, 1.0) * np.float32(YAMNET_PEAK))


FRONT_ENDS = {"logmel64": window_features, "sfx96": sfx_window_features, "yamnet64": yamnet_window_features}
"""Front ends by the name a model's ONNX metadata gives (``front_end``; absent = ``logmel64``)."""
DEFAULT_FRONT_END = "logmel64"


def front_end(name: str | None):  # noqa: ANN201 - returns a feature function
    """The feature function a model was trained on; a clear error for an unknown name.

    ``"a+b"`` names a model fed by two front ends (one backbone each): its single input
    is each window's ``a`` features, flattened, followed by its ``b`` features, and the
    graph cuts them apart again. One input keeps one code path for every model.
    """
    names = (name or DEFAULT_FRONT_END).split("+")
    unknown = [n for n in names if n not in FRONT_ENDS]
    if unknown or len(set(names)) != len(names):
        raise FeatureError(f"unknown front end {name!r}; known: {sorted(FRONT_ENDS)}, or several joined by '+'")
    if len(names) == 1:
        return FRONT_ENDS[names[0]]
    parts = [FRONT_ENDS[n] for n in names]

    def joined(windows: np.ndarray) -> np.ndarray:
        return np.concatenate([f(windows).reshape(len(windows), -1) for f in parts], axis=1)

    return joined


def clip_windows(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, windows) of a 16 kHz clip; a clip shorter than 1 s is zero-padded to one window."""
    audio = check_audio(audio)
    if audio.size < WINDOW_SAMPLES:
        audio = np.pad(audio, (0, WINDOW_SAMPLES - audio.size))
    starts = window_starts(audio.size)
    windows = sliding_window_view(audio, WINDOW_SAMPLES)[starts]
    return starts, windows


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (a full-scale sine reads -3 dBFS); -120 for silence."""
    if samples.size == 0:
        return FLOOR_DB
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(FLOOR_DB, 20.0 * np.log10(rms + 1e-12))
