"""``sonopolis`` subcommands of the edge agent (heavy imports stay inside each command)."""

from __future__ import annotations

from pathlib import Path

import typer


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


def train_detector(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Training folder with LABELS.csv"),
    out: Path = typer.Option(Path("detectors/model"), "--out", help="Where the ONNX model, thresholds and card go"),
    seed: int = typer.Option(7, "--seed", help="Seed of the split, augmentation and weights"),
    rounds: int = typer.Option(4, "--rounds", min=1, max=50, help="Rounds of freshly augmented windows"),
    threads: int = typer.Option(2, "--threads", min=1, max=64, help="torch CPU threads"),
) -> None:
    """Train, validate (split by source recording), tune thresholds and export the classifier."""
    from detectors.training.data import DataError
    from detectors.training.train import TrainConfig, train

    try:
        metrics = train(TrainConfig(data=data, out=out, seed=seed, rounds=rounds, threads=threads), tick=typer.echo)
    except DataError as exc:
        typer.echo(f"train-detector: {exc}", err=True)
        raise typer.Exit(2) from exc
    report = metrics["validation_real_tuned"]
    typer.echo(
        f"validation: clips={report['clips']} macro_f1_security={report['macro_f1_security']:.4f} "
        f"background_false_alarm_rate={report['background_false_alarm_rate']:.4f} model={metrics['model_id']}"
    )
