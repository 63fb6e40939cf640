"""Nested check of the heads scheme: an honest figure for the *averaged* heads and their tuned thresholds.

The card's cross-validated estimate scores single heads. What ships is the mean of the
heads, with thresholds tuned on their out-of-fold scores, and no clip can score that
unheard. So, for an outer fold ``o``, the scheme is replayed without it: inner head ``j``
is trained on the folds other than ``o`` and ``j``, the thresholds are tuned on the inner
heads' out-of-fold scores, and the mean of the inner heads, with those thresholds, scores
fold ``o``, which none of them heard (the backbone never heard any clip).

    python -m detectors.training.heads_nested --data ../shared/audio/train --outer 0 1 2 3 4

About 5 minutes per outer fold on 2 cores for aiSFX alone, 12 for the pair (the
clean embeddings are computed once; each inner head embeds its own augmented rounds).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from detectors.classifier import SECURITY_CLASSES
from detectors.evaluation import EvalReport
from detectors.training.heads import (
    HeadsConfig,
    Prepared,
    fit_fold_head,
    head_probabilities,
    prepare,
)
from detectors.training.pretrained import BACKBONES
from detectors.training.thresholds import evaluate_thresholds, tune_thresholds


def outer_fold_check(prep: Prepared, config: HeadsConfig, outer: int, tick: Callable[[str], None]) -> dict:
    """Replay the scheme without fold ``outer``; score the inner heads' mean (and each inner head) on it."""
    clips, fold, emb = prep.clips, prep.fold, prep.clip_embeddings
    heads, inner_scores, inner_labels = [], [], []
    for j in (k for k in range(config.folds) if k != outer):
        heard = [i for i in range(len(clips)) if fold[i] not in (outer, j)]
        head = fit_fold_head(prep, heard, config, config.seed + 100 * j, tick, f"outer {outer}: inner head without fold {j}")
        heads.append(head)
        for i in (i for i in range(len(clips)) if fold[i] == j):
            inner_scores.append(head_probabilities([head], emb[i]))
            inner_labels.append(clips[i].label)
    synthetic = [head_probabilities(heads, emb[prep.n_train + j]) for j in range(len(prep.synthetic))]
    thresholds = tune_thresholds(inner_scores + synthetic, inner_labels + ["spray_can"] * len(synthetic),
                                 false_alarm_weight=config.false_alarm_weight)
    held = [i for i in range(len(clips)) if fold[i] == outer]
    labels = [clips[i].label for i in held]
    ensemble = evaluate_thresholds([head_probabilities(heads, emb[i]) for i in held], labels, thresholds)
    members = [evaluate_thresholds([head_probabilities([h], emb[i]) for i in held], labels, thresholds) for h in heads]
    return {"outer": outer, "thresholds": thresholds, "ensemble": ensemble, "members": members}


def summary_line(outer: int, report: EvalReport) -> str:
    f1 = ", ".join(f"{c} {report.per_class[c].f1:.2f}" for c in SECURITY_CLASSES if report.per_class[c].support)
    return (f"outer {outer}: clips={report.clips} macro_f1_security={report.macro_f1_security:.3f} "
            f"false_alarms={report.background_false_alarms}/{report.background_clips} ({f1})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="training folder with LABELS.csv")
    parser.add_argument("--outer", type=int, nargs="+", default=[0], help="outer folds to set aside, one at a time")
    parser.add_argument("--cache", type=Path, default=None, help="where the backbone wheels are kept")
    parser.add_argument("--backbone", choices=BACKBONES, default=BACKBONES[0], help="pretrained backbone(s) of the heads")
    args = parser.parse_args(argv)
    config = HeadsConfig(data=args.data, out=Path(tempfile.gettempdir()), cache=args.cache, backbone=args.backbone)
    with tempfile.TemporaryDirectory(prefix="sonopolis-nested-") as tmp:
        prep = prepare(config, Path(tmp), print)
        pooled = []
        for outer in args.outer:
            result = outer_fold_check(prep, config, outer, print)
            print(summary_line(outer, result["ensemble"]), flush=True)
            for k, member in enumerate(result["members"]):
                print(f"  inner head {k}: macro_f1_security={member.macro_f1_security:.3f} "
                      f"false_alarms={member.background_false_alarms}/{member.background_clips}", flush=True)
            print(f"  thresholds: {result['thresholds']}", flush=True)
            pooled.append(result)
    if len(pooled) > 1:
        clips = sum(r["ensemble"].clips for r in pooled)
        alarms = sum(r["ensemble"].background_false_alarms for r in pooled)
        background = sum(r["ensemble"].background_clips for r in pooled)
        mean_f1 = sum(r["ensemble"].macro_f1_security for r in pooled) / len(pooled)
        print(f"nested: outer_folds={len(pooled)} clips={clips} mean_macro_f1_security={mean_f1:.3f} "
              f"false_alarms={alarms}/{background}")


if __name__ == "__main__":
    main()
