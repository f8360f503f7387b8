"""Patches in the model frame: the one cropping convention shared by training and scanning.

A patch *centred* at integer model-frame position ``(cx, cy)`` is
``image[cy - h : cy + h, cx - h : cx + h]`` with ``h = model_px // 2``: the centre pixel sits at index
``h`` of the patch (for the 64-px box, index 32, just below and right of the geometric middle).
Pixels outside the prepared image are 0, the median of a normalised micrograph.
"""

from __future__ import annotations

import numpy as np


def pad_for_patches(image: np.ndarray, model_px: int = 64) -> np.ndarray:
    """Zero-pad ``image`` by ``model_px // 2`` on every side so any pixel can be a patch centre."""
    h = model_px // 2
    return np.pad(image, h, mode="constant", constant_values=0.0)


def crop_patches(image: np.ndarray, cx, cy, model_px: int = 64, padded: np.ndarray | None = None) -> np.ndarray:
    """Crop patches centred at integer model-frame positions; returns (N, model_px, model_px) float32.

    ``padded`` may pass a precomputed :func:`pad_for_patches` of ``image`` to save the copy.
    """
    h = model_px // 2
    if padded is None:
        padded = pad_for_patches(image, model_px)
    cx = np.asarray(cx, dtype=np.int64).reshape(-1)
    cy = np.asarray(cy, dtype=np.int64).reshape(-1)
    if np.any((cx < 0) | (cy < 0) | (cx >= image.shape[1]) | (cy >= image.shape[0])):
        raise ValueError("patch centres must lie inside the image")
    # In padded coordinates the patch of centre c spans [c, c + model_px).
    out = np.empty((len(cx), model_px, model_px), dtype=np.float32)
    for i, (x, y) in enumerate(zip(cx, cy)):
        out[i] = padded[y : y + model_px, x : x + model_px]
    return out


def model_centres(prepared, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Micrograph-frame centres → nearest integer model-frame centres, clipped into the image."""
    mx, my = prepared.to_model(x, y)
    rows, cols = prepared.image.shape
    cx = np.clip(np.rint(mx), 0, cols - 1).astype(np.int64)
    cy = np.clip(np.rint(my), 0, rows - 1).astype(np.int64)
    return cx, cy
