"""Where audio comes from: a WAV/FLAC file or folder, raw PCM on stdin, a sound card.

Every source yields :data:`Block` s: mono float32 samples (full scale = 1.0) of at most
``block_s`` seconds, with the UTC time their first sample was captured where the source
knows it (the sound card; ``None`` for files and stdin, whose time is the sample count
from ``--start``). No source keeps more than a bounded ring buffer of audio: files are
read block by block, stdin in fixed chunks, and the sound card's callback writes into a
:class:`~detectors.ringbuffer.RingBuffer` that the agent drains. Nothing here writes
audio anywhere.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import numpy as np

from detectors.ringbuffer import RingBuffer

log = logging.getLogger(__name__)


class Block(NamedTuple):
    """Samples, with what a live source knows of them."""

    samples: np.ndarray
    captured_at: datetime | None = None  # UTC capture time of the first sample (live input only)
    after_loss: bool = False  # audio was lost just before this block (ring buffer overrun, card overflow)
    precise: bool = False  # captured_at comes from the card's capture clock, not from when a callback ran


AUDIO_SUFFIXES = (".wav", ".flac")
LOSS_REPORT_S = 10.0
CARD_SILENT_S = 5.0  # a card calls back every block (0.1 s); this long without audio means it is gone
PcmFormat = Literal["s16le", "s32le", "f32le"]
_DTYPES = {"s16le": ("<i2", 32768.0), "s32le": ("<i4", 2147483648.0), "f32le": ("<f4", 1.0)}


class SourceError(RuntimeError):
    """The audio source cannot be opened or read (file, format, device)."""


def _mono(block: np.ndarray) -> np.ndarray:
    return (block.mean(axis=1) if block.ndim == 2 else block).astype(np.float32, copy=False)


class FileSource:
    """One file, or every WAV/FLAC file of a folder in name order (same rate required)."""

    def __init__(self, path: Path, realtime: bool = False, block_s: float = 0.1):
        import soundfile as sf

        path = Path(path)
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not self.files:
                raise SourceError(f"no .wav or .flac file in {path}")
        elif path.is_file():
            self.files = [path]
        else:
            raise SourceError(f"audio source {path} does not exist")
        rates = {}
        for f in self.files:
            try:
                rates[f] = sf.info(str(f)).samplerate
            except (RuntimeError, sf.LibsndfileError) as exc:
                raise SourceError(f"cannot read {f}: {exc}") from exc
        distinct = sorted(set(rates.values()))
        if len(distinct) != 1:
            raise SourceError(f"files in {path} mix sample rates {distinct}; replay them separately")
        self.sample_rate = distinct[0]
        self.realtime = realtime
        self.block = max(1, int(block_s * self.sample_rate))

    def blocks(self) -> Iterator[Block]:
        import soundfile as sf

        t0 = time.monotonic()
        done = 0
        for f in self.files:
            log.info("replaying %s", f.name)
            read = 0
            try:
                with sf.SoundFile(str(f)) as snd:
                    for block in snd.blocks(blocksize=self.block, dtype="float32", always_2d=True):
                        yield Block(_mono(block))
                        read += block.shape[0]
                        done += block.shape[0]
                        if self.realtime:
                            ahead = done / self.sample_rate - (time.monotonic() - t0)
                            if ahead > 0:
                                time.sleep(ahead)
            except RuntimeError as exc:  # soundfile's LibsndfileError: a damaged file, found while decoding
                # Not skipped: the files after it would be timed as if this one had been whole.
                raise SourceError(f"cannot decode {f} after {read / self.sample_rate:.1f} s: {exc}") from exc


class StdinSource:
    """Raw little-endian PCM (interleaved channels) from a byte stream, e.g. ``arecord``."""

    def __init__(self, sample_rate: int, fmt: PcmFormat = "s16le", channels: int = 1, stream: BinaryIO | None = None, block_s: float = 0.1):
        if fmt not in _DTYPES:
            raise SourceError(f"unknown PCM format {fmt!r}; expected one of {sorted(_DTYPES)}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.dtype, self.scale = _DTYPES[fmt]
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.frame_bytes = np.dtype(self.dtype).itemsize * channels
        self.block = max(1, int(block_s * sample_rate))

    def blocks(self) -> Iterator[Block]:
        pending = b""
        while True:
            data = self.stream.read(self.block * self.frame_bytes)
            if not data:
                break
            data = pending + data
            usable = len(data) - len(data) % self.frame_bytes
            pending = data[usable:]
            if usable:
                raw = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, self.channels)
                yield Block(_mono(raw.astype(np.float32) / self.scale))
        if pending:
            log.warning("stdin ended inside a sample frame: %d trailing byte(s) ignored", len(pending))


class SoundCardSource:
    """Live input through PortAudio (``sounddevice``, optional dependency).

    Each callback's samples are stamped with their capture time on the system clock
    (PortAudio's ADC time of the buffer, carried over to ``time.time()``), so the agent can
    put security events on UTC despite the card's clock drift and lost audio
    (:mod:`detectors.capture_clock`).
    """

    def __init__(self, sample_rate: int, device: str | int | None = None, channels: int = 1, buffer_s: float = 2.0, block_s: float = 0.1):
        try:
            import sounddevice
        except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
            raise SourceError(
                "live capture needs the 'sounddevice' package and the PortAudio library "
                "(pip install 'sonopolis[soundcard]'; apt-get install libportaudio2): " + str(exc)
            ) from exc
        self._sd = sounddevice
        self.sample_rate = sample_rate
        # ``--device 1`` arrives as a string, which PortAudio's lookup takes for a name to search.
        self.device = int(device) if isinstance(device, str) and device.strip().isdigit() else device
        self.channels = channels
        self.block = max(1, int(block_s * sample_rate))
        self.ring = RingBuffer(int(buffer_s * sample_rate))
        self.card_overflows = 0
        self._reported = (0, 0)  # ring overruns and card overflows already reported
        self._last_report = -math.inf
        self._anchors: deque[tuple[int, float, bool]] = deque(maxlen=256)  # (ring index, UNIX time, from ADC time) per callback
        self._card_losses: deque[int] = deque(maxlen=256)  # ring indices of buffers PortAudio flagged (audio lost before)
        self._anchors_lock = threading.Lock()
        self._stream = None  # the PortAudio stream while blocks() runs
        self._next_index = 0  # ring index that follows the last block yielded
        self._warned_no_adc_time = False

    def on_audio(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        """PortAudio's callback (its own thread): stamp the buffer, then write it to the ring.

        The buffer's age is PortAudio's stream time now minus its ADC time, both read next
        to ``time.time()`` so that a wait for the interpreter does not enter the stamp.
        Without ADC times (some host APIs give 0) the age is one buffer, which leaves the
        device's input latency in the stamp: said once in the log.
        """
        adc = getattr(time_info, "inputBufferAdcTime", 0.0)
        stream_now = self._stream.time if (adc and self._stream is not None) else 0.0
        now = time.time()
        precise = bool(adc and stream_now and 0.0 <= stream_now - adc < 1.0)
        if precise:
            age = stream_now - adc
        else:
            age = frames / self.sample_rate
            if not self._warned_no_adc_time:
                log.warning("the sound card gives no capture timestamps: event times include its input latency")
                self._warned_no_adc_time = True
        with self._anchors_lock:
            index = self.ring.written
            self._anchors.append((index, now - age, precise))
            if status:  # PortAudio's status flags (input overflow and the like): audio lost before this buffer
                self.card_overflows += 1
                self._card_losses.append(index)
        self.ring.write(_mono(indata))

    def capture_time(self, index: int) -> tuple[datetime | None, bool]:
        """UTC capture time of ring sample ``index`` from the latest callback stamp at or before it, and
        whether that stamp came from the card's capture clock."""
        with self._anchors_lock:
            anchor = next((a for a in reversed(self._anchors) if a[0] <= index), None)
        if anchor is None:
            return None, False
        first, unix, precise = anchor
        return datetime.fromtimestamp(unix, timezone.utc) + timedelta(seconds=(index - first) / self.sample_rate), precise

    def blocks(self) -> Iterator[Block]:
        try:
            self._stream = self._sd.InputStream(
                samplerate=self.sample_rate, device=self.device, channels=self.channels, dtype="float32",
                callback=self.on_audio, blocksize=self.block,
            )
        except (self._sd.PortAudioError, ValueError) as exc:  # ValueError: no device, or several, of that name
            raise SourceError(f"cannot open sound card {self.device!r}: {exc}") from exc
        try:
            with self._stream:
                heard = time.monotonic()
                while True:
                    got = False
                    for block in self.drain(timeout_s=1.0):
                        got = True
                        yield block
                    if got:
                        heard = time.monotonic()
                        continue
                    silent_s = time.monotonic() - heard
                    if not self._stream.active or silent_s >= CARD_SILENT_S:
                        # An unplugged or failed card: exit (so systemd or docker restart the agent)
                        # instead of waiting for ever with nothing measured and nothing said.
                        state = "stopped" if not self._stream.active else "still open"
                        raise SourceError(f"sound card {self.device!r} delivered no audio for {silent_s:.1f} s "
                                          f"(stream {state}): unplugged or failed")
        finally:
            self._report_losses(final=True)

    def drain(self, timeout_s: float) -> Iterator[Block]:
        """The next block the callbacks left in the ring (waiting up to ``timeout_s``), stamped; losses reported."""
        index, samples = self.ring.read_indexed(self.block, timeout_s=timeout_s)
        self._report_losses()
        if samples.size:
            flagged = False  # a card overflow flagged at or before this block's start: the loss is behind it
            with self._anchors_lock:
                while self._card_losses and self._card_losses[0] <= index:
                    self._card_losses.popleft()
                    flagged = True
            after_loss = index > self._next_index or flagged
            self._next_index = index + samples.size
            captured_at, precise = self.capture_time(index)
            yield Block(samples, captured_at, after_loss, precise)

    def _report_losses(self, final: bool = False) -> None:
        """Warn (at most every ``LOSS_REPORT_S``, and at the end) when audio was lost: a gap in the levels."""
        overruns, overflows = self.ring.overruns, self.card_overflows
        lost, flags = overruns - self._reported[0], overflows - self._reported[1]
        now = time.monotonic()
        if (lost or flags) and (final or now - self._last_report >= LOSS_REPORT_S):
            log.warning("live input fell behind: %d samples (%.2f s) overwritten in the ring buffer, %d overflow "
                        "flag(s) from the sound card since the last report; the level frames have a gap there",
                        lost, lost / self.sample_rate, flags)
            self._reported = (overruns, overflows)
            self._last_report = now
