"""Cross-fitted ensemble: every member is also the validation model of the clips it never heard.

The hold-out scheme (``train.train`` with ``all_data``) tunes the thresholds on networks
trained without the validation groups, then ships *other* networks retrained on all
groups; the thresholds carry over imperfectly (the card's training-folder false alarms
doubled) and are tuned on only ~300 real clips.

Here the real clips are cut into ``K`` folds by source group (``data.group_folds``) and
member ``k`` is trained on the other ``K - 1`` folds (seed ``seed + 100 k``). Then:

* every real clip gets an *out-of-fold* score from the one member that never heard its
  recording: 1 430 clips to tune the thresholds on instead of ~300, scored by the very
  networks that are shipped;
* the shipped model is the mean of the ``K`` members' softmax in one ONNX graph, so no
  retraining, and every recording was heard by ``K - 1`` members;
* the honest estimate tunes the thresholds on the out-of-fold scores of ``K - 1`` folds
  and scores the last one, fold by fold (``thresholds.thresholds_by_fold``).

What it cannot measure: the ensemble itself on unheard recordings (each clip was heard by
the other members). Averaging members that disagree lowers a spurious peak more than an
agreed event, so single-member thresholds applied to the mean are, if anything, on the
side of fewer false alarms and less recall; the card says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from detectors.classifier import CLASSES, FLAT_THRESHOLDS
from detectors.training import data
from detectors.training.thresholds import evaluate_thresholds, thresholds_by_fold, tune_thresholds
from detectors.training.train import (
    TrainConfig,
    by_source,
    export_onnx,
    fit_members,
    recorded_config,
    scored_probabilities,
    write_outputs,
)


@dataclass
class CrossFit:
    """The fitted members and what they say about the clips each never heard."""

    members: list[object]
    fold: list[int]  # fold of each real clip
    probabilities: list[np.ndarray]  # out-of-fold window probabilities of each real clip
    synthetic: list[data.Clip]  # synthetic spray cans no member heard
    synthetic_probabilities: list[np.ndarray]  # each scored by one member (clip i by member i mod K)


def fit_cross_fitted(
    clips: list[data.Clip], config: TrainConfig, tick: Callable[[str], None], *, reuse_only: bool = False
) -> CrossFit:
    """Member k (seed ``seed + 100 k``) fitted without fold k; every real clip scored by the member that never heard it.

    ``reuse_only``: the members must all be in ``checkpoint_dir`` already (nothing is fitted).
    """
    folds = config.cross_fit
    fold = data.group_folds(clips, folds, config.seed)
    synthetic_train = data.synthetic_spray_cans(config.synthetic_train, config.seed + 1, "synthetic-train")
    synthetic = data.synthetic_spray_cans(config.synthetic_validation, config.seed + 2, "synthetic-validation")
    tick(f"{len(clips)} real clips in {folds} folds by source group: {[fold.count(k) for k in range(folds)]}")
    single = replace(config, members=1)
    members: list[object] = []
    probabilities: list[np.ndarray] = [np.empty(0)] * len(clips)
    synthetic_probabilities: list[np.ndarray] = [np.empty(0)] * len(synthetic)
    for k in range(folds):
        tick(f"member {k + 1}/{folds}: trained without fold {k} (seed {config.seed + 100 * k})")
        heard = [c for c, f in zip(clips, fold, strict=True) if f != k] + synthetic_train
        try:
            net = fit_members(heard, replace(single, seed=config.seed + 100 * k), tick, reuse_only=reuse_only)[0]
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"member {k} (trained without fold {k}): {exc}") from exc
        members.append(net)
        held = [i for i, f in enumerate(fold) if f == k]
        spray = [i for i in range(len(synthetic)) if i % folds == k]
        scored = scored_probabilities([net], [clips[i] for i in held] + [synthetic[i] for i in spray], config)
        for i, p in zip(held, scored[: len(held)], strict=True):
            probabilities[i] = p
        for i, p in zip(spray, scored[len(held):], strict=True):
            synthetic_probabilities[i] = p
    return CrossFit(members, fold, probabilities, synthetic, synthetic_probabilities)


def train_cross_fitted(config: TrainConfig, tick: Callable[[str], None] = lambda _msg: None) -> dict:
    """Fit the ``config.cross_fit`` members, tune on their out-of-fold scores, ship their mean."""
    started = time.monotonic()
    folds = config.cross_fit
    config.out.mkdir(parents=True, exist_ok=True)
    clips = data.load_training_clips(config.data)
    fit = fit_cross_fitted(clips, config, tick)
    model_id = export_onnx(fit.members, config.out, replace(config, members=folds))
    tick(f"exported {model_id} (mean of {folds} members)")

    metrics = out_of_fold_metrics(
        clips, fit.fold, fit.probabilities, fit.synthetic, fit.synthetic_probabilities,
        scheme="cross_fit", model_id=model_id, config=recorded_config(replace(config, members=folds)),
        false_alarm_weight=config.false_alarm_weight, folds=folds,
    )
    metrics["training_seconds"] = round(time.monotonic() - started, 1)
    write_outputs(config.out, metrics)
    return metrics


def out_of_fold_metrics(
    clips: list[data.Clip],
    fold: list[int],
    probabilities: list[np.ndarray],
    synthetic: list[data.Clip],
    synthetic_probabilities: list[np.ndarray],
    *,
    scheme: str,
    model_id: str,
    config: dict,
    false_alarm_weight: float,
    folds: int,
) -> dict:
    """Thresholds tuned on out-of-fold scores, and every report the card shows (one owner for both schemes).

    ``probabilities[i]``: window probabilities of real clip ``i`` from the member that never
    heard fold ``fold[i]``; the synthetic spray cans likewise.
    """
    real_labels = [c.label for c in clips]
    all_p = probabilities + synthetic_probabilities
    all_labels = real_labels + ["spray_can"] * len(synthetic)
    thresholds = tune_thresholds(all_p, all_labels, false_alarm_weight=false_alarm_weight)
    cv_report, cv_thresholds = thresholds_by_fold(probabilities, real_labels, fold, false_alarm_weight=false_alarm_weight)
    return {
        "scheme": scheme,
        "model_id": model_id,
        "validation_model_id": model_id,
        "config": config,
        "thresholds": thresholds,
        "validation_real_cross_validated": cv_report.model_dump(),
        "cross_validation_thresholds": cv_thresholds,
        "validation_real_tuned": evaluate_thresholds(probabilities, real_labels, thresholds).model_dump(),
        "validation_real_at_0_5": evaluate_thresholds(probabilities, real_labels, FLAT_THRESHOLDS).model_dump(),
        "validation_with_synthetic_spray_can": evaluate_thresholds(all_p, all_labels, thresholds).model_dump(),
        "split": _fold_summary(clips, fold, folds),
        "validation_by_source": by_source(clips + synthetic, all_p, thresholds),
    }


def _fold_summary(clips: list[data.Clip], fold: list[int], folds: int) -> dict:
    """Per class: clips and groups in all, and in the smallest and largest fold (how even the cut is)."""
    summary: dict[str, dict[str, int]] = {}
    for label in CLASSES:
        idx = [i for i, c in enumerate(clips) if c.label == label]
        per_fold = [sum(1 for i in idx if fold[i] == k) for k in range(folds)]
        summary[label] = {
            "clips": len(idx), "groups": len({clips[i].group for i in idx}),
            "fold_min_clips": min(per_fold), "fold_max_clips": max(per_fold),
        }
    return summary
