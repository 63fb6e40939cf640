"""Start-up and shutdown of ``sonopolis edge``: settings in, one agent loop, clean stop.

Order: open the outbox (replays anything left by a previous run), start the smart
link and, only if configured, the safe link, load the classifier, then feed blocks
from the source until it ends (file, stdin) or the process is stopped (sound card).
At the end the held periods are released and the queue is drained for at most
``drain_timeout_s``, even when the stop (SIGTERM) arrives during them; what is not
delivered stays in the outbox for the next start.
Messages a broker refused in an earlier run (its ACL denied the topic...) are queued
again at the start: fixing the account or the ACL and restarting the agent delivers them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from detectors.agent import ClassifierLike, EdgeAgent
from detectors.outbox import Outbox, OutboxError
from detectors.publisher import BrokerLink
from detectors.settings import EdgeSettings
from detectors.sources import Block, FileSource, SoundCardSource, SourceError, StdinSource
from messages.times import EARLIEST

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """The agent cannot start or run (source, queue, classifier)."""


@dataclass(frozen=True)
class RunStats:
    frames: int
    events: int
    events_withheld: int
    still_queued: int
    dropped: int
    refused: int
    """Messages a broker refused, kept in the queue's refused table for the next start."""


def load_classifier(settings: EdgeSettings) -> tuple[ClassifierLike | None, str]:
    """The project's streaming classifier, or ``None`` (levels only) when disabled."""
    if not settings.classifier_enabled:
        log.info("classifier disabled: levels only")
        return None, ""
    from detectors.classifier import ClassifierError, StreamingClassifier

    try:
        classifier = StreamingClassifier(settings.model_path)
    except ClassifierError as exc:
        raise RunError(f"cannot load the sound-event classifier: {exc}") from exc
    return classifier, classifier.model_id


def open_source(source: str, *, realtime: bool, rate: int, pcm_format: str, channels: int, device: str | None):
    try:
        if source == "-":
            return StdinSource(rate, pcm_format, channels)  # type: ignore[arg-type]
        if source == "soundcard":
            return SoundCardSource(rate, device=device, channels=channels)
        return FileSource(Path(source), realtime=realtime)
    except SourceError as exc:
        raise RunError(str(exc)) from exc


def account_mismatches(settings: EdgeSettings) -> list[str]:
    """Broker accounts that the shipped ACLs will refuse on this sensor's topics, one line each.

    ``deploy/mosquitto/*/acl`` let account X publish on ``.../X`` only (``%u``), and the
    agent publishes on ``.../<sensor_id>``: a mismatch is the likeliest cause of 0x87 Not
    authorized, which otherwise shows only after the first message is refused. A warning,
    not an error: a city may run its own ACLs.
    """
    out = []
    for channel, mqtt_settings in (("smart", settings.smart_mqtt), ("safe", settings.safe_mqtt)):
        user = mqtt_settings.username if mqtt_settings else None
        if user and user != settings.sensor_id:
            out.append(f"{channel} broker account {user!r} is not the sensor id {settings.sensor_id!r}: the shipped "
                       f"ACL (deploy/mosquitto/{channel}/acl) refuses its messages (0x87 Not authorized)")
    return out


def run_agent(
    settings: EdgeSettings,
    blocks: Iterator[Block],
    sample_rate: int,
    start: datetime,
    classifier: ClassifierLike | None,
    model_id: str = "",
    on_block: Callable[[EdgeAgent], None] | None = None,
) -> RunStats:
    """Feed ``blocks`` through one agent with its own outbox and broker links."""
    try:
        outbox = Outbox(settings.queue_dir, settings.queue_max_messages)
        again = outbox.requeue_refused()
    except OutboxError as exc:
        raise RunError(str(exc)) from exc
    if again:
        log.warning("%d message(s) refused by a broker in an earlier run are queued again", again)
    for problem in account_mismatches(settings):
        log.warning("%s", problem)
    smart = BrokerLink("smart", settings.smart_mqtt, outbox)
    safe = BrokerLink("safe", settings.safe_mqtt, outbox) if settings.safe_mqtt else None
    if safe is None:
        log.info("no safe broker configured: security events will not leave this sensor")
    for link in (smart, safe):
        if link:
            link.start()
    agent = EdgeAgent(
        sensor_id=settings.sensor_id,
        calibration_offset_db=settings.calibration_offset_db,
        sample_rate=sample_rate,
        start=start,
        outbox=outbox,
        smart=smart,
        safe=safe,
        classifier=classifier,
        model_id=model_id,
    )
    failed: SourceError | None = None
    try:
        try:
            for block in blocks:
                agent.feed(block.samples, block.captured_at, after_loss=block.after_loss, precise=block.precise)
                if on_block:
                    on_block(agent)
        except SourceError as exc:
            failed = exc  # what was measured before the failure is still sent (below), then the run fails
            log.error("audio source failed: %s", exc)
        except KeyboardInterrupt:
            log.info("stopped by the operator")
        close = getattr(blocks, "close", None)
        if close is not None:
            close()  # a live source stops capturing (PortAudio stream closed) before the drain
        drain_until = time.monotonic() + settings.drain_timeout_s
        try:
            delivered = agent.finish(settings.drain_timeout_s)
        except KeyboardInterrupt:
            # The stop (SIGTERM) came after the source ended, during the release or the drain: it
            # asks for what the loop's stop gives, a release and a drain, so they run to their end
            # (a second SIGTERM is ignored, the service manager's timeout still applies). It used to
            # escape from here: exit 130, no final line. Ctrl-C again still aborts.
            log.info("stopped by the operator during the final drain: releasing and draining to the end")
            delivered = agent.finish(max(0.0, drain_until - time.monotonic()))
        if not delivered:
            log.warning("%d message(s) not yet delivered; they stay queued for the next start", outbox.count())
        if outbox.refused_count():
            log.error("%d message(s) refused by the broker(s) (smart %d, safe %d) are kept in %s and queued again at the next start",
                      outbox.refused_count(), outbox.refused_count("smart"), outbox.refused_count("safe"), outbox.path)
        if failed is not None:
            raise RunError(str(failed)) from failed
        return RunStats(agent.frames_queued, agent.events_queued, agent.events_withheld, outbox.count(), outbox.dropped,
                        outbox.refused_count())
    finally:
        for link in (smart, safe):
            if link:
                link.stop()
        outbox.close()


def run_edge(
    settings: EdgeSettings,
    source: str,
    *,
    realtime: bool = False,
    start: str | None = None,
    rate: int = 48000,
    pcm_format: str = "s16le",
    channels: int = 1,
    device: str | None = None,
) -> RunStats:
    src = open_source(source, realtime=realtime, rate=rate, pcm_format=pcm_format, channels=channels, device=device)
    try:
        t0 = datetime.fromisoformat(start) if start else datetime.now(timezone.utc)
    except ValueError as exc:
        raise RunError(f"--start {start!r} is not an ISO 8601 time") from exc
    if t0.tzinfo is None:
        raise RunError("--start must carry a UTC offset, e.g. 2026-11-23T10:00:00Z")
    if t0 < EARLIEST:
        # The wire refuses such frames: the agent measured, then died at its first frame with a
        # validation traceback (and a service restarted into the same death).
        what = f"--start {start}" if start else f"the system clock ({t0.isoformat()})"
        raise RunError(f"{what} is before {EARLIEST:%Y-%m-%d}, which no frame may carry: is the clock set (NTP)?")
    classifier, model_id = load_classifier(settings)
    return run_agent(settings, src.blocks(), src.sample_rate, t0, classifier, model_id)
