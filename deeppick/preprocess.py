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

from .errors import ConfigError
from .io import check_micrograph


@dataclass(frozen=True)
class PreprocessConfig:
    """How micrographs are prepared; stored in every model file so picking repeats training exactly."""

    model_px: int = 64  # box side in the model frame (DeepPicker §4.2: 64×64 patches)
    lowpass_sigma_model_px: float = 1.0  # Gaussian low-pass, σ in model px; 0 disables it
    clip_sd: float = 4.0  # normalised pixels are clipped to ±clip_sd so ice and dirt do not dominate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


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
                       path: str = "<array>") -> PreparedMicrograph:
    """Low-pass, resample so ``box_px`` becomes ``config.model_px``, and normalise robustly.

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
    normalised = _robust_normalise(resampled, config.clip_sd)
    return PreparedMicrograph(
        image=normalised,
        scale_x=shape_out[1] / image.shape[1],
        scale_y=shape_out[0] / image.shape[0],
        shape_micrograph=image.shape,
    )


def _fourier_resample(image: np.ndarray, shape_out: tuple[int, int], sigma_out_px: float) -> np.ndarray:
    ny, nx = image.shape
    my, mx = shape_out
    spectrum = scipy.fft.rfft2(image, workers=-1)
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
    result = scipy.fft.irfft2(out, s=(my, mx), workers=-1)
    result *= (my * mx) / (ny * nx)
    return result.astype(np.float32, copy=False)


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
