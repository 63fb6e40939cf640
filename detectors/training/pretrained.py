"""The pretrained sound-effects backbone: fetched from PyPI, checked, rebuilt, exported to int8 ONNX.

Why a pretrained backbone: ~1 400 real clips from a few dozen source recordings are too
few for a network trained from scratch to learn *sounds* rather than *sources*. Scored
on recordings they never heard, the project's own CNNs reached a macro F1 of 0.62 with
22 false alarms in 743 backgrounds; a linear read-out of this backbone's embedding, on the
same folds and the same honest scoring, 0.74 with 18 (``MODEL_CARD.md``).

The backbone is aiSFX (A. B. Ma and A. Lerch, "Representation Learning for the Automatic
Indexing of Sound Effects Libraries", ISMIR 2022): the DCASE 2018 cross-task baseline
"Cnn_9layers" (Q. Kong et al.) with 64-128-256-512 channels, trained on professional
sound-effects libraries whose categories include guns, glass, explosions, crashes,
alarms and vehicles. Its weights (CC BY 4.0, attribution in the model card) ship inside
the ``aisfx`` wheel on PyPI; this module downloads that one wheel (no dependencies: the
package pins numpy 1.23 and librosa 0.9), checks its SHA-256 and reads the weights with
``torch.load(weights_only=True)``. The architecture is rebuilt here rather than imported,
so the project depends on the weights only, never on the package's code.

At the edge it is one int8 graph (static quantisation of the convolutions, calibrated on
real training windows): ~4.7 MB, ~0.84 G multiply-adds per 1 s window, ~2 ms per window
on one core of the reference machine (``bench/edge.py``).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from detectors import features
from detectors.classifier import disable_onnxruntime_telemetry, open_session, run_in_batches

AISFX_REQUIREMENT = "aisfx==0.1.2"
AISFX_WHEEL = "aisfx-0.1.2-py2.py3-none-any.whl"
AISFX_SHA256 = "bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194"
CHECKPOINT_MEMBER = "aisfx/models/checkpoint.pth"
CHECKPOINT_FILE = "aisfx-0.1.2-checkpoint.pth"
EMBEDDING_PREFIX = "embedding_net."
BACKBONE_WIDTH = 64
DEFAULT_CACHE = Path.home() / ".cache" / "sonopolis" / "backbone"


class BackboneError(RuntimeError):
    """The pretrained backbone cannot be fetched, checked or loaded (says which step and why)."""


def fetch_checkpoint(cache: Path = DEFAULT_CACHE) -> Path:
    """Path of the aiSFX checkpoint, downloading and checking the pinned wheel once into ``cache``."""
    target = cache / CHECKPOINT_FILE
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / AISFX_WHEEL
    if not wheel.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(cache),
                   AISFX_REQUIREMENT]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wheel.is_file():
            raise BackboneError(f"cannot download {AISFX_REQUIREMENT} from the package index: {done.stderr.strip()[-500:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != AISFX_SHA256:
        raise BackboneError(f"{wheel} has SHA-256 {digest}, expected {AISFX_SHA256}: refusing to load its weights")
    with zipfile.ZipFile(wheel) as archive, archive.open(CHECKPOINT_MEMBER) as member:
        partial = target.with_suffix(".part")
        partial.write_bytes(member.read())
        partial.replace(target)
    return target


def backbone_class():  # noqa: ANN201 - torch is a training-time dependency, imported lazily
    """The CNN9 embedding network (torch module class), built on first use."""
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, pool: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)
            self.pool = pool

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
            return nn.functional.max_pool2d(x, self.pool) if self.pool > 1 else x

    class SfxBackbone(nn.Module):
        """(n, frames, mels) -> (n, 8 x width): mean over frequency, then max over time (as aiSFX)."""

        def __init__(self, width: int = BACKBONE_WIDTH) -> None:
            super().__init__()
            self.conv_block1 = ConvBlock(1, width, 2)
            self.conv_block2 = ConvBlock(width, 2 * width, 2)
            self.conv_block3 = ConvBlock(2 * width, 4 * width, 2)
            self.conv_block4 = ConvBlock(4 * width, 8 * width, 1)
            self.dim = 8 * width

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv_block4(self.conv_block3(self.conv_block2(self.conv_block1(x.unsqueeze(1)))))
            return h.mean(dim=3).amax(dim=2)

    return SfxBackbone


def load_backbone(checkpoint: Path):  # noqa: ANN201
    """The pretrained backbone in eval mode, from a checkpoint of :func:`fetch_checkpoint`."""
    import torch

    # The checkpoint (pickled with numpy 1) names numpy scalars by their numpy-1 path; allow
    # exactly those, under that name, and nothing else (still the weights-only unpickler).
    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]
    safe = [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype, type(np.dtype(np.int64))]
    try:
        with torch.serialization.safe_globals(safe):
            weights, _datasets = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ValueError...
        raise BackboneError(f"cannot read backbone weights {checkpoint}: {exc}") from exc
    net = backbone_class()(BACKBONE_WIDTH)
    state = {k[len(EMBEDDING_PREFIX):]: v for k, v in weights.items() if k.startswith(EMBEDDING_PREFIX)}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        raise BackboneError(f"backbone weights {checkpoint} do not fit the CNN9 architecture: {exc}") from exc
    return net.eval()


def calibration_windows(clips: list, n: int, seed: int) -> np.ndarray:
    """``n`` real 1 s windows drawn evenly over the clips (seeded): what the int8 ranges are fitted on."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))[:n]
    windows = []
    for i in order:
        _, w = features.clip_windows(clips[int(i)].audio)
        windows.append(w[int(rng.integers(len(w)))])
    return np.stack(windows).astype(np.float32)


def export_quantised(module, path: Path, calibration: np.ndarray, *, input_name: str = "sfx_mel",  # noqa: ANN001
                     output_name: str = "output") -> None:
    """ONNX of ``module`` (input: ``sfx96`` features) with its convolutions statically quantised to int8.

    Only Conv nodes are quantised (weights per channel, int8; activations uint8, MinMax
    ranges over ``calibration`` windows): the same calibration gives the same backbone
    bytes whatever head follows, so embeddings taken through the backbone alone are those
    the shipped graph computes.
    """
    import torch

    disable_onnxruntime_telemetry()  # before the quantiser imports onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calibration_features = features.sfx_window_features(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: calibration_features[i : i + 32]} for i in range(0, len(calibration_features), 32)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    example = torch.zeros(1, features.SFX_FRAMES, features.SFX_N_MELS)
    with tempfile.TemporaryDirectory(prefix="sonopolis-backbone-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (example,), str(fp32), input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: {0: "windows"}, output_name: {0: "windows"}}, opset_version=17,
                              dynamo=False)
        advice = _DropMessage("pre-process")  # onnxruntime's advice to run its shape pre-processing: not needed here
        logging.getLogger().addFilter(advice)
        try:
            quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(advice)


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


class Embedder:
    """Embeddings of 1 s windows through the int8 backbone graph, as the shipped model computes them."""

    def __init__(self, model: Path, threads: int = 2) -> None:
        self.session = open_session(model, threads=threads)

    def __call__(self, windows: np.ndarray, chunk: int = 64) -> np.ndarray:
        """(n, 512) embeddings; the front end runs ``chunk`` windows at a time (an augmented round is ~7 000)."""
        if len(windows) == 0:
            return run_in_batches(self.session, np.zeros((0, features.SFX_FRAMES, features.SFX_N_MELS), np.float32))
        return np.concatenate([run_in_batches(self.session, features.sfx_window_features(windows[i : i + chunk]))
                               for i in range(0, len(windows), chunk)])
