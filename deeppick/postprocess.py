"""From a score map to picks: cleaning, peak finding, pixel filters and the best-N cut.

DeepPicker §2.1 post-processes the network's score map in three steps, all configurable here through
:class:`PostprocessConfig` (defaults from DeepPicker §4.5 unless said otherwise):

1. **Cleaning** (:func:`clean_score_map`): connected regions of the map above 0.5 that are much larger
   than a particle (more than 4× the mean region area) are ice or carbon edges, not particles; they are
   zeroed.
2. **Peaks** (:func:`find_peaks`): one maximum per window of 0.8 box, so no two picks are closer than
   0.4 box; each peak position is refined to sub-pixel precision by a quadratic fit.
3. **Pixel filters** (:func:`extreme_pixel_mask`): candidates whose patch in the micrograph is dominated
   by extreme pixels (ice blobs, dirt, gold) are dropped; optionally (DeepEM) so are candidates whose
   patch SD lies outside a range (carbon, thick ice).

Without labels (autopick) the candidates may also be ranked by how dark a particle-sized disc around them
is as much as by the network's score (:func:`rank_with_disc`, ``disc_rank_diameter_box``): a picker that
knows only the particle's size already ranks real particles well by that, and it does not depend on how
well a general model transfers to the molecule.

Picks centred nearer the micrograph edge than ``edge_margin_box`` are dropped (:func:`edge_mask`; ours:
the default keeps boxes inside the micrograph, training on labels learns the labels' own margin with
:func:`learn_edge_margin`). Finally picks are sorted by score and :func:`top_n` keeps the best N per
micrograph.

Frames
------
Score-map functions work in **grid units** of the score map (``scores[row, col]``); converting grid
positions to micrograph pixels is the scanner's business, which knows the grid's origin and step.
:func:`extreme_pixel_mask` works in the **micrograph frame** (centres in micrograph pixels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

from .errors import ConfigError, MicrographError
from .io import PICK_COLUMNS


@dataclass(frozen=True)
class PostprocessConfig:
    """Parameters of the post-processing; stored in a model file with the other stage configs."""

    score_threshold: float = 0.5  # DeepPicker §2.1: regions of the score map above 0.5
    max_area_factor: float = 4.0  # DeepPicker §2.1: regions > 4× the mean region area are ice/carbon
    peak_window_box: float = 0.8  # DeepPicker §4.5: one peak per 0.8-box window (picks ≥ 0.4 box apart)
    extreme_sd: float = 3.0  # DeepPicker §2.1: pixels beyond 3 SD of the micrograph are extreme
    max_extreme_fraction: float = 0.2  # ours: far above noise's share, above denoised particles' (see below)
    sd_range: tuple[float, float] | None = None  # DeepEM: patch SD range, × micrograph SD; None: off
    top_n: int | None = None  # keep the best N picks per micrograph (--top); None keeps all
    # ours: drop picks whose centre lies nearer than this (× box) to the micrograph edge. 0.5: the box lies
    # inside the micrograph, as extraction needs (cryoSPARC and RELION leave out boxes that cross the edge).
    # Training on labels replaces it by the labels' own margin (learn_edge_margin): annotators often
    # leave a wider border unpicked (docs/measurements.md, *Edge margin*).
    edge_margin_box: float = 0.5
    # ours, for picking without labels: the diameter (× box) of a particle-sized disc for ranking the
    # candidates of each micrograph by the network's score and by their dark-disc depth equally
    # (:func:`rank_with_disc`); None: by the score alone (a model trained on labels knows the molecule better
    # than a dark disc does)
    disc_rank_diameter_box: float | None = None
    # ours, with the disc ranking: each candidate first moves to the darkest such disc within this radius
    # (× box) of it (:func:`centre_on_disc`; a network working at a box smaller than the particle centres it
    # loosely); None: the network's centres
    disc_centre_radius_box: float | None = None

    def __post_init__(self):
        if not 0 <= self.score_threshold <= 1:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        if not self.max_area_factor > 0:
            raise ConfigError(f"max_area_factor must be positive, got {self.max_area_factor}")
        if not self.peak_window_box > 0:
            raise ConfigError(f"peak_window_box must be positive, got {self.peak_window_box}")
        if not self.extreme_sd > 0:
            raise ConfigError(f"extreme_sd must be positive, got {self.extreme_sd}")
        if not 0 <= self.max_extreme_fraction <= 1:
            raise ConfigError(f"max_extreme_fraction must lie in [0, 1], got {self.max_extreme_fraction}")
        if self.sd_range is not None:
            _check_sd_range(self.sd_range)
            object.__setattr__(self, "sd_range", (float(self.sd_range[0]), float(self.sd_range[1])))
        if not self.edge_margin_box >= 0:
            raise ConfigError(f"edge_margin_box must be ≥ 0, got {self.edge_margin_box}")
        if self.top_n is not None and int(self.top_n) < 0:
            raise ConfigError(f"top_n must be non-negative, got {self.top_n}")
        if self.disc_rank_diameter_box is not None and not self.disc_rank_diameter_box > 0:
            raise ConfigError("disc_rank_diameter_box must be positive (or None: off), "
                              f"got {self.disc_rank_diameter_box}")
        if self.disc_centre_radius_box is not None:
            if self.disc_rank_diameter_box is None:
                raise ConfigError("disc_centre_radius_box needs disc_rank_diameter_box (the disc's width)")
            if not self.disc_centre_radius_box >= 0:
                raise ConfigError("disc_centre_radius_box must be ≥ 0 (or None: off), "
                                  f"got {self.disc_centre_radius_box}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sd_range"] = list(self.sd_range) if self.sd_range is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PostprocessConfig":
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if values.get("sd_range") is not None:
            values["sd_range"] = tuple(values["sd_range"])
        return cls(**values)

    def identity(self) -> dict:
        """The settings as model fingerprints and picks-folder records hash them: :meth:`to_dict` with
        ``min_peak_score`` 0.5, a setting that model files of format 1 carry and picking never applied
        (the candidate floor is ``PickConfig.candidate_min_score``), so a folder picked by an earlier
        version resumes; the disc ranking only where it is on, for the same reason."""
        data = {**self.to_dict(), "min_peak_score": 0.5}
        for key in ("disc_rank_diameter_box", "disc_centre_radius_box"):
            if data[key] is None:
                del data[key]
        return data


# --------------------------------------------------------------------------------------------------
# score map


def clean_score_map(scores: np.ndarray, threshold: float = 0.5, max_area_factor: float | None = 4.0) -> np.ndarray:
    """Zero the regions of the score map that are too large to be particles.

    Regions are the 8-connected components of ``scores > threshold``. A region whose area exceeds
    ``max_area_factor`` × the mean region area is set to 0 (DeepPicker §2.1: ice and carbon edges
    light up large connected areas, particles small blobs of similar size).

    Parameters
    ----------
    scores
        2-D score map (probability of a particle), grid units.
    threshold
        Score above which a cell belongs to a region (same scale as ``scores``).
    max_area_factor
        Regions larger than this many times the mean region area (in grid cells) are removed;
        None or ``inf`` disables the removal.

    Returns
    -------
    ndarray
        A copy of ``scores`` (same dtype) with the removed regions set to 0.

    Example
    -------
    >>> s = np.zeros((40, 40)); s[2:5, :36] = np.tile([0.9, 0.9, 0.9, 0, 0, 0], 6)  # six 3×3 blobs
    >>> s[25:40, 20:40] = 0.9  # one 15×20 region: over 4× the mean area of the seven
    >>> cleaned = clean_score_map(s)
    >>> bool(cleaned[30, 30] == 0), bool(cleaned[3, 1] == 0.9)
    (True, True)
    """
    scores = _check_score_map(scores)
    out = scores.copy()
    if max_area_factor is None or not np.isfinite(max_area_factor):
        return out
    if not max_area_factor > 0:
        raise ConfigError(f"max_area_factor must be positive, got {max_area_factor}")
    labels, n = ndi.label(scores > threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return out
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    too_large = np.flatnonzero(areas > max_area_factor * areas.mean()) + 1
    if too_large.size:
        out[np.isin(labels, too_large)] = 0
    return out


def find_peaks(scores: np.ndarray, window_grid: float, min_score: float = 0.5):
    """Local maxima of a score map, at most one per window, refined to sub-pixel positions.

    A cell is a candidate when it is the maximum of the square window of ``window_grid`` cells centred
    on it and its score is at least ``min_score``. Candidates are then taken in descending score and any
    candidate closer than ``window_grid / 2`` to one already taken is dropped (non-maximum suppression
    on the refined positions, so the spacing guarantee holds after refinement). Each position is refined
    by fitting a parabola through the cell and its two neighbours along each axis; the shift is clipped
    to ±0.5 cell and is 0 at the map border or where the neighbourhood is flat.

    Parameters
    ----------
    scores
        2-D score map, grid units.
    window_grid
        Peak window side in grid cells (the caller converts 0.8 box to cells); at least 1.
    min_score
        Smallest score a peak may have.

    Returns
    -------
    rows, cols : ndarray of float64
        Refined peak positions, grid units (row = y, col = x).
    values : ndarray of float64
        Score of each peak's cell (unrefined), in descending order; ties keep row-major order.

    Example
    -------
    >>> s = np.zeros((30, 30)); s[10, 10] = 0.9; s[10, 11] = 0.5; s[10, 9] = 0.5; s[20, 20] = 0.8
    >>> rows, cols, values = find_peaks(s, window_grid=5, min_score=0.5)
    >>> rows.tolist(), cols.tolist(), values.tolist()
    ([10.0, 20.0], [10.0, 20.0], [0.9, 0.8])
    """
    scores = _check_score_map(scores)
    if not window_grid >= 1:
        raise ConfigError(f"the peak window must be at least one grid cell, got {window_grid}")
    size = 2 * int(window_grid // 2) + 1  # odd, so the window is centred on its cell
    work = np.where(np.isfinite(scores), scores, -np.inf)
    local_max = ndi.maximum_filter(work, size=size, mode="constant", cval=-np.inf)
    r, c = np.nonzero((work == local_max) & (work >= min_score))
    values = work[r, c].astype(np.float64)
    order = np.argsort(-values, kind="stable")
    r, c, values = r[order], c[order], values[order]
    rows = r + _parabola_shift(work, r, c, axis=0)
    cols = c + _parabola_shift(work, r, c, axis=1)
    keep = _suppress(rows, cols, window_grid / 2)
    return rows[keep], cols[keep], values[keep]


def _parabola_shift(work: np.ndarray, r: np.ndarray, c: np.ndarray, axis: int) -> np.ndarray:
    """Vertex offset of the parabola through the cell and its two neighbours along ``axis``."""
    n = work.shape[axis]
    pos = r if axis == 0 else c
    inside = (pos > 0) & (pos < n - 1)
    shift = np.zeros(len(pos))
    if not inside.any():
        return shift
    ri, ci = r[inside], c[inside]
    dr, dc = (1, 0) if axis == 0 else (0, 1)
    before = work[ri - dr, ci - dc].astype(np.float64)
    centre = work[ri, ci].astype(np.float64)
    after = work[ri + dr, ci + dc].astype(np.float64)
    curvature = before - 2 * centre + after
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(curvature < 0, 0.5 * (before - after) / curvature, 0.0)
    s = np.where(np.isfinite(s), s, 0.0)
    shift[inside] = np.clip(s, -0.5, 0.5)
    return shift


def _suppress(rows: np.ndarray, cols: np.ndarray, min_dist: float) -> np.ndarray:
    """Greedy non-maximum suppression over positions already in descending score order."""
    n = len(rows)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    tree = cKDTree(np.column_stack([rows, cols]))
    suppressed = np.zeros(n, dtype=bool)
    for i in range(n):
        if suppressed[i]:
            continue
        keep[i] = True
        for j in tree.query_ball_point((rows[i], cols[i]), r=min_dist):
            if j != i and np.hypot(rows[j] - rows[i], cols[j] - cols[i]) < min_dist:
                suppressed[j] = True
    return keep


def _check_score_map(scores) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"a score map must be 2-D, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    return scores


# --------------------------------------------------------------------------------------------------
# pixel filters (micrograph frame)


def extreme_pixel_mask(micrograph: np.ndarray, x_px, y_px, box_px: float, *, sd_limit: float = 3.0,
                       sd_range: tuple[float, float] | None = None,
                       max_extreme_fraction: float = 0.2) -> np.ndarray:
    """Which candidates to keep: False for those whose patch is dominated by extreme pixels.

    DeepPicker §2.1 drops candidates whose patch holds pixels beyond 3 SD of the micrograph. Taken
    literally this drops every particle: a box of 100² Gaussian pixels has about 27 such pixels by
    chance. So a patch is *extreme* when more than ``max_extreme_fraction`` of its pixels lie beyond
    ``sd_limit`` robust SDs (1.4826 × MAD) of the micrograph's median. Gaussian noise puts 0.27 % of its
    pixels beyond 3 SD. Particles add little on raw micrographs, but on denoised ones their dark protein
    density adds some (docs/measurements.md, *Extreme pixels*). Hence the default of 20 %: a black ice
    blob, a carbon edge, a gold bead or dirt covering a fifth of the box is dropped; a smaller speck, or
    isolated hot pixels (preprocessing clips them), are not.

    With ``sd_range = (lo, hi)`` (DeepEM), a patch is also dropped when its pixel SD is outside
    ``[lo, hi]`` × the micrograph's robust SD: flat thick ice has a low SD, carbon edges a high one.

    Parameters
    ----------
    micrograph
        2-D image ``micrograph[y, x]``, micrograph frame, as read (not normalised).
    x_px, y_px
        Candidate centres, micrograph pixels.
    box_px
        Patch side, micrograph pixels; the patch is ``round(c) - box//2 ... + box`` clipped to the image.
    sd_limit
        Pixels farther than this many robust SDs from the median are extreme.
    sd_range
        ``(lo, hi)`` allowed patch SD, in units of the micrograph's robust SD; None disables the filter.
    max_extreme_fraction
        Largest fraction of extreme pixels a kept patch may hold.

    Returns
    -------
    ndarray of bool
        True for candidates to keep; a candidate whose patch lies wholly outside the image is dropped.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(size=(200, 200)).astype(np.float32); image[20:60, 20:60] = -8  # ice blob
    >>> extreme_pixel_mask(image, [40, 140], [40, 140], box_px=32).tolist()
    [False, True]
    """
    image = np.asarray(micrograph)
    if image.ndim != 2:
        raise MicrographError(f"expected a 2-D micrograph, got shape {image.shape}")
    if not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}")
    if not sd_limit > 0:
        raise ConfigError(f"sd_limit must be positive, got {sd_limit}")
    if sd_range is not None:
        _check_sd_range(sd_range)
    x = np.asarray(x_px, dtype=np.float64).reshape(-1)
    y = np.asarray(y_px, dtype=np.float64).reshape(-1)
    if len(x) != len(y):
        raise ValueError("x_px and y_px must have the same length")
    keep = np.ones(len(x), dtype=bool)
    if len(x) == 0:
        return keep
    median, sd = _robust_stats(image)
    extreme = np.abs(image - median) > sd_limit * sd
    box = max(1, int(round(box_px)))
    half = box // 2
    rows, cols = image.shape
    for i, (cx, cy) in enumerate(zip(np.rint(x).astype(np.int64), np.rint(y).astype(np.int64))):
        r0, r1 = max(cy - half, 0), min(cy - half + box, rows)
        c0, c1 = max(cx - half, 0), min(cx - half + box, cols)
        if r1 <= r0 or c1 <= c0:
            keep[i] = False
            continue
        if extreme[r0:r1, c0:c1].mean() > max_extreme_fraction:
            keep[i] = False
        elif sd_range is not None:
            patch_sd = float(image[r0:r1, c0:c1].std()) / sd
            keep[i] = sd_range[0] <= patch_sd <= sd_range[1]
    return keep


def _robust_stats(image: np.ndarray) -> tuple[float, float]:
    """Median and robust SD of an image, from at most ~1 M pixels on a regular sub-grid."""
    step = max(1, int(np.sqrt(image.size / 1_000_000)))
    sample = image[::step, ::step].astype(np.float64).ravel()
    median = float(np.median(sample))
    sd = 1.4826 * float(np.median(np.abs(sample - median)))
    if not sd > 0:
        sd = float(sample.std())
    if not sd > 0:
        raise MicrographError("the micrograph is constant (no contrast); it cannot hold particles")
    return median, sd


def _check_sd_range(sd_range) -> None:
    try:
        lo, hi = (float(v) for v in sd_range)
    except (TypeError, ValueError):
        raise ConfigError(f"sd_range must be two numbers (lo, hi), got {sd_range!r}") from None
    if not 0 <= lo < hi:
        raise ConfigError(f"sd_range must satisfy 0 <= lo < hi, got ({lo}, {hi})")


# --------------------------------------------------------------------------------------------------
# dark discs

# the dark-disc baseline's disc (benchmarks/blob_baseline.py; its radius looked at on cryoppp-10059's train
# split only, docs/measurements.md): radius diameter/3 against a Gaussian background of σ one diameter
DISC_RADIUS_DIAMETER = 1 / 3
BACKGROUND_SIGMA_DIAMETER = 1.0
DISC_BINNED_PX = 16  # micrographs binned so the disc's diameter spans about this many px (bin_for_disc)
DISC_GATHER = 1 << 20  # disc_depth_at gathers at most this many pixels at a time


def disc_depth(image: np.ndarray, diameter_px: float) -> np.ndarray:
    """How dark the disc of radius ``diameter/3`` around each pixel is against its surroundings (a Gaussian
    of σ = one diameter), in SD of the micrograph: large on a particle, about 0 on flat ice."""
    from scipy.signal import fftconvolve

    sd = image.std()
    if not sd > 0:  # no contrast: nothing is darker than anything else
        return np.zeros(image.shape)
    z = (image - image.mean()) / sd
    radius = DISC_RADIUS_DIAMETER * diameter_px
    half = int(radius)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    disc = (np.hypot(xx, yy) <= radius).astype(np.float64)
    local = fftconvolve(z, disc / disc.sum(), mode="same")
    return ndi.gaussian_filter(z, BACKGROUND_SIGMA_DIAMETER * diameter_px) - local


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` × ``factor`` blocks (the rows and columns left over dropped)."""
    if factor == 1:
        return image
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    return image[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def bin_for_disc(image: np.ndarray, diameter_px: float) -> tuple[np.ndarray, int]:
    """The micrograph binned so a disc ``diameter_px`` wide spans about ``DISC_BINNED_PX`` px, and the
    factor: a disc's depth looks at particle-sized discs, not at detail, and costs less so."""
    factor = max(1, int(diameter_px // DISC_BINNED_PX))
    return _bin(image, factor), factor


def disc_depth_at(image: np.ndarray, x_px, y_px, diameter_px: float) -> np.ndarray:
    """:func:`disc_depth` at the points ``(x, y)`` only, up to its scale (which ranks the same): the disc's
    mean from the pixels themselves (in blocks of points, so memory stays small), the Gaussian background from
    the image binned so its σ spans about 4 px (smooth at that scale). For a few thousand points on a large
    micrograph this costs a fraction of the whole map's convolutions."""
    x, y = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
    radius = DISC_RADIUS_DIAMETER * diameter_px
    half = int(radius)
    dy, dx = np.nonzero(np.hypot(*np.mgrid[-half:half + 1, -half:half + 1]) <= radius)
    local = np.empty(len(x))
    block = max(1, DISC_GATHER // len(dy))
    for start in range(0, len(x), block):
        rows = np.clip(np.round(y[start:start + block]).astype(int)[:, None] + dy - half, 0, image.shape[0] - 1)
        cols = np.clip(np.round(x[start:start + block]).astype(int)[:, None] + dx - half, 0, image.shape[1] - 1)
        local[start:start + block] = image[rows, cols].mean(axis=1, dtype=np.float64)
    sigma = BACKGROUND_SIGMA_DIAMETER * diameter_px
    factor = max(1, int(sigma // 4))
    coarse = ndi.gaussian_filter(_bin(image, factor).astype(np.float64), sigma / factor)
    background = ndi.map_coordinates(coarse, [(y + 0.5) / factor - 0.5, (x + 0.5) / factor - 0.5], order=1,
                                     mode="nearest")
    return background - local


def rank_with_disc(image: np.ndarray, x_px, y_px, scores, diameter_px: float) -> np.ndarray:
    """One micrograph's candidate scores dealt out again in the order of the sum of two ranks: the network's
    score and the dark-disc depth at the candidate (:func:`disc_depth_at`, a particle ``diameter_px`` wide;
    ties keep the score's order).

    The scores themselves stay those of this micrograph's candidates, so as many pass any threshold as
    before and micrographs compare as they did; only which candidates hold the higher scores changes.
    The depth is taken on the micrograph binned by :func:`bin_for_disc`.

    >>> image = np.zeros((128, 128)); yy, xx = np.mgrid[:128, :128]
    >>> image[np.hypot(xx - 90, yy - 64) < 8] = -5.0  # a dark disc at (90, 64)
    >>> image[np.hypot(xx - 40, yy - 20) < 8] = 5.0  # a bright one at (40, 20); (20, 64) is flat ice
    >>> rank_with_disc(image, [20.0, 90.0, 40.0], [64.0, 64.0, 20.0], [0.9, 0.7, 0.8], 16).tolist()
    [0.9, 0.8, 0.7]
    """
    from scipy.stats import rankdata

    x, y = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        return scores.copy()
    binned, factor = bin_for_disc(np.asarray(image, dtype=np.float32), diameter_px)
    depth = disc_depth_at(binned, (x + 0.5) / factor - 0.5, (y + 0.5) / factor - 0.5, diameter_px / factor)
    combined = rankdata(scores) + rankdata(depth)
    order = np.lexsort((-scores, -combined))  # best first: the rank sum, then the score
    dealt = np.empty_like(scores)
    dealt[order] = np.sort(scores)[::-1]
    return dealt


def centre_on_disc(image: np.ndarray, x_px, y_px, diameter_px: float, radius_px: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each point moved to the darkest disc ``diameter_px`` wide (:func:`disc_depth_at`) within ``radius_px``
    of it, on the micrograph binned by :func:`bin_for_disc`: in whole binned pixels from the point itself, so
    a point already at the darkest place (or with a radius under one binned pixel) stays exactly where it is.

    >>> yy, xx = np.mgrid[:128, :128]
    >>> image = -5 * np.exp(-((xx - 64) ** 2 + (yy - 60) ** 2) / 32)  # a dark blob at (64, 60)
    >>> x, y = centre_on_disc(image, [61.0, 64.0], [57.0, 60.0], 16, 5)
    >>> x.tolist(), y.tolist()  # the first point moves onto the blob's centre, the second is there already
    ([64.0, 64.0], [60.0, 60.0])
    """
    x, y = np.asarray(x_px, dtype=np.float64).copy(), np.asarray(y_px, dtype=np.float64).copy()
    binned, factor = bin_for_disc(np.asarray(image, dtype=np.float32), diameter_px)
    radius = radius_px / factor
    half = int(radius)
    if len(x) == 0 or half < 1:
        return x, y
    dy, dx = np.nonzero(np.hypot(*np.mgrid[-half:half + 1, -half:half + 1]) <= radius)
    dy, dx = dy - half, dx - half
    bx, by = (x + 0.5) / factor - 0.5, (y + 0.5) / factor - 0.5
    depth = disc_depth_at(binned, (bx[:, None] + dx).ravel(), (by[:, None] + dy).ravel(), diameter_px / factor)
    depth = depth.reshape(len(x), len(dx))
    stay = np.flatnonzero((dx == 0) & (dy == 0))[0]
    best = np.where(depth[:, stay] >= depth.max(axis=1), stay, depth.argmax(axis=1))
    return x + dx[best] * factor, y + dy[best] * factor


def apart(x_px, y_px, scores, min_distance_px: float) -> np.ndarray:
    """True for the points to keep so that none lies nearer than ``min_distance_px`` to a better-scored one
    kept (greedy, best score first; ties keep the earlier point)."""
    x, y = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = np.zeros(len(x), dtype=bool)
    keep[order] = _suppress(y[order], x[order], min_distance_px)
    return keep


# --------------------------------------------------------------------------------------------------
# picks tables


def edge_mask(shape: tuple[int, int], x_px, y_px, margin_px: float) -> np.ndarray:
    """True for centres at least ``margin_px`` from every edge of a micrograph of ``shape`` (rows, cols)."""
    x, y = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
    rows, cols = shape
    return (x >= margin_px) & (y >= margin_px) & (x <= cols - 1 - margin_px) & (y <= rows - 1 - margin_px)


# Labels nearer the edge than the 1st percentile of their edge distances are the annotator's exceptions;
# the learned margin sits a little inside it so picks centred a few px off a label are not cut.
EDGE_MARGIN_PERCENTILE = 1.0
EDGE_MARGIN_SLACK_BOX = 0.05


def learn_edge_margin(edge_distances_box) -> float | None:
    """The edge margin (× box) labelled particles keep: their 1st-percentile distance to the micrograph
    edge less 0.05 box, at least 0; None without labels.

    ``edge_distances_box`` are the labelled centres' distances to the nearest micrograph edge, in boxes.
    """
    distances = np.asarray(edge_distances_box, dtype=np.float64).ravel()
    if distances.size == 0:
        return None
    return max(0.0, float(np.percentile(distances, EDGE_MARGIN_PERCENTILE)) - EDGE_MARGIN_SLACK_BOX)


def sort_picks(picks: pd.DataFrame) -> pd.DataFrame:
    """Picks grouped by micrograph (in order of first appearance), best score first; NaN scores last."""
    if not len(picks):
        return picks.reset_index(drop=True)
    first = {name: i for i, name in enumerate(dict.fromkeys(picks["micrograph"]))}
    key = pd.DataFrame({"m": picks["micrograph"].map(first).to_numpy(),
                        "s": -picks["score"].to_numpy(dtype=np.float64)})
    order = key.sort_values(["m", "s"], kind="mergesort", na_position="last").index.to_numpy()
    return picks.iloc[order][PICK_COLUMNS].reset_index(drop=True)


def top_n(picks: pd.DataFrame, n: int | None, per_micrograph: bool = True) -> pd.DataFrame:
    """The ``n`` best-scored picks of each micrograph (or of the whole table), sorted as :func:`sort_picks`.

    Parameters
    ----------
    picks
        Picks table (``micrograph, x, y, score``).
    n
        Number of picks to keep; None keeps all.
    per_micrograph
        Keep ``n`` per micrograph (``--top``); False keeps the ``n`` best of the whole table.

    Returns
    -------
    DataFrame
        A new picks table; ties at the cut keep the earlier rows.
    """
    if n is not None and int(n) < 0:
        raise ConfigError(f"--top must be non-negative, got {n}")
    ordered = sort_picks(picks)
    if n is None:
        return ordered
    n = int(n)
    if per_micrograph:
        return ordered[ordered.groupby("micrograph", sort=False).cumcount() < n].reset_index(drop=True)
    order = np.argsort(-ordered["score"].fillna(-np.inf).to_numpy(), kind="stable")[:n]
    return sort_picks(ordered.iloc[np.sort(order)])
