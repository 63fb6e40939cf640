"""Train, validate, tune and export the sound-event classifier: the hold-out scheme.

``sonopolis train-detector`` uses the cross-fitting scheme (``crossfit.py``) by default;
``--cross-fit 0`` runs this one. Its pieces (fitting, export, scoring, outputs) serve both.
Steps of the hold-out scheme:

1. load the real clips, split them by source recording (``data.split_by_group``),
   add synthetic spray cans (``synth``) to both sides;
2. train the CNN (``network``) for a few rounds, each on freshly augmented windows;
   ``members`` times with different seeds (an ensemble: 2 by default);
3. export it to ONNX (opset 17, softmax included - the mean of the members' softmax
   for an ensemble, still one graph - class order in the metadata);
4. run the *exported* model through the inference code (``EventClassifier``) on the
   validation clips and tune the per-class thresholds on them;
5. (``all_data``, the default) retrain with the same recipe and seed on all groups,
   train + validation, and ship that model with the thresholds of step 4: the
   validation numbers describe the recipe, measured on recordings it had not heard;
6. write ``thresholds.json``, ``metrics.json`` and ``MODEL_CARD.md``.

Deterministic for a given seed and data folder (seeded numpy and torch generators,
deterministic torch kernels, fixed thread count). About 4-7 minutes per member and pass on 2
free cores (members x 2 passes with ``all_data``); ``checkpoint_dir`` keeps each fitted member
so that a stopped run, or a bigger ensemble of the same recipe, does not refit it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from detectors import features
from detectors.classifier import BACKGROUND, CLASSES, FLAT_THRESHOLDS, EventClassifier
from detectors.training import data
from detectors.training.thresholds import cross_validated_thresholds, evaluate_thresholds, tune_thresholds

log = logging.getLogger(__name__)
MODEL_FILE = "sound_events.onnx"


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path
    seed: int = 7
    rounds: int = 6
    epochs_per_round: int = 2
    events_per_class: int = 500
    background_per_round: int = 3000
    validation_fraction: float = 0.2
    synthetic_train: int = 200
    synthetic_validation: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    threads: int = 2
    false_alarm_weight: float = 20.0
    all_data: bool = True
    mix_probability: float = 0.65
    snr_min_db: float = 0.0
    snr_max_db: float = 30.0
    hard_negative_share: float = 0.0  # 0.5 tried: see MODEL_CARD.md, "Experiment not shipped"
    cv_folds: int = 5
    keep_validation_model: bool = False  # also leave the validation model as validation_model.onnx (experiments)
    colouring_probability: float = 0.5  # random tilt / high-pass / low-pass of a window (data.random_colouring)
    quantise_probability: float = 0.2  # 8-bit quantisation of a window (data.quantise_8bit)
    speed_probability: float = 0.0  # playback 0.8-1.25x faster/slower of a window (data.Augmentation.speed)
    mixup_alpha: float = 0.0  # mixup of model inputs and targets within a batch, Beta(alpha, alpha); 0 = off (0.4 tried)
    width: int = 16  # channels of the first conv block (network.SoundEventNet)
    members: int = 2  # ensemble size: member k trained with seed + 100 k, probabilities averaged in one ONNX graph
    checkpoint_dir: Path | None = None  # keep/reuse each fitted member here (resume after a stop; experiments)
    cross_fit: int = 0  # K >= 2: K members each trained without one fold, tuned out-of-fold (crossfit.py); 0: hold-out

    def augmentation(self) -> data.Augmentation:
        return data.Augmentation(
            self.mix_probability, (self.snr_min_db, self.snr_max_db), self.hard_negative_share,
            self.colouring_probability, self.quantise_probability, self.speed_probability,
        )


def export_onnx(nets: list[object], out: Path, config: TrainConfig) -> str:
    """One ONNX graph: the softmax of one network, or the mean of the members' softmax."""
    import torch

    from detectors.training.network import AveragedSoftmax, WithSoftmax

    path = out / MODEL_FILE
    example = torch.zeros(1, 1, features.N_MELS, features.WINDOW_FRAMES)
    model = (WithSoftmax(nets[0]) if len(nets) == 1 else AveragedSoftmax(nets)).eval()  # type: ignore[arg-type]
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (example,), str(path), input_names=["log_mel"], output_names=["probabilities"],
            dynamic_axes={"log_mel": {0: "windows"}, "probabilities": {0: "windows"}}, opset_version=17, dynamo=False,
        )
    return stamp_model(path, {
        "front_end": features.DEFAULT_FRONT_END,
        "features": json.dumps({"sample_rate": features.SAMPLE_RATE, "n_fft": features.N_FFT, "hop": features.FRAME_HOP,
                                "n_mels": features.N_MELS, "window_s": 1.0, "window_hop_s": 0.5}),
        "seed": str(config.seed),
        "members": str(len(nets)),
    })


def stamp_model(path: Path, meta: dict[str, str]) -> str:
    """Give an exported graph its id (digest of the graph), class order and ``meta``; check and save it."""
    import onnx

    proto = onnx.load(str(path))
    digest = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()[:12]
    model_id = f"sonopolis-sed-{digest}"
    del proto.metadata_props[:]
    for key, value in {"classes": json.dumps(list(CLASSES)), "model_id": model_id, **meta}.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "sonopolis-train-detector"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return model_id


def window_probabilities(model: Path, clips: list[data.Clip]) -> list[np.ndarray]:
    """Window probabilities of each clip through an exported model and the inference code itself."""
    classifier = EventClassifier(model, FLAT_THRESHOLDS)
    return [classifier.window_probabilities(c.audio, features.SAMPLE_RATE) for c in clips]


def scored_probabilities(nets: list[object], clips: list[data.Clip], config: TrainConfig) -> list[np.ndarray]:
    """:func:`window_probabilities` of networks not exported yet (one member, or the mean of several)."""
    with tempfile.TemporaryDirectory(prefix="sonopolis-scoring-") as tmp:
        export_onnx(nets, Path(tmp), config)
        return window_probabilities(Path(tmp) / MODEL_FILE, clips)


def recorded_config(config: TrainConfig) -> dict:
    """The configuration as ``metrics.json`` records it (no local paths)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items() if k not in ("data", "out", "checkpoint_dir")}


_NOT_RECIPE = ("data", "out", "seed", "all_data", "cv_folds", "false_alarm_weight", "keep_validation_model", "members",
               "checkpoint_dir", "validation_fraction", "synthetic_validation", "cross_fit")


# Recipe fields added after members were checkpointed, at their "off" value: left out of the
# key so that those checkpoints (the same weights: the field changes nothing when off) stay valid.
_ADDED_OFF = {("speed_probability", 0.0)}


def member_key(config: TrainConfig, seed: int, clips: list[data.Clip]) -> str:
    """Checkpoint name of one fitted member: digest of the recipe, its seed and the clips it was fitted on.

    Everything that changes the weights is in it (recipe fields, thread count, seed, each
    clip's label, group and audio length); what only changes the tuning or the ensemble
    size is not, so member k of a 3-member run is member k of a 2-member run.
    """
    recipe = {k: v for k, v in asdict(config).items() if k not in _NOT_RECIPE and (k, v) not in _ADDED_OFF}
    digest = hashlib.sha256(json.dumps([recipe, seed, [(c.label, c.group, c.audio.size) for c in clips]], sort_keys=True).encode())
    return f"member-seed{seed}-{digest.hexdigest()[:16]}.pt"


def fit_members(
    train_clips: list[data.Clip], config: TrainConfig, tick: Callable[[str], None], *, reuse_only: bool = False
) -> list[object]:
    """The ensemble's networks: member k is the same recipe with seed ``config.seed + 100 k``.

    ``reuse_only``: load every member from ``checkpoint_dir`` and fit none (comparisons of
    finished runs); a missing one is a ``FileNotFoundError``.
    """
    import torch

    from detectors.training.network import SoundEventNet

    if reuse_only and config.checkpoint_dir is None:
        raise ValueError("reusing fitted members needs a checkpoint directory (--checkpoints)")
    nets = []
    for k in range(config.members):
        seed = config.seed + 100 * k
        if config.members > 1:
            tick(f"member {k + 1}/{config.members} (seed {seed})")
        checkpoint = config.checkpoint_dir / member_key(config, seed, train_clips) if config.checkpoint_dir else None
        if checkpoint is not None and checkpoint.is_file():
            net = SoundEventNet(len(CLASSES), width=config.width)
            net.load_state_dict(torch.load(checkpoint, weights_only=True))
            tick(f"reusing {checkpoint.name}")
            nets.append(net.eval())
            continue
        if reuse_only:
            raise FileNotFoundError(f"no fitted member with seed {seed} of this recipe in {config.checkpoint_dir} ({checkpoint.name})")  # type: ignore[union-attr]
        nets.append(_fit(train_clips, config, tick, seed=seed))
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(nets[-1].state_dict(), checkpoint)  # type: ignore[attr-defined]
    return nets


def _fit(train_clips: list[data.Clip], config: TrainConfig, tick: Callable[[str], None], seed: int | None = None) -> object:
    import torch

    from detectors.training.network import SoundEventNet, spec_augment

    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    net = SoundEventNet(len(CLASSES), width=config.width)
    mix_rng = np.random.default_rng(seed + 1000)
    per_class = {c: config.events_per_class for c in CLASSES if c != BACKGROUND} | {BACKGROUND: config.background_per_round}
    n_per_round = sum(per_class.values())
    steps = config.rounds * config.epochs_per_round * (n_per_round // config.batch_size)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    for round_ in range(config.rounds):
        x_np, y_np = data.augmented_windows(train_clips, per_class, rng, config.augmentation())
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        for epoch in range(config.epochs_per_round):
            net.train()
            order = torch.randperm(len(y), generator=generator)
            total, correct = 0.0, 0
            for i in range(0, len(y) - config.batch_size + 1, config.batch_size):
                idx = order[i : i + config.batch_size]
                inputs, targets = spec_augment(x[idx], generator), y[idx]
                if config.mixup_alpha:
                    lam = float(mix_rng.beta(config.mixup_alpha, config.mixup_alpha))
                    partner = torch.from_numpy(mix_rng.permutation(len(idx)))
                    inputs = lam * inputs + (1 - lam) * inputs[partner]
                    onehot = torch.nn.functional.one_hot(targets, len(CLASSES)).float()
                    logits = net(inputs)
                    loss = loss_fn(logits, lam * onehot + (1 - lam) * onehot[partner])
                else:
                    logits = net(inputs)
                    loss = loss_fn(logits, targets)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y[idx]).sum())
            tick(f"round {round_ + 1}/{config.rounds} epoch {epoch + 1}: loss {total / len(y):.3f} acc {correct / len(y):.3f}")
    return net.eval()


def train(config: TrainConfig, tick: Callable[[str], None] = lambda _msg: None) -> dict:
    """Run the whole pipeline; returns the metrics written to ``metrics.json``."""
    started = time.monotonic()
    config.out.mkdir(parents=True, exist_ok=True)
    clips = data.load_training_clips(config.data)
    train_clips, validation = data.split_by_group(clips, config.validation_fraction, config.seed)
    train_clips += data.synthetic_spray_cans(config.synthetic_train, config.seed + 1, "synthetic-train")
    validation += data.synthetic_spray_cans(config.synthetic_validation, config.seed + 2, "synthetic-validation")
    tick(f"{len(clips)} real clips: {len(train_clips)} train / {len(validation)} validation (incl. synthetic spray cans)")

    model_id = export_onnx(fit_members(train_clips, config, tick), config.out, config)
    tick(f"exported {model_id}")

    probabilities = window_probabilities(config.out / MODEL_FILE, validation)
    labels = [c.label for c in validation]
    thresholds = tune_thresholds(probabilities, labels, false_alarm_weight=config.false_alarm_weight)
    real = [i for i, c in enumerate(validation) if c.source != "synthetic"]
    cv_report, cv_thresholds = cross_validated_thresholds(
        [probabilities[i] for i in real], [labels[i] for i in real], [validation[i].group for i in real],
        folds=config.cv_folds, seed=config.seed, false_alarm_weight=config.false_alarm_weight,
    )
    validation_model_id = model_id
    if config.keep_validation_model:
        (config.out / "validation_model.onnx").write_bytes((config.out / MODEL_FILE).read_bytes())
    if config.all_data:
        tick("retraining with the same recipe on all groups (train + validation): the shipped model")
        model_id = export_onnx(fit_members(train_clips + validation, config, tick), config.out, config)
        tick(f"exported {model_id}")
    metrics = {
        "model_id": model_id,
        "validation_model_id": validation_model_id,
        "config": recorded_config(config),
        "thresholds": thresholds,
        "validation_real_cross_validated": cv_report.model_dump(),
        "cross_validation_thresholds": cv_thresholds,
        "validation_real_tuned": evaluate_thresholds([probabilities[i] for i in real], [labels[i] for i in real], thresholds).model_dump(),
        "validation_real_at_0_5": evaluate_thresholds([probabilities[i] for i in real], [labels[i] for i in real], FLAT_THRESHOLDS).model_dump(),
        "validation_with_synthetic_spray_can": evaluate_thresholds(probabilities, labels, thresholds).model_dump(),
        "split": _split_summary(train_clips, validation),
        "validation_by_source": by_source(validation, probabilities, thresholds),
        "training_seconds": round(time.monotonic() - started, 1),
    }
    write_outputs(config.out, metrics)
    return metrics


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model's exact weights depend on (int8 rounding, front end, training)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("numpy", "scipy", "onnx", "onnxruntime", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def write_outputs(out: Path, metrics: dict) -> None:
    """``thresholds.json`` (what inference reads), ``metrics.json`` (with the library versions) and the model card."""
    from detectors.training.card import write_model_card

    metrics.setdefault("libraries", library_versions())

    (out / "thresholds.json").write_text(
        json.dumps({"model_id": metrics["model_id"], "thresholds": metrics["thresholds"]}, indent=2) + "\n", encoding="utf-8"
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_model_card(out / "MODEL_CARD.md", metrics)


def _split_summary(train_clips: list[data.Clip], validation: list[data.Clip]) -> dict:
    summary: dict[str, dict[str, int]] = {}
    for side, clips in (("train", train_clips), ("validation", validation)):
        for label in CLASSES:
            chosen = [c for c in clips if c.label == label]
            summary.setdefault(label, {})[f"{side}_clips"] = len(chosen)
            summary[label][f"{side}_groups"] = len({c.group for c in chosen})
    return summary


def by_source(validation: list[data.Clip], probabilities: list[np.ndarray], thresholds: dict[str, float]) -> list[dict]:
    """Clip accuracy per (label, source repository) on validation: where the model is weak."""
    rows = []
    keys = sorted({(c.label, c.source) for c in validation})
    for label, source in keys:
        idx = [i for i, c in enumerate(validation) if (c.label, c.source) == (label, source)]
        report = evaluate_thresholds([probabilities[i] for i in idx], [label] * len(idx), thresholds)
        correct = report.per_class[label].support * report.per_class[label].recall
        rows.append({"label": label, "source": source, "clips": len(idx), "correct": int(round(correct)),
                     "security_false_alarms": report.background_false_alarms if label == BACKGROUND else None})
    return rows
