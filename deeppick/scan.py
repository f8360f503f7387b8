"""Score maps: the particle probability of the box centred at every scan position of a micrograph.

The network is evaluated as one fully convolutional pass over the prepared (model-frame) image, which
gives exactly the scores of cropping and scoring every patch on its own (:func:`naive_scan`, kept as
the reference). How:

* **Dense evaluation.** A patch network of valid convolutions and 2 × 2 / stride-2 pools applied to a
  larger image computes the patch scores on a grid of stride 2^(number of pools). To get every position
  the pools after the first ``log2(t)`` (where ``t`` is the power-of-two part of the model step) are
  evaluated at both offsets along each axis, and the four offset maps go into the batch ("shift and
  stitch"; the same numbers as "à trous" dilated layers, but every convolution stays a plain dense one,
  which is what the fast kernels are written for). At the end the phases are interleaved back.
* **Rotations** (DeepEM) rotate the micrograph, not each patch: each square input tile is rotated by
  0/90/180/270° inside one batch and each score map is rotated back. A tile whose side is
  ``(m - 1) × step + 64`` keeps the scan grid on itself under rotation, so the 64-px patch convention
  (centre at index 32, which ``np.rot90`` moves to 31) needs no correction.
* **Tiles** of ``tile_px`` model pixels with a 63-px halo bound memory and keep the working set in cache.
* **Kernels.** Where the work is (measured on 2 cores, ``benchmarks/scan_speed.py``): the first conv has
  one input channel, a poor convolution, so it and its strided pool run as one conv on the 2 × 2
  space-to-depth image (4 channels in, 4 × C out, the pool a maximum over the four output groups);
  the later layers run in channels-last memory, the layout the CPU convolutions are fastest in; the
  last pool before the fully connected head runs at stride 1 and the head's first layer (two thirds of
  the FLOPs) is a dilated convolution over it, which saves splitting that pool into phases.

Frames: scan position (row ``i``, column ``j``) is centred at model-frame ``(x, y) = (j, i) ×
model_step_px`` (see :mod:`deeppick.patches`); :meth:`ScoreMap.to_micrograph` converts to the micrograph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .model import PickerModel
from .patches import crop_patches, pad_for_patches
from .preprocess import PreparedMicrograph

__all__ = ["ScanConfig", "ScoreMap", "scan_micrograph", "naive_scan", "score_positions", "model_step_px",
           "step_used"]


@dataclass(frozen=True)
class ScanConfig:
    """How a micrograph is scanned."""

    # micrograph px between scan positions: DeepPicker §4.5; the scan rounds it to whole model px (snap_step
    # within ±25 %, see model_step_px), so the step used can differ (step_used says which)
    step_px: float = 4.0
    rotations: bool = True  # average the 0/90/180/270° scores: DeepEM (rotation-averaged score map)
    snap_step: bool = True  # ours: round the model-frame step to a pool-friendly value (see model_step_px)
    tile_px: int = 128  # model-frame px of scan positions per tile side: cache-sized, measured on 2 cores
    tiles_per_batch: int = 1  # tiles (× 4 rotations) per network call: measured on 2 cores

    def __post_init__(self):
        if not self.step_px > 0:
            raise ConfigError(f"scan step must be positive, got step_px={self.step_px}")
        if self.tile_px < 1 or self.tiles_per_batch < 1:
            raise ConfigError(f"tile_px and tiles_per_batch must be ≥ 1, got {self.tile_px}, {self.tiles_per_batch}")


@dataclass(frozen=True, eq=False)
class ScoreMap:
    """Particle probabilities on the scan grid of one prepared micrograph.

    ``scores[i, j]`` is the probability for the box centred at model-frame ``(x, y) = (j, i) ×
    model_step_px``; the grid starts at model pixel 0 and covers every position of the prepared image.
    """

    scores: np.ndarray  # (rows, columns) float32 probabilities in [0, 1]
    model_step_px: int  # model-frame px between neighbouring grid positions
    scale_x: float  # model px per micrograph px along x, from the PreparedMicrograph
    scale_y: float

    def to_model(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """Grid (row, col), possibly fractional → model-frame centre (x, y)."""
        return (np.asarray(col, dtype=np.float64) * self.model_step_px,
                np.asarray(row, dtype=np.float64) * self.model_step_px)

    def to_micrograph(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """Grid (row, col), possibly fractional → micrograph-frame centre (x, y) in micrograph px."""
        x_model, y_model = self.to_model(row, col)
        return x_model / self.scale_x, y_model / self.scale_y


def model_step_px(step_px: float, prepared: PreparedMicrograph, snap: bool = True) -> int:
    """Scan step in model px for a step of ``step_px`` micrograph px (mean of the x and y scales).

    Without ``snap``: ``max(1, round(step_px × scale))``. With ``snap`` the step is the integer within
    ±25 % of ``step_px × scale`` that holds the most factors of two (the nearest among equals): every
    factor of two lets one more max-pool of the dense pass stay strided, so an odd step such as 7 costs
    many times the work of 8. The step in micrograph px is then that many model px (:func:`step_used`).
    """
    return _snapped(step_px * 0.5 * (prepared.scale_x + prepared.scale_y), snap)


def step_used(config: ScanConfig, box_px: float, model_px: int = 64) -> tuple[int, float]:
    """The scan step a micrograph of box ``box_px`` is scanned at: ``(model px, micrograph px)``.

    Example
    -------
    >>> step_used(ScanConfig(step_px=4.0), box_px=160)  # 4 px is 1.6 model px, snapped to 2
    (2, 5.0)
    """
    scale = model_px / float(box_px)
    step = _snapped(config.step_px * scale, config.snap_step)
    return step, step / scale


def _snapped(raw: float, snap: bool) -> int:
    if not snap or raw < 1.5:
        return max(1, int(round(raw)))
    candidates = [n for n in range(max(1, int(raw * 0.75)), int(raw * 1.25) + 2) if abs(n / raw - 1) <= 0.25]
    if not candidates:
        return max(1, int(round(raw)))
    return max(candidates, key=lambda n: ((n & -n), -abs(n - raw)))


def _device(model: PickerModel) -> torch.device:
    return next(model.net.parameters()).device


def _grid_shape(image_shape: tuple[int, int], step: int) -> tuple[int, int]:
    return (image_shape[0] - 1) // step + 1, (image_shape[1] - 1) // step + 1


# --------------------------------------------------------------------------------------------------
# Reference: one patch at a time


@torch.inference_mode()
def score_positions(model: PickerModel, prepared: PreparedMicrograph, cx, cy, *, rotations: bool = True,
                    batch_size: int = 512) -> np.ndarray:
    """Exact particle probabilities of the patches centred at integer model-frame ``(cx, cy)``.

    Crops each patch with :func:`deeppick.patches.crop_patches`, and with ``rotations`` averages the
    probabilities of its ``np.rot90`` copies, k = 0..3. Returns float32 of the shape of ``cx``.
    """
    model_px = model.preprocess.model_px
    cx = np.asarray(cx, dtype=np.int64)
    cy = np.asarray(cy, dtype=np.int64)
    if cx.shape != cy.shape:
        raise ValueError(f"cx and cy differ in shape: {cx.shape} vs {cy.shape}")
    flat_x, flat_y = cx.reshape(-1), cy.reshape(-1)
    padded = pad_for_patches(prepared.image, model_px)
    device = _device(model)
    model.net.eval()
    out = np.empty(flat_x.size, dtype=np.float32)
    turns = range(4) if rotations else range(1)
    for start in range(0, flat_x.size, batch_size):
        patches = crop_patches(prepared.image, flat_x[start:start + batch_size], flat_y[start:start + batch_size],
                               model_px, padded=padded)
        total = None
        for k in turns:
            rotated = np.ascontiguousarray(np.rot90(patches, k, axes=(1, 2)))
            prob = torch.sigmoid(model.net(torch.from_numpy(rotated).to(device)[:, None]))
            total = prob if total is None else total + prob
        out[start:start + batch_size] = (total / len(turns)).cpu().numpy()
    return out.reshape(cx.shape)


def naive_scan(model: PickerModel, prepared: PreparedMicrograph, config: ScanConfig = ScanConfig()) -> ScoreMap:
    """Reference scanner: crop and score every grid patch on its own (slow; same result as the fast one)."""
    step = model_step_px(config.step_px, prepared, config.snap_step)
    rows, cols = _grid_shape(prepared.image.shape, step)
    cy, cx = np.mgrid[0:rows, 0:cols] * step
    scores = score_positions(model, prepared, cx, cy, rotations=config.rotations)
    return ScoreMap(scores=scores, model_step_px=step, scale_x=prepared.scale_x, scale_y=prepared.scale_y)


# --------------------------------------------------------------------------------------------------
# Dense evaluation


@dataclass(frozen=True)
class _DensePlan:
    """How to evaluate the patch network densely at a model step ``strided_px × subsample``."""

    layers: tuple  # (kind, module) from ParticleNet.layer_specs(), dropout removed
    n_strided_pools: int  # leading pools kept stride 2: the grid is already that coarse
    n_phase_pools: int  # later pools evaluated at both offsets (phases into the batch)
    subsample: int  # the odd (or beyond-pools) rest of the step, taken from the dense map
    first_weight: torch.Tensor | None = None  # first conv + strided pool as a space-to-depth conv, if so run
    first_kinds: tuple[str, str] | None = None  # (activation, pool) fused with it when ``first_weight`` is set

    @property
    def phase_px(self) -> int:
        return 2 ** self.n_phase_pools


def _plan(model: PickerModel, step: int) -> _DensePlan:
    layers = []
    for kind, module in model.net.layer_specs():
        if kind == "dropout":
            continue
        if kind == "batchnorm":
            if not layers or layers[-1][0] != "conv":
                raise ValueError(f"dense scanning needs a batch norm right after a convolution, got {module}")
            layers[-1] = ("conv", _fold_batchnorm(layers[-1][1], module))
            continue
        if kind == "conv" and (module.stride != (1, 1) or module.padding != (0, 0) or module.dilation != (1, 1)
                               or module.groups != 1):
            raise ValueError(f"dense scanning needs plain valid convolutions, got {module}")
        if kind in ("maxpool", "avgpool"):
            kernel, stride = module.kernel_size, module.stride
            if kernel not in (2, (2, 2)) or stride not in (2, (2, 2)) or module.padding not in (0, (0, 0)):
                raise ValueError(f"dense scanning needs 2×2 stride-2 pools, got {module}")
        layers.append((kind, module))
    n_pools = sum(kind in ("maxpool", "avgpool") for kind, _ in layers)
    n_strided = 0
    while n_strided < n_pools and step % (2 ** (n_strided + 1)) == 0:
        n_strided += 1
    first_weight, first_kinds = None, None
    kinds = tuple(kind for kind, _ in layers[:3])
    if (n_strided >= 1 and kinds[:1] == ("conv",) and layers[0][1].in_channels == 1
            and kinds[1:3] in (("relu", "maxpool"), ("sigmoid", "avgpool"), ("sigmoid", "maxpool"))):
        first_weight, first_kinds = _space_to_depth_weight(layers[0][1].weight.detach()), kinds[1:3]
    return _DensePlan(tuple(layers), n_strided, n_pools - n_strided, step // 2 ** n_strided, first_weight,
                      first_kinds)


def _fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """The convolution followed by the trained batch norm (its running statistics), as one convolution."""
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(norm.running_mean)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size).to(conv.weight.device)
    folded.weight.data = conv.weight.detach() * scale[:, None, None, None]
    folded.bias.data = (bias - norm.running_mean) * scale + norm.bias.detach()
    return folded


def _pool_phases(x: torch.Tensor, kind: str) -> torch.Tensor:
    """2×2 pool at both offsets along each axis: (B, C, H, W) → (B·4, C, (H-1)//2, (W-1)//2).

    Phase (oy, ox) of batch item b lands at index 4b + 2oy + ox and holds the stride-2 pool started
    at (oy, ox). Works in channels-last memory (the layout the convolutions are fastest in) and returns
    channels-last.
    """
    both = _pool_stride1(x, kind)
    b, c, h, w = both.shape
    h2, w2 = h // 2, w // 2
    nhwc = both.permute(0, 2, 3, 1)[:, :2 * h2, :2 * w2].reshape(b, h2, 2, w2, 2, c)
    return nhwc.permute(0, 2, 4, 1, 3, 5).reshape(b * 4, h2, w2, c).permute(0, 3, 1, 2)


def _pool_stride1(x: torch.Tensor, kind: str) -> torch.Tensor:
    """2×2 pool with stride 1: (B, C, H, W) → (B, C, H-1, W-1); every offset of the stride-2 pool."""
    if kind == "maxpool":
        rows = torch.maximum(x[:, :, :-1], x[:, :, 1:])
        return torch.maximum(rows[..., :-1], rows[..., 1:])
    rows = x[:, :, :-1] + x[:, :, 1:]
    return (rows[..., :-1] + rows[..., 1:]) * 0.25


def _space_to_depth_weight(weight: torch.Tensor) -> torch.Tensor:
    """A k × k conv followed by a stride-2 pool, as one conv on the 2 × 2 space-to-depth image.

    ``weight`` (C_out, C_in, k, k) → (4·C_out, 4·C_in, k', k'), k' = (k + 2) // 2: output channel group
    (a, b) is the conv at pool-window member (a, b), input group (p, q) the image phase (p, q), so every
    product of the original conv appears once (the added taps are zeros). One input channel (the
    micrograph) makes a poor convolution; four in and 4·C_out out is a good one.
    """
    c_out, c_in, k, _ = weight.shape
    k2 = (k + 2) // 2
    out = weight.new_zeros(2, 2, c_out, 2, 2, c_in, k2, k2)
    for a in range(2):
        for b in range(2):
            for u in range(k):
                for v in range(k):
                    r, c = a + u, b + v
                    out[a, b, :, r % 2, c % 2, :, r // 2, c // 2] = weight[:, :, u, v]
    return out.reshape(4 * c_out, 4 * c_in, k2, k2)


def _first_conv_pool(x: torch.Tensor, conv: torch.nn.Conv2d, s2d_weight: torch.Tensor, activation: str | None,
                     kind: str) -> torch.Tensor:
    """conv → activation → stride-2 pool of the first layer, through :func:`_space_to_depth_weight`."""
    b, c, h, w = x.shape
    k = conv.kernel_size[0]
    k2 = s2d_weight.shape[-1]
    out_h, out_w = (h - k + 1) // 2, (w - k + 1) // 2
    need_h, need_w = 2 * (out_h + k2 - 1), 2 * (out_w + k2 - 1)  # zeros past the image reach no kept output
    x = F.pad(x, (0, max(0, need_w - w), 0, max(0, need_h - h)))[:, :, :need_h, :need_w]
    # (B, C, H, W) → channels-last (B, 4C, H/2, W/2), channel (2p + q)·C + c = phase (p, q) of channel c
    x = x.reshape(b, c, need_h // 2, 2, need_w // 2, 2).permute(0, 2, 4, 3, 5, 1)
    x = x.reshape(b, need_h // 2, need_w // 2, 4 * c).permute(0, 3, 1, 2)
    y = F.conv2d(x, s2d_weight, conv.bias.repeat(4) if conv.bias is not None else None)
    if activation == "sigmoid":
        y = y.sigmoid_()
    groups = y.split(conv.out_channels, dim=1)  # the four pool-window members (a, b)
    if kind == "maxpool":
        y = torch.maximum(torch.maximum(groups[0], groups[1]), torch.maximum(groups[2], groups[3]))
    else:
        y = (groups[0] + groups[1] + groups[2] + groups[3]) * 0.25
    if activation == "relu":  # commutes with the max; after it, on a quarter of the values
        y = y.clamp_(min=0)
    return y.contiguous(memory_format=torch.channels_last)


def _split_head(plan: _DensePlan) -> tuple[list, list]:
    """Layers up to the last pool (run as convolutions) and the fully connected head after it."""
    pools = [i for i, (kind, _) in enumerate(plan.layers) if kind in ("maxpool", "avgpool")]
    cut = pools[-1] + 1 if pools else 0
    head = list(plan.layers[cut:])
    # Worth it for a wide FC layer (DeepPicker's 128: two thirds of the FLOPs); a one-output FC layer
    # (DeepEM) stays a convolution, which also keeps its summation order equal to the per-patch one.
    if (head and head[0][0] == "conv" and head[0][1].out_channels >= 16
            and all(m.kernel_size == (1, 1) for kind, m in head[1:] if kind == "conv")):
        return list(plan.layers[:cut]), head
    return list(plan.layers), []


def _run_head(net, head: list, x: torch.Tensor, dilation: int = 1, stride: int = 1) -> torch.Tensor:
    """Fully connected head on feature maps (B, C, H, W) → logit maps (B, h, w).

    The first FC layer is a k × k convolution (here with ``dilation`` and ``stride``), run in
    channels-last memory; the later 1 × 1 layers are matrix multiplies on its (positions, channels) view.
    """
    first = head[0][1]
    x = F.conv2d(x.contiguous(memory_format=torch.channels_last), first.weight, first.bias,
                 stride=stride, dilation=dilation)
    b, _, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(b * h * w, -1)  # a view: channels-last is (B, H, W, C) in memory
    for kind, module in head[1:]:
        if kind == "conv":
            weight = module.weight[:, :, 0, 0].T
            y = torch.addmm(module.bias, y, weight) if module.bias is not None else y @ weight
        elif kind == "relu":
            y = y.clamp_(min=0)
        elif kind == "sigmoid":
            y = y.sigmoid_()
    return net.logit_from_output(y.T[None, :, :, None])[0, :, 0].reshape(b, h, w)


def _interleave_phases(x: torch.Tensor, q: int) -> torch.Tensor:
    """(B·4^q, C, h, w) phase maps → (B, C, h·2^q, w·2^q): batch (b, oy1, ox1, …, oyq, oxq) goes to
    position h·2^q + Σ oy_l·2^(l-1) (the inverse of the splits in :func:`_pool_phases`)."""
    _, c, h, w = x.shape
    x = x.reshape((-1,) + (2, 2) * q + (c, h, w))
    rows = [1 + 2 * l for l in reversed(range(q))]
    cols = [2 + 2 * l for l in reversed(range(q))]
    x = x.permute(0, 2 * q + 1, 2 * q + 2, *rows, 2 * q + 3, *cols)
    return x.reshape(-1, c, h * 2 ** q, w * 2 ** q)


def _dense_logits(model: PickerModel, plan: _DensePlan, x: torch.Tensor) -> torch.Tensor:
    """Logit maps (B, h, w) of input tiles (B, 1, L, L); map (i, j) ↔ patch at ``(i, j) × step``."""
    body, head = _split_head(plan)
    for i in range(len(body) - 1):  # max-pool and ReLU commute exactly: ReLU the smaller, pooled map
        if body[i][0] == "relu" and body[i + 1][0] == "maxpool":
            body[i], body[i + 1] = body[i + 1], body[i]
    pools_done = 0
    if plan.first_weight is not None:  # conv → activation → strided pool as one space-to-depth conv
        activation, pool = plan.first_kinds
        x = _first_conv_pool(x, body[0][1], plan.first_weight, activation, pool)
        body = body[3:]
        pools_done = 1
    q, r = plan.n_phase_pools, plan.subsample
    # With a head and no odd step left, the last pool runs at stride 1 and the head dilated by 2 over it:
    # the same numbers as splitting it into phases, without that copy.
    last_unsplit = bool(head) and r == 1 and q >= 1
    n_pools = plan.n_strided_pools + q
    last_conv = max((i for i, (kind, _) in enumerate(body) if kind == "conv"), default=-1)
    for i, (kind, module) in enumerate(body):
        if kind == "conv":
            if i == last_conv and not head:  # a one-output final layer: the per-patch summation order
                x = x.contiguous()
            x = F.conv2d(x, module.weight, module.bias)
        elif kind == "relu":
            x = x.clamp_(min=0)
        elif kind == "sigmoid":
            x = x.sigmoid_()
        elif pools_done < plan.n_strided_pools:
            x = F.max_pool2d(x, 2) if kind == "maxpool" else F.avg_pool2d(x, 2)
            pools_done += 1
        elif last_unsplit and pools_done == n_pools - 1:
            x = _pool_stride1(x, kind)
            pools_done += 1
        else:
            x = _pool_phases(x, kind)
            pools_done += 1
    if head and r > 1:
        # Odd step: interleave the features, then run the head (2/3 of the FLOPs) only where needed.
        return _run_head(model.net, head, _interleave_phases(x, q), dilation=plan.phase_px, stride=r)
    if last_unsplit:
        return _interleave_phases(_run_head(model.net, head, x, dilation=2)[:, None], q - 1)[:, 0]
    logits = _run_head(model.net, head, x) if head else model.net.logit_from_output(x)
    return _interleave_phases(logits[:, None], q)[:, 0, ::r, ::r]


def _dense_out_len(plan: _DensePlan, n: int) -> int:
    """Length of the dense map (before subsampling) for an input tile side of ``n`` px."""
    pools_done = 0
    for kind, module in plan.layers:
        if kind == "conv":
            n = n - module.kernel_size[0] + 1
        elif kind in ("maxpool", "avgpool"):
            n = n // 2 if pools_done < plan.n_strided_pools else (n - 1) // 2
            pools_done += 1
    return n * plan.phase_px


@torch.inference_mode()
def scan_micrograph(model: PickerModel, prepared: PreparedMicrograph, config: ScanConfig = ScanConfig()) -> ScoreMap:
    """Score map of a prepared micrograph: rotation-averaged particle probability at every scan position.

    Equal to :func:`naive_scan` (to float rounding, ~1e-7) and orders of magnitude faster. Runs on the
    model's device.

    Parameters
    ----------
    model : PickerModel
        Trained network; evaluated in eval mode (dropout off).
    prepared : PreparedMicrograph
        Output of :func:`deeppick.preprocess.prepare_micrograph` for this model's box.
    config : ScanConfig
        Step in micrograph px, rotation averaging, tiling.

    Returns
    -------
    ScoreMap
        ``scores[i, j]`` for the patch centred at model-frame ``(j, i) × model_step_px``.
    """
    net = model.net
    net.eval()
    model_px = model.preprocess.model_px
    half = model_px // 2
    device = _device(model)
    dtype = next(net.parameters()).dtype
    step = model_step_px(config.step_px, prepared, config.snap_step)
    plan = _plan(model, step)
    image = prepared.image
    rows, cols = _grid_shape(image.shape, step)

    per_tile = min(max(1, config.tile_px // step), max(rows, cols))  # grid positions per tile side
    tile_in_px = (per_tile - 1) * step + model_px  # input side: keeps the grid fixed under rotation
    needed = (per_tile - 1) * (step // 2 ** plan.n_strided_pools) + 1  # dense-map length to keep
    extra_px = 0  # zeros after the tile so the phase split keeps every needed position
    while _dense_out_len(plan, tile_in_px + extra_px) < needed:
        extra_px += 1
    tiles_y, tiles_x = -(-rows // per_tile), -(-cols // per_tile)

    padded = torch.zeros((tiles_y * per_tile * step + model_px, tiles_x * per_tile * step + model_px), dtype=dtype)
    padded[half:half + image.shape[0], half:half + image.shape[1]] = torch.from_numpy(image)
    padded = padded.to(device)

    turns = 4 if config.rotations else 1
    out = torch.empty((tiles_y * per_tile, tiles_x * per_tile), dtype=torch.float32, device=device)
    corners = [(ty, tx) for ty in range(tiles_y) for tx in range(tiles_x)]
    for start in range(0, len(corners), config.tiles_per_batch):
        chunk = corners[start:start + config.tiles_per_batch]
        tiles = torch.stack([padded[ty * per_tile * step:ty * per_tile * step + tile_in_px,
                                    tx * per_tile * step:tx * per_tile * step + tile_in_px] for ty, tx in chunk])
        if turns == 4:
            tiles = torch.stack([torch.rot90(tiles, k, dims=(1, 2)) for k in range(4)], dim=1).flatten(0, 1)
        if extra_px:
            tiles = F.pad(tiles, (0, extra_px, 0, extra_px))
        logits = _dense_logits(model, plan, tiles[:, None].contiguous())
        logits = logits[:, :per_tile, :per_tile]
        probs = torch.sigmoid(logits.float()).reshape(len(chunk), turns, per_tile, per_tile)
        total = probs[:, 0]
        for k in range(1, turns):
            total = total + torch.rot90(probs[:, k], -k, dims=(1, 2))
        total = total / turns
        for (ty, tx), tile_scores in zip(chunk, total):
            out[ty * per_tile:(ty + 1) * per_tile, tx * per_tile:(tx + 1) * per_tile] = tile_scores
    scores = out[:rows, :cols].cpu().numpy()
    return ScoreMap(scores=scores, model_step_px=step, scale_x=prepared.scale_x, scale_y=prepared.scale_y)
