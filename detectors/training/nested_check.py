"""The cross-fitting scheme replayed one level down, to score the *shipped kind of model* honestly.

The card's cross-validated numbers score single members (each clip by the member that
never heard it); the shipped model is the mean of all members, which no held-out clip can
score. This check sets one outer fold aside, runs the whole scheme on the other clips
(``K - 1`` inner members, thresholds tuned on their out-of-fold scores, their mean), and
scores that mean on the outer fold, which none of them heard. The same thresholds applied
to each inner member alone, on the same clips, say what the averaging itself changes.

    python -m detectors.training.nested_check --data ../shared/audio/train --outer 0 --checkpoints DIR

About ``K - 1`` member fits (the inner members are checkpointed like any member).

``--compare RECIPE [RECIPE...]`` instead compares recipes whose ``K`` cross-fitted members
are already in ``--checkpoints`` (no fitting): the honest estimate of each (thresholds tuned
on the out-of-fold scores of the other folds), and of the mean of their members k, all of
which never heard fold k: an unheard ensemble of as many members as recipes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from detectors.classifier import SECURITY_CLASSES
from detectors.evaluation import EvalReport
from detectors.training import data
from detectors.training.crossfit import fit_cross_fitted
from detectors.training.thresholds import evaluate_thresholds, thresholds_by_fold, tune_thresholds
from detectors.training.train import TrainConfig, scored_probabilities


def outer_fold_check(config: TrainConfig, outer: int, tick=lambda _msg: None) -> dict:  # noqa: ANN001 - progress callback
    """Reports of the inner ensemble and of each inner member on outer fold ``outer``, same thresholds."""
    clips = data.load_training_clips(config.data)
    fold = data.group_folds(clips, config.cross_fit, config.seed)
    inner = [c for c, f in zip(clips, fold, strict=True) if f != outer]
    held = [c for c, f in zip(clips, fold, strict=True) if f == outer]
    inner_config = replace(config, cross_fit=config.cross_fit - 1)
    fit = fit_cross_fitted(inner, inner_config, tick)
    thresholds = tune_thresholds(
        fit.probabilities + fit.synthetic_probabilities,
        [c.label for c in inner] + ["spray_can"] * len(fit.synthetic),
        false_alarm_weight=config.false_alarm_weight,
    )
    labels = [c.label for c in held]
    ensemble_p = scored_probabilities(fit.members, held, config)
    members = [evaluate_thresholds(scored_probabilities([net], held, config), labels, thresholds) for net in fit.members]
    return {
        "outer_fold": outer,
        "clips": len(held),
        "thresholds": thresholds,
        "ensemble": evaluate_thresholds(ensemble_p, labels, thresholds).model_dump(),
        "members": [m.model_dump() for m in members],
    }


def checkpointed_out_of_fold(config: TrainConfig, clips: list[data.Clip]) -> list[np.ndarray]:
    """Out-of-fold window probabilities of ``clips`` from the checkpointed members of ``config`` (never fits)."""
    return fit_cross_fitted(clips, config, lambda _msg: None, reuse_only=True).probabilities


def compare_recipes(base: TrainConfig, recipes: list[dict]) -> None:
    clips = data.load_training_clips(base.data)
    labels = [c.label for c in clips]
    fold = data.group_folds(clips, base.cross_fit, base.seed)
    scores = []
    for recipe in recipes:
        scores.append(checkpointed_out_of_fold(replace(base, **recipe), clips))
        print(_line(f"recipe {json.dumps(recipe)}", thresholds_by_fold(scores[-1], labels, fold, false_alarm_weight=base.false_alarm_weight)[0]))
    if len(scores) > 1:
        mean = [np.mean(np.stack(ps), axis=0) for ps in zip(*scores, strict=True)]
        print(_line(f"mean of the {len(scores)} recipes' unheard members", thresholds_by_fold(mean, labels, fold, false_alarm_weight=base.false_alarm_weight)[0]))


def _line(name: str, report: EvalReport | dict) -> str:
    r = report if isinstance(report, dict) else report.model_dump()
    per = " ".join(f"{c}={r['per_class'][c]['f1']:.2f}" for c in SECURITY_CLASSES if r["per_class"][c]["support"])
    return (f"{name}: macro_f1_security={r['macro_f1_security']:.3f} "
            f"false_alarms={r['background_false_alarms']}/{r['background_clips']} {per}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--outer", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--checkpoints", type=Path, default=None)
    parser.add_argument("--recipe", default="{}", help="JSON of TrainConfig fields, e.g. '{\"width\": 24}'")
    parser.add_argument("--json", type=Path, default=None, help="Also write the reports here")
    parser.add_argument("--compare", nargs="+", default=None, metavar="RECIPE", help="JSON recipes to compare (see above)")
    args = parser.parse_args()
    config = TrainConfig(data=args.data, out=Path("."), cross_fit=args.folds, checkpoint_dir=args.checkpoints,
                         **json.loads(args.recipe))
    if args.compare:
        compare_recipes(config, [json.loads(r) for r in args.compare])
        return
    result = outer_fold_check(config, args.outer, tick=print)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"thresholds: {result['thresholds']}")
    for k, member in enumerate(result["members"]):
        print(_line(f"inner member {k}", member))
    print(_line(f"nested: outer_fold={args.outer} clips={result['clips']} inner ensemble of {len(result['members'])}", result["ensemble"]))


if __name__ == "__main__":
    main()
