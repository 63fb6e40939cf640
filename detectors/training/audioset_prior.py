"""A prior from YAMNet's own AudioSet read-out, for a class the project's clips cannot teach.

Why crash needs it: the training folder's 18 crash clips come from two YouTube videos, 16
of them from one. A head learns those videos, not crashes: out of fold (scored by heads
that never heard the video) crash F1 has been 0.00 in every run since the pair shipped,
which alone costs 0.2 of the macro F1 over five security classes (``EXPERIMENTS.md``).

YAMNet's AudioSet classifier heard thousands of YouTube clips of vehicles skidding and
tyres squealing, and nothing of it is fitted on the project's clips. Its scores therefore
say, on every training clip, what they would say on a recording nobody has heard, and
they are an honest out-of-fold signal by construction. Scored that way (fp32, 1 s
windows, clip score = the highest window), "Skidding" and "Tire squeal" find the crash
clips with an average precision of about 0.5 over all 1 430 clips, against 0.12-0.23 for
the heads out of fold; four of the big video's crashes score above every background clip.
"Smash, crash" was weaker (it also fires on glass breaks and explosions); the choice of
the two classes was made after looking at those scores, so the card's crash figure is
optimistic about *which* classes, not about the scores themselves.

What ships: the prior's score is the noisy-OR of the chosen classes' sigmoids on YAMNet's
embedding (the very read-out Google trained, two of its 521 columns), and the class's
score becomes ``max(heads, prior)``. Its only free number is the class threshold, tuned
with all the others on out-of-fold scores. The other classes keep the heads' softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.classifier import CLASSES

PRIORS: dict[str, tuple[str, ...]] = {"crash": ("Skidding", "Tire squeal")}
"""Project class -> the AudioSet classes whose YAMNet scores back it."""
AUDIOSET_INDEX = {"Skidding": 306, "Tire squeal": 307}
"""Column of each AudioSet class in YAMNet's read-out (``yamnet_class_map.csv`` of the pinned wheel; a test checks)."""


@dataclass(frozen=True)
class AudiosetReadout:
    """YAMNet's AudioSet logits layer and where YAMNet's embedding lies in a backbone's output."""

    kernel: np.ndarray  # (1024, 521)
    bias: np.ndarray  # (521,)
    names: tuple[str, ...] | None  # AudioSet display name of each column (None: a random test read-out)
    offset: int  # first column of YAMNet's 1024-d embedding in the backbone's embedding


@dataclass(frozen=True)
class AudiosetPrior:
    """``max(heads, noisy-OR of AudioSet scores)`` for one project class."""

    target: str
    kernel: np.ndarray  # (1024, k): the chosen AudioSet columns
    bias: np.ndarray  # (k,)
    offset: int

    @property
    def audioset_classes(self) -> tuple[str, ...]:
        return PRIORS[self.target]

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Prior score of each window (n,) from the backbone's embeddings (n, dim)."""
        yam = np.asarray(embeddings, np.float64)[:, self.offset : self.offset + self.kernel.shape[0]]
        logits = np.clip(yam @ self.kernel + self.bias, -60.0, 60.0)
        return 1.0 - np.prod(1.0 - 1.0 / (1.0 + np.exp(-logits)), axis=1)

    def apply(self, probabilities: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """The heads' window scores with the target class raised to the prior where it is higher."""
        out = np.array(probabilities, dtype=np.float64, copy=True)
        j = CLASSES.index(self.target)
        out[:, j] = np.maximum(out[:, j], self.scores(embeddings))
        return out

    def module(self):  # noqa: ANN201 - torch is a training-time dependency, imported lazily
        """The same in torch, for the exported graph: (heads' scores, embedding) -> scores."""
        import torch
        from torch import nn

        prior = self

        class Prior(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("kernel", torch.from_numpy(prior.kernel.astype(np.float32)))
                self.register_buffer("bias", torch.from_numpy(prior.bias.astype(np.float32)))
                self.column = CLASSES.index(prior.target)

            def forward(self, probabilities: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
                yam = embedding[:, prior.offset : prior.offset + self.kernel.shape[0]]
                score = 1.0 - torch.prod(1.0 - torch.sigmoid(yam @ self.kernel + self.bias), dim=1, keepdim=True)
                j = self.column
                raised = torch.maximum(probabilities[:, j : j + 1], score)
                return torch.cat([probabilities[:, :j], raised, probabilities[:, j + 1 :]], dim=1)

        return Prior().eval()


def crash_prior(readout: AudiosetReadout | None) -> AudiosetPrior | None:
    """The crash prior on a backbone with YAMNet's read-out; None for a backbone without YAMNet (aiSFX alone)."""
    if readout is None:
        return None
    columns = [AUDIOSET_INDEX[name] for name in PRIORS["crash"]]
    wrong = [(name, readout.names[c]) for name, c in zip(PRIORS["crash"], columns) if readout.names and readout.names[c] != name]
    if wrong:
        raise ValueError(f"YAMNet's read-out does not hold the prior's classes where expected: {wrong} (another class map?)")
    return AudiosetPrior("crash", np.asarray(readout.kernel[:, columns], np.float64),
                         np.asarray(readout.bias[columns], np.float64), readout.offset)
