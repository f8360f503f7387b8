"""Preparing a micrograph for the network: low-pass, downscale so the box is ``model_px``, normalise.

This is the one place where micrographs are rescaled. Training patches and picking both crop from the
output of :func:`prepare_micrograph`, so they see identical pixels for the same location.

Frames
------
Micrograph frame: pixel centres at integers, ``image[y, x]``.
Model frame: the prepared image. Fourier resampling keeps pixel 0 where it was, so a model-frame
coordinate maps back by one multiplication: ``x_micrograph = x_model / scale_x`` with
``scale_x = width_model / width_micrograph`` (about ``model_px / box_px``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft
import scipy.ndimage

from .errors import ConfigError
from .io import check_micrograph

# threads of the Fourier resampling: every core (-1), or a worker process's share of them (workers.py sets it)
FFT_WORKERS = -1


MIN_HIGHPASS_SIGMA_MODEL_PX = 16.0
# Settings a model file may lack, with the value a missing one means: off.
OFF_WHEN_ABSENT = {"highpass_sigma_model_px": 0.0}


@dataclass(frozen=True)
class PreprocessConfig:
    """How micrographs are prepared; stored in every model file so picking repeats training exactly."""

    model_px: int = 64  # box side in the model frame (DeepPicker §4.2: 64×64 patches)
    lowpass_sigma_model_px: float = 1.0  # Gaussian low-pass, σ in model px; 0 disables it
    clip_sd: float = 4.0  # normalised pixels are clipped to ±clip_sd so ice and dirt do not dominate
    # Background subtraction (smooth_background, σ in model px, 64 = one box), so a gradient of ice
    # thickness or illumination across the micrograph does not shift every patch's level; 0 disables it.
    highpass_sigma_model_px: float = 0.0

    def __post_init__(self):
        if self.highpass_sigma_model_px != 0 and not self.highpass_sigma_model_px >= MIN_HIGHPASS_SIGMA_MODEL_PX:
            raise ConfigError(f"background subtraction σ must be 0 (off) or at least "
                              f"{MIN_HIGHPASS_SIGMA_MODEL_PX:g} model px (a quarter box), got "
                              f"{self.highpass_sigma_model_px:g}: a narrower one removes the particles themselves")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        data = {**OFF_WHEN_ABSENT, **data}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def identity(self) -> dict:
        """The settings that make up a model's identity (its fingerprint, a patch set's compatibility):
        :meth:`to_dict` without the settings of :data:`OFF_WHEN_ABSENT` while they are off, so a model
        file that lacks them and one that has them off are the same model, and their picks folders resume."""
        return {k: v for k, v in self.to_dict().items() if k not in OFF_WHEN_ABSENT or v != OFF_WHEN_ABSENT[k]}


@dataclass(frozen=True)
class PreparedMicrograph:
    """A micrograph in the model frame, with the scale that maps coordinates back exactly."""

    image: np.ndarray  # float32, model frame, median 0 and robust SD 1
    scale_x: float  # model px per micrograph px along x (columns)
    scale_y: float  # model px per micrograph px along y (rows)
    shape_micrograph: tuple[int, int]  # (rows, columns) of the original micrograph

    def to_model(self, x, y):
        """Micrograph-frame centres → model-frame centres."""
        return np.asarray(x, dtype=np.float64) * self.scale_x, np.asarray(y, dtype=np.float64) * self.scale_y

    def to_micrograph(self, x, y):
        """Model-frame centres → micrograph-frame centres."""
        return np.asarray(x, dtype=np.float64) / self.scale_x, np.asarray(y, dtype=np.float64) / self.scale_y


def model_shape(shape: tuple[int, int], box_px: float, model_px: int = 64) -> tuple[int, int]:
    """Shape of the prepared image for a micrograph of ``shape`` and a box of ``box_px``."""
    if box_px <= 0:
        raise ConfigError(f"box size must be positive, got {box_px}")
    factor = model_px / float(box_px)
    return max(1, int(round(shape[0] * factor))), max(1, int(round(shape[1] * factor)))


def prepare_micrograph(image: np.ndarray, box_px: float, config: PreprocessConfig = PreprocessConfig(),
                       *, path: str = "<array>") -> PreparedMicrograph:
    """Low-pass, resample so ``box_px`` becomes ``config.model_px``, subtract the background, normalise.

    Resampling is Fourier cropping (or zero-padding when the box is smaller than the model box): it is
    alias-free, and the Gaussian low-pass is applied in the same transform.
    Normalisation subtracts the median and divides by 1.4826 × MAD (a robust SD), then clips.

    Example
    -------
    >>> import numpy as np
    >>> prep = prepare_micrograph(np.random.default_rng(0).normal(size=(400, 300)), box_px=100)
    >>> prep.image.shape, round(prep.scale_x, 3)
    ((256, 192), 0.64)
    """
    image = check_micrograph(image, path, box_px=int(np.ceil(box_px)))
    shape_out = model_shape(image.shape, box_px, config.model_px)
    resampled = _fourier_resample(image, shape_out, config.lowpass_sigma_model_px)
    if config.highpass_sigma_model_px > 0:
        resampled -= smooth_background(resampled, config.highpass_sigma_model_px)
    normalised = _robust_normalise(resampled, config.clip_sd)
    return PreparedMicrograph(
        image=normalised,
        scale_x=shape_out[1] / image.shape[1],
        scale_y=shape_out[0] / image.shape[0],
        shape_micrograph=image.shape,
    )


def prepare_stack(images: np.ndarray, box_px: float, config: PreprocessConfig = PreprocessConfig(), *,
                  path: str = "<stack>") -> np.ndarray:
    """Boxed particle images (N, S, S; e.g. RELION's extracted particles, any box S) in the model frame:
    each is Fourier-resampled with the same low-pass as a micrograph so ``box_px`` becomes ``model_px``,
    cropped to the model box around its centre (pixel S/2, where RELION puts it), and the whole stack
    normalised by its median and robust SD and clipped, as a micrograph's pixels are. A model prepared with
    background subtraction has each image's median subtracted first: a box holds no background gradient to
    fit, and its level is what the plane would remove.

    Example
    -------
    >>> stack = np.random.default_rng(0).normal(size=(3, 100, 100))
    >>> prepare_stack(stack, box_px=50).shape
    (3, 64, 64)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2] or not len(images):
        raise ConfigError(f"{path}: expected a stack of square particle images, got shape {images.shape}")
    side = images.shape[1]
    size = max(1, int(round(side * config.model_px / float(box_px))))
    centre = int(round(side / 2 * size / side))
    h = config.model_px // 2
    out = np.zeros((len(images), config.model_px, config.model_px), dtype=np.float32)
    for i, image in enumerate(images):
        small = _fourier_resample(image, (size, size), config.lowpass_sigma_model_px)
        if config.highpass_sigma_model_px > 0:
            small -= np.median(small)
        padded = np.pad(small, h)
        out[i] = padded[centre:centre + config.model_px, centre:centre + config.model_px]
    return _robust_normalise(out, config.clip_sd)


def _fourier_resample(image: np.ndarray, shape_out: tuple[int, int], sigma_out_px: float) -> np.ndarray:
    ny, nx = image.shape
    my, mx = shape_out
    spectrum = scipy.fft.rfft2(image, workers=FFT_WORKERS)
    out = np.zeros((my, mx // 2 + 1), dtype=spectrum.dtype)
    keep_y = min(ny, my)
    pos, neg = keep_y - keep_y // 2, keep_y // 2
    keep_x = min(nx // 2 + 1, mx // 2 + 1)
    out[:pos, :keep_x] = spectrum[:pos, :keep_x]
    if neg:
        out[my - neg:, :keep_x] = spectrum[ny - neg:, :keep_x]
    if sigma_out_px > 0:
        fy = scipy.fft.fftfreq(my).astype(np.float32)[:, None]  # cycles per output pixel
        fx = scipy.fft.rfftfreq(mx).astype(np.float32)[None, :]
        out *= np.exp(-2.0 * np.pi**2 * sigma_out_px**2 * (fy**2 + fx**2))
    result = scipy.fft.irfft2(out, s=(my, mx), workers=FFT_WORKERS)
    result *= (my * mx) / (ny * nx)
    return result.astype(np.float32, copy=False)


def smooth_background(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """The image's slowly varying background: a Gaussian-weighted local plane fit at every pixel.

    Away from the edges this is the Gaussian blur of σ ``sigma_px`` px. Near an edge, where a blur would
    average over missing pixels (or mirrored ones, which fold a gradient back), the weighted plane fit
    follows a gradient right up to the edge and noise is not amplified there. The fit runs on a copy
    block-averaged by ``sigma_px // 4`` and is interpolated back (bilinear), which makes it cheap at any
    σ; the background it estimates varies over several σ, far slower than a block.

    Example
    -------
    >>> import numpy as np
    >>> ramp = np.tile(np.linspace(0, 10, 300, dtype=np.float32), (200, 1))
    >>> float(np.abs(smooth_background(ramp, 32) - ramp).max()) < 1e-3
    True
    """
    k = max(1, int(sigma_px // 4))
    ny, nx = image.shape
    my, mx = -(-ny // k), -(-nx // k)
    # blocks of the last row and column may be partly outside: each is the mean of its real pixels,
    # weighted by their number
    rows = np.minimum(k, ny - np.arange(my) * k)
    cols = np.minimum(k, nx - np.arange(mx) * k)
    padded = np.pad(image.astype(np.float64), ((0, my * k - ny), (0, mx * k - nx)))
    count = rows[:, None] * cols[None, :]
    small = padded.reshape(my, k, mx, k).sum(axis=(1, 3)) / count
    # block i's mean sits at pixel i·k + (k − 1)/2 (the last block's at the centre of its real pixels)
    cy = np.arange(my) * k + (k - 1) / 2
    cx = np.arange(mx) * k + (k - 1) / 2
    cy[-1] = ((my - 1) * k + ny - 1) / 2
    cx[-1] = ((mx - 1) * k + nx - 1) / 2
    small = _local_plane(small, count / k**2, cy / k, cx / k, sigma_px / k)
    return _bilinear(small, _grid_position(ny, cy), _grid_position(nx, cx)).astype(image.dtype, copy=False)


def _grid_position(n_px: int, centres: np.ndarray) -> np.ndarray:
    """Each of ``n_px`` pixels as a fractional index into blocks centred at ``centres`` (linear beyond
    the first and last centre, so a plane is continued to the edge)."""
    px = np.arange(n_px, dtype=np.float64)
    if len(centres) == 1:
        return np.zeros(n_px)
    t = np.interp(px, centres, np.arange(len(centres), dtype=np.float64))
    before, after = px < centres[0], px > centres[-1]
    t[before] = (px[before] - centres[0]) / (centres[1] - centres[0])
    t[after] = len(centres) - 1 + (px[after] - centres[-1]) / (centres[-1] - centres[-2])
    return t


def _local_plane(values: np.ndarray, weight: np.ndarray, y: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    """At each pixel, the value there of the plane fitted to ``values`` with weights ``weight`` × a Gaussian
    of σ ``sigma`` pixels centred on it (pixels outside the image have no weight). Pixel (i, j) lies at
    (``y[i]``, ``x[j]``) for the plane; these are i and j except where the last row or column of blocks
    is partial."""
    def blur(a):
        return scipy.ndimage.gaussian_filter(a, sigma, mode="constant", cval=0.0, truncate=4.0)

    yy, xx = np.meshgrid(y, x, indexing="ij")
    w, wf = weight, weight * values
    # moments of the weights and of the values about each pixel (u = X − x, v = Y − y)
    s1, sx, sy = blur(w), blur(w * xx), blur(w * yy)
    sxx, sxy, syy = blur(w * xx * xx), blur(w * xx * yy), blur(w * yy * yy)
    f, fx, fy = blur(wf), blur(wf * xx), blur(wf * yy)
    su, sv = sx - xx * s1, sy - yy * s1
    suu = sxx - 2 * xx * sx + xx * xx * s1
    svv = syy - 2 * yy * sy + yy * yy * s1
    suv = sxy - xx * sy - yy * sx + xx * yy * s1
    fu, fv = fx - xx * f, fy - yy * f
    ridge = 1e-9 * s1 + 1e-300  # a single row or column has no slope across it
    a = np.stack([np.stack([s1, su, sv], -1), np.stack([su, suu + ridge, suv], -1),
                  np.stack([sv, suv, svv + ridge], -1)], -2)
    b = np.stack([f, fu, fv], -1)[..., None]
    return np.linalg.solve(a, b)[..., 0, 0]


def _bilinear(grid: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``grid`` sampled at every (y[i], x[j]), coordinates in grid pixels (linear beyond its edges)."""
    def weights(t, n):
        i0 = np.clip(np.floor(t).astype(np.intp), 0, max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, t - i0
    y0, y1, wy = weights(y, grid.shape[0])
    x0, x1, wx = weights(x, grid.shape[1])
    rows = grid[y0] * (1 - wy)[:, None] + grid[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx)[None, :] + rows[:, x1] * wx[None, :]


def _robust_normalise(image: np.ndarray, clip_sd: float) -> np.ndarray:
    median = float(np.median(image))
    mad = float(np.median(np.abs(image - median)))
    sd = 1.4826 * mad
    if not sd > 0:
        sd = float(image.std()) or 1.0
    out = (image - median) / sd
    if clip_sd > 0:
        np.clip(out, -clip_sd, clip_sd, out=out)
    return out.astype(np.float32, copy=False)
