"""The particle classifiers and the model file.

Both networks score a ``model_px`` × ``model_px`` patch (64 × 64) and return one **particle logit** per
patch: ``sigmoid(logit)`` is the particle probability. DeepPicker's two-way softmax gives
``p1 = sigmoid(l1 - l0)``, so its logit is ``l1 - l0``; DeepEM has one sigmoid output.

Every layer is a convolution, an element-wise activation, a batch norm (an affine map per channel once
trained, folded into the convolution before it for scanning) or a 2 × 2 pooling, and the fully connected
layers are written as convolutions whose kernel covers the whole remaining map. That is what lets
:mod:`deeppick.scan` evaluate the same network densely over a whole micrograph and get exactly the
per-patch scores (see :meth:`ParticleNet.layer_specs`).

A model file is one ``torch.save`` archive of tensors plus a JSON string of metadata, loaded with
``torch.load(weights_only=True)``: loading never executes code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._version import __version__
from .errors import DeepPickError, ModelFileError
from .io import atomic_path
from .postprocess import PostprocessConfig
from .preprocess import PreprocessConfig

MODEL_FORMAT = "deeppick-model"
# 2: the post-processing is a typed setting of its own; files of format 1 (in ``info``) still load
MODEL_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
ARCHITECTURES = ("deeppicker", "deepem", "wide")


class ParticleNet(nn.Module):
    """A sequence of layers, each a conv, activation, 2×2 pool or dropout; output: one particle logit.

    ``self.body`` is an ``nn.Sequential``; the final conv has one output channel (the logit) or two
    (softmax pair, logit = channel 1 − channel 0).
    """

    def __init__(self, body: nn.Sequential, two_way: bool, patch_px: int = 64, arch_kwargs: dict | None = None):
        super().__init__()
        self.body = body
        self.two_way = two_way
        self.patch_px = patch_px
        self.arch_kwargs = dict(arch_kwargs or {})  # every shape parameter, so a file rebuilds it exactly

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``patches`` (N, 1, 64, 64) → particle logits (N,)."""
        out = self.body(patches)
        if out.shape[-2:] != (1, 1):
            raise ValueError(f"expected {self.patch_px}×{self.patch_px} patches, got {tuple(patches.shape[-2:])}")
        return self.logit_from_output(out)[:, 0, 0]

    def logit_from_output(self, out: torch.Tensor) -> torch.Tensor:
        """Final-layer maps (N, C, H, W) → logit maps (N, H, W)."""
        if self.two_way:
            return out[:, 1] - out[:, 0]
        return out[:, 0]

    def layer_specs(self) -> list[tuple[str, nn.Module]]:
        """``(kind, module)`` per layer, kind in conv | batchnorm | relu | sigmoid | maxpool | avgpool | dropout."""
        kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "batchnorm", nn.ReLU: "relu", nn.Sigmoid: "sigmoid",
                 nn.MaxPool2d: "maxpool", nn.AvgPool2d: "avgpool", nn.Dropout: "dropout"}
        return [(kinds[type(m)], m) for m in self.body]


def deeppicker_net(channels=(8, 16, 32, 64), kernels=(9, 5, 3, 2), fc_px: int = 128) -> ParticleNet:
    """DeepPicker §4.2: four conv + ReLU + 2×2 max-pool, FC ``fc_px`` with dropout 0.5, two-way softmax."""
    layers: list[nn.Module] = []
    size, c_in = 64, 1
    for c_out, k in zip(channels, kernels):
        layers += [nn.Conv2d(c_in, c_out, k), nn.ReLU(), nn.MaxPool2d(2)]
        size = (size - k + 1) // 2
        c_in = c_out
    layers += [nn.Conv2d(c_in, fc_px, size), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(fc_px, 2, 1)]
    kwargs = {"channels": list(channels), "kernels": list(kernels), "fc_px": fc_px}
    return ParticleNet(nn.Sequential(*layers), two_way=True, arch_kwargs=kwargs)


def wide_net(channels=(12, 24, 48, 96), kernels=(9, 5, 3, 2), fc_px: int = 192) -> ParticleNet:
    """Ours, for general models: DeepPicker's layers 1.5× as wide, with batch norm after every convolution
    but the last (the FC head keeps DeepPicker's dropout and two-way output)."""
    layers: list[nn.Module] = []
    size, c_in = 64, 1
    for c_out, k in zip(channels, kernels):
        layers += [nn.Conv2d(c_in, c_out, k), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        size = (size - k + 1) // 2
        c_in = c_out
    layers += [nn.Conv2d(c_in, fc_px, size), nn.BatchNorm2d(fc_px), nn.ReLU(), nn.Dropout(0.5),
               nn.Conv2d(fc_px, 2, 1)]
    kwargs = {"channels": list(channels), "kernels": list(kernels), "fc_px": fc_px}
    return ParticleNet(nn.Sequential(*layers), two_way=True, arch_kwargs=kwargs)


def deepem_net(channels=(6, 12, 24), kernels=(9, 5, 3)) -> ParticleNet:
    """DeepEM's layer pattern (Fig. 1): three conv + sigmoid + 2×2 mean-pool, one fully connected sigmoid
    output. The channel counts and kernel sizes are ours (for the 64-px model box), and so are the loss
    (binary cross-entropy on the logit) and the initialisation (PyTorch's defaults)."""
    layers: list[nn.Module] = []
    size, c_in = 64, 1
    for c_out, k in zip(channels, kernels):
        layers += [nn.Conv2d(c_in, c_out, k), nn.Sigmoid(), nn.AvgPool2d(2)]
        size = (size - k + 1) // 2
        c_in = c_out
    layers += [nn.Conv2d(c_in, 1, size)]
    return ParticleNet(nn.Sequential(*layers), two_way=False,
                       arch_kwargs={"channels": list(channels), "kernels": list(kernels)})


def build_net(arch: str = "deeppicker", **kwargs) -> ParticleNet:
    """Build an untrained network by name (``deeppicker``, ``deepem`` or ``wide``)."""
    if arch == "deeppicker":
        return deeppicker_net(**kwargs)
    if arch == "deepem":
        return deepem_net(**kwargs)
    if arch == "wide":
        return wide_net(**kwargs)
    raise ModelFileError(f"unknown architecture '{arch}'; use one of {', '.join(ARCHITECTURES)}")


@dataclass
class PickerModel:
    """A trained network with everything ``pick`` needs: box size, preparation, post-processing, threshold."""

    net: ParticleNet
    arch: str
    box_px: float  # box side in micrograph pixels that maps to the 64-px model box
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    threshold: float | None = None  # F-beta-optimal score cut chosen on held-out micrographs
    arch_kwargs: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # provenance: training data, recipe, metrics (free-form JSON)
    # cleaning, peak window and edge margin chosen for this model; None: the stage's defaults
    postprocess: PostprocessConfig | None = None
    written_by: str | None = None  # the deeppick version that wrote the file it was loaded from

    @torch.no_grad()
    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Particle probabilities of (N, 1, 64, 64) patches, in eval mode."""
        self.net.eval()
        return torch.sigmoid(self.net(patches))

    def metadata(self) -> dict:
        return {
            "arch": self.arch,
            "arch_kwargs": {**self.net.arch_kwargs, **self.arch_kwargs},
            "box_px": self.box_px,
            "model_px": self.preprocess.model_px,
            "preprocess": self.preprocess.to_dict(),
            "threshold": self.threshold,
            "postprocess": None if self.postprocess is None else self.postprocess.to_dict(),
            "info": self.info,
            "deeppick_version": __version__,
        }


def save_model(model: PickerModel, path: str | os.PathLike) -> None:
    """Write a model file atomically: tensors and a JSON metadata string, nothing executable.

    Raises
    ------
    ModelFileError
        If the file cannot be written (a full disk, say). A trained model is not lost to that: a copy is
        then written to the temporary folder or the home folder, and the message says where.
    """
    archive = _archive(model)
    try:
        with atomic_path(path) as tmp:
            torch.save(archive, tmp)
    except (OSError, RuntimeError) as exc:  # torch reports a short write as a RuntimeError
        kept = _keep_a_copy(archive, Path(path))
        where = (f"a copy is kept in {kept}: move it there once there is room" if kept is not None
                 else "no copy could be kept elsewhere either")
        raise ModelFileError(f"{path}: the model could not be written ({_one_line(exc)}); check the free space "
                             f"and permissions there; {where}") from None


def _archive(model: PickerModel) -> dict:
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "metadata_json": json.dumps(model.metadata(), sort_keys=True),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()},
    }


def model_bytes(model: PickerModel) -> bytes:
    """The model file's bytes (to send a model to worker processes, which load it as a file)."""
    import io

    buffer = io.BytesIO()
    torch.save(_archive(model), buffer)
    return buffer.getvalue()


def model_from_bytes(data: bytes, *, device: str | torch.device = "cpu", where: str = "<model>") -> PickerModel:
    """A model from :func:`model_bytes`, loaded as a model file is (``weights_only``: no code runs)."""
    import io

    try:
        archive = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{where}: not a readable deeppick model ({_one_line(exc)})") from None
    return _from_archive(archive, where, device)


def _keep_a_copy(archive: dict, path: Path) -> Path | None:
    """Write ``archive`` where there may be room: the temporary folder, else the home folder."""
    import tempfile
    import time

    name = f"deeppick-{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.pt"
    for folder in (Path(tempfile.gettempdir()), Path.home()):
        if folder.resolve() == path.parent.resolve():
            continue
        try:
            with atomic_path(folder / name) as tmp:
                torch.save(archive, tmp)
            return folder / name
        except (OSError, RuntimeError):
            continue
    return None


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, shortened at a word boundary."""
    import textwrap

    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return textwrap.shorten(text, width=160, placeholder=" …")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> PickerModel:
    """Load a model file written by :func:`save_model` (never unpickles code).

    Raises
    ------
    ModelFileError
        If the file is missing, corrupt, not a deeppick model or from an incompatible format version.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; give the model file (.pt) itself")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; train one with 'deeppick train' or check the path")
    try:
        archive = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable deeppick model file ({_one_line(exc)}); "
                             "the file is corrupt or was not written by deeppick") from None
    return _from_archive(archive, path, device)


def _from_archive(archive, path, device) -> PickerModel:
    if not isinstance(archive, dict) or archive.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a deeppick model file (no '{MODEL_FORMAT}' marker)")
    version = archive.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise ModelFileError(f"{path}: model file format {version} is not supported by deeppick {__version__} "
                             f"(format {MODEL_FORMAT_VERSION}); retrain or use a matching deeppick version")
    try:
        meta = json.loads(archive["metadata_json"])
        net = build_net(meta["arch"], **meta.get("arch_kwargs", {}))
        net.load_state_dict(archive["state_dict"])
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}; the file was written by another deeppick, or is damaged") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: model file is damaged or inconsistent ({_one_line(exc)}); retrain it") from None
    net.to(device).eval()
    info = meta.get("info", {})
    # files of format 1 keep the post-processing in ``info``
    post = meta.get("postprocess") or info.pop("postprocess", None)
    try:
        postprocess = None if post is None else PostprocessConfig.from_dict(post)
        preprocess = PreprocessConfig.from_dict(meta.get("preprocess", {}))
    except (TypeError, ValueError, DeepPickError) as exc:
        raise ModelFileError(f"{path}: the model's settings are damaged ({_one_line(exc)}); retrain it") from None
    box_px, threshold = meta.get("box_px"), meta.get("threshold")
    if not isinstance(box_px, (int, float)) or not math.isfinite(box_px) or box_px <= 0:
        raise ModelFileError(f"{path}: the model's box size is {box_px!r}, not a positive number of pixels; the "
                             "file is damaged: retrain it")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ModelFileError(f"{path}: the model's threshold is {threshold!r}, not a probability; the file is "
                             "damaged: choose one again with 'deeppick threshold' or retrain it")
    return PickerModel(net=net, arch=meta["arch"], box_px=float(box_px), preprocess=preprocess, threshold=threshold,
                       arch_kwargs=meta.get("arch_kwargs", {}), info=info, postprocess=postprocess,
                       written_by=meta.get("deeppick_version"))


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
