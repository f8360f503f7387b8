"""Micrographs as a person views them, with picks drawn on them.

:func:`micrograph_view` makes the grey picture (downsampled to about 1024 px wide with anti-aliasing,
low-pass filtered at a fraction of the box so particles stand out from the noise, contrast stretched
between the 1st and 99th percentiles); :func:`draw_picks` draws each pick as a circle of the box's
diameter on it, coloured by score, or, against references, as true positive / false positive / missed in
three colours that colour-blind readers tell apart (Okabe and Ito's palette). :func:`show_picks` does
both and returns the RGB array (``deeppick show``).

Frames: a pick at micrograph ``(x, y)`` (pixel centres at integers, row 0 first as stored) lands at view
``((x + 0.5) × s − 0.5, (y + 0.5) × s − 0.5)`` for a view scale ``s``: the resampling keeps pixel edges
aligned, so a circle is centred on its pick at any scale (no flip, no half-pixel shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.ndimage

# Okabe & Ito (2008), colour-blind safe: blue, orange, reddish purple
TRUE_POSITIVE = (0, 114, 178)
FALSE_POSITIVE = (230, 159, 0)
MISSED = (204, 121, 167)
VIEW_WIDTH_PX = 1024  # about the width of a screen's picture of a micrograph
LOWPASS_BOX = 1 / 16  # Gaussian σ of the view's low-pass, × box: the particles' shape survives, the noise not


@dataclass(frozen=True)
class View:
    """A micrograph as shown: ``grey`` (rows, columns) uint8 and its scale, view px per micrograph px (along
    x; ``scale_y`` along y, which rounding of the view's size can make differ a little)."""

    grey: np.ndarray
    scale: float
    scale_y: float

    def to_view(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Micrograph-frame centres (px) → view-frame centres (px)."""
        return ((np.asarray(x, dtype=np.float64) + 0.5) * self.scale - 0.5,
                (np.asarray(y, dtype=np.float64) + 0.5) * self.scale_y - 0.5)


def micrograph_view(image: np.ndarray, *, box_px: float | None = None, width_px: int = VIEW_WIDTH_PX) -> View:
    """The micrograph as a person views it: at most ``width_px`` wide (never enlarged), low-pass filtered at
    ``box_px / 16`` (when the box is known), contrast stretched to 0–255 between the 1st and 99th
    percentiles.

    Example
    -------
    >>> view = micrograph_view(np.random.default_rng(0).normal(size=(300, 2048)), box_px=64)
    >>> view.grey.shape, view.grey.dtype.name, view.scale
    ((150, 1024), 'uint8', 0.5)
    """
    from skimage.transform import rescale

    image = np.asarray(image, dtype=np.float32)
    scale = min(1.0, width_px / image.shape[1])
    small = rescale(image, scale, anti_aliasing=True, preserve_range=True) if scale < 1 else image
    if box_px:
        small = scipy.ndimage.gaussian_filter(small, LOWPASS_BOX * box_px * scale)
    low, high = np.percentile(small, [1, 99])
    grey = np.clip((small - low) / max(float(high - low), 1e-12), 0, 1)
    return View(grey=(grey * 255).round().astype(np.uint8), scale=float(small.shape[1] / image.shape[1]),
                scale_y=float(small.shape[0] / image.shape[0]))


def score_colours(scores) -> np.ndarray:
    """(N, 3) uint8 colours of scores in [0, 1] on the viridis scale (dark blue low, yellow high)."""
    from matplotlib import colormaps

    values = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=1.0), 0, 1)
    return (colormaps["viridis"](values)[:, :3] * 255).round().astype(np.uint8)


def draw_circles(rgb: np.ndarray, x, y, radius_px: float, colours, *, width_px: int = 2) -> np.ndarray:
    """Draw anti-aliased circles of ``radius_px`` at view centres ``(x, y)`` on ``rgb`` (in place, returned),
    ``width_px`` thick, one colour per circle (or one for all)."""
    from skimage.draw import circle_perimeter_aa

    x, y = np.atleast_1d(x), np.atleast_1d(y)
    colours = np.broadcast_to(np.asarray(colours, dtype=np.float64).reshape(-1, 3), (len(x), 3))
    for cx, cy, colour in zip(x, y, colours):
        for k in range(width_px):
            r = int(round(radius_px)) - k
            if r < 1:
                break
            rr, cc, val = circle_perimeter_aa(int(round(cy)), int(round(cx)), r, shape=rgb.shape[:2])
            alpha = val[:, None]
            rgb[rr, cc] = (rgb[rr, cc] * (1 - alpha) + colour * alpha).round().astype(np.uint8)
    return rgb


def draw_picks(view: View, picks: pd.DataFrame, *, box_px: float, references: pd.DataFrame | None = None,
               match_px: float | None = None, threshold: float | None = None) -> np.ndarray:
    """The view as RGB with ``picks`` (one micrograph's, micrograph px) drawn as circles of the box's diameter.

    Without ``references`` each circle is coloured by its score (:func:`score_colours`). With them, the
    picks at or above ``threshold`` (all if None) are matched one-to-one within ``match_px`` (0.2 box by
    default, as :func:`~deeppick.metrics.match_picks`): true positives blue, false positives orange, and the
    references no pick reached drawn in reddish purple.
    """
    rgb = np.repeat(view.grey[:, :, None], 3, axis=2)
    radius = box_px / 2 * view.scale
    width = max(2, round(rgb.shape[1] / 400))  # visible when the view is shown smaller, as in a gallery
    if threshold is not None and len(picks):
        picks = picks[picks["score"].fillna(1.0) >= threshold]
    x, y = view.to_view(picks["x"], picks["y"])
    if references is None:
        return draw_circles(rgb, x, y, radius, score_colours(picks["score"]), width_px=width)
    from .metrics import match_distance_px, match_picks

    ref_xy = references[["x", "y"]].to_numpy(np.float64)
    match = match_picks(picks[["x", "y"]].to_numpy(np.float64), picks["score"].fillna(1.0).to_numpy(), ref_xy,
                        match_distance_px(box_px) if match_px is None else match_px)
    tp = match.tp_in_input_order()
    missed = np.ones(len(ref_xy), dtype=bool)
    missed[match.ref_index[match.tp]] = False
    draw_circles(rgb, x[~tp], y[~tp], radius, FALSE_POSITIVE, width_px=width)
    draw_circles(rgb, x[tp], y[tp], radius, TRUE_POSITIVE, width_px=width)
    mx, my = view.to_view(ref_xy[missed, 0], ref_xy[missed, 1])
    return draw_circles(rgb, mx, my, radius, MISSED, width_px=width)


def show_picks(image: np.ndarray, picks: pd.DataFrame, *, box_px: float, references: pd.DataFrame | None = None,
               match_px: float | None = None, threshold: float | None = None,
               width_px: int = VIEW_WIDTH_PX) -> np.ndarray:
    """One micrograph with its picks drawn: the RGB array (rows, columns, 3) of ``deeppick show``."""
    view = micrograph_view(image, box_px=box_px, width_px=width_px)
    return draw_picks(view, picks, box_px=box_px, references=references, match_px=match_px, threshold=threshold)


def png_bytes(rgb: np.ndarray, *, colours: int | None = None) -> bytes:
    """An image array (grey or RGB uint8) as PNG bytes; with ``colours``, reduced to that many colours
    first (a micrograph's noise compresses poorly, and 64 grey levels and circle colours look the same)."""
    import io

    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    if colours is not None:
        image = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
