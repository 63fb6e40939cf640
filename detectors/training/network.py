"""The CNN: four 3x3 conv blocks over the 64 x 97 log-mel image, ~60 k parameters.

Small on purpose: ~20 M multiply-adds per 1 s window keeps the classifier far above
50x real time on one core, and a small network overfits less on ~1 400 real clips.
Global mean + max pooling over time and frequency makes it insensitive to where in
the window the event sits.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class SoundEventNet(nn.Module):
    def __init__(self, n_classes: int, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _block(1, width), nn.MaxPool2d(2),
            _block(width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.MaxPool2d(2),
            _block(4 * width, 4 * width),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(self.dropout(pooled))


class WithSoftmax(nn.Module):
    """Export wrapper: the ONNX graph outputs probabilities, not logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


class AveragedSoftmax(nn.Module):
    """Export wrapper of an ensemble: the mean of the members' softmax probabilities.

    The members (same architecture, different seeds or recipes) become one ONNX graph
    with one input and one output, so inference is unchanged: one session, one run per
    batch, cost = the sum of the members'.
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(net(x), dim=1) for net in self.nets]).mean(dim=0)


def spec_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random frequency band and one time span masked per example (SpecAugment)."""
    n, _, mels, frames = x.shape
    out = x.clone()
    f_width = torch.randint(0, 9, (n,), generator=generator)
    f_start = torch.randint(0, mels - 8, (n,), generator=generator)
    t_width = torch.randint(0, 16, (n,), generator=generator)
    t_start = torch.randint(0, frames - 15, (n,), generator=generator)
    f_idx = torch.arange(mels)
    t_idx = torch.arange(frames)
    f_mask = (f_idx[None, :] >= f_start[:, None]) & (f_idx[None, :] < (f_start + f_width)[:, None])
    t_mask = (t_idx[None, :] >= t_start[:, None]) & (t_idx[None, :] < (t_start + t_width)[:, None])
    mask = f_mask[:, None, :, None] | t_mask[:, None, None, :]
    return out.masked_fill(mask, 0.0)
