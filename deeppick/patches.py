"""Patches in the model frame: the one cropping convention shared by training and scanning.

A patch *centred* at integer model-frame position ``(cx, cy)`` is
``image[cy - h : cy + h, cx - h : cx + h]`` with ``h = model_px // 2``: the centre pixel sits at index
``h`` of the patch (for the 64-px box, index 32, just below and right of the geometric middle).
Pixels outside the prepared image are 0, the median of a normalised micrograph.

Training patch sets (:class:`PatchSet`, :func:`extract_patches`) are cropped with exactly these functions
from :func:`~deeppick.preprocess.prepare_micrograph` output, so training and picking see identical pixels
for the same location. A patch set is saved as an ``.npz`` with its metadata (box, preprocessing,
sources) by :func:`save_patch_set`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ._version import __version__
from .errors import ConfigError, CoordinateError, DatasetError, DeepPickError, MicrographError
from .io import atomic_path
from .preprocess import PreprocessConfig, prepare_micrograph

PATCHSET_FORMAT = "deeppick-patches"
PATCHSET_FORMAT_VERSION = 2  # 2: optional soft ``targets`` (off-centre patches); 1 is still read


class PatchSetError(DeepPickError):
    """A patch set file is missing, corrupt, of another format version, or cannot be joined."""


def pad_for_patches(image: np.ndarray, model_px: int = 64) -> np.ndarray:
    """Zero-pad ``image`` by ``model_px // 2`` on every side so any pixel can be a patch centre."""
    h = model_px // 2
    return np.pad(image, h, mode="constant", constant_values=0.0)


def crop_patches(image: np.ndarray, cx, cy, model_px: int = 64, *, padded: np.ndarray | None = None) -> np.ndarray:
    """Crop patches centred at integer model-frame positions; returns (N, model_px, model_px) float32.

    ``padded`` may pass a precomputed :func:`pad_for_patches` of ``image`` to save the copy.
    """
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


# --------------------------------------------------------------------------------------------------
# patch sets: labelled patches for training


@dataclass(frozen=True)
class PatchConfig:
    """How training patches are chosen around labelled particles."""

    negative_ratio: float = 1.0  # random negatives per positive (DeepPicker §4.3: as many as positives)
    min_negative_distance_box: float = 0.6  # random negatives lie ≥ 0.6 box from every particle (DeepPicker §4.3)
    # ours: extra "near-miss" negatives per positive, off-centre views of a particle: beside a labelled
    # particle, between near_negative_min_box and min_negative_distance_box from it and at least
    # near_negative_min_box from every particle. They teach the network where a particle's centre is;
    # 0 keeps DeepPicker's far negatives only.
    near_negative_ratio: float = 0.0
    near_negative_min_box: float = 0.3
    # ours: off-centre views with a soft target, off_centre_ratio per particle, centred uniformly within
    # off_centre_max_box of a labelled particle; the target is exp(-d² / 2s²), d the distance to the
    # nearest labelled particle and s = off_centre_sigma_box × box. They teach how fast the score falls
    # away from a centre: sharper score peaks, picks nearer the centres (held-out and test AP up on
    # ribosome80s-10028 and cryoppp-10059, docs/measurements.md). 0 turns them off (DeepPicker's patches).
    off_centre_ratio: float = 4.0
    off_centre_max_box: float = 0.5
    off_centre_sigma_box: float = 0.1
    max_positives_per_micrograph: int | None = None  # subsample crowded/large micrographs; None keeps all
    # 0.5: a positive whose box is mostly off the image shows little particle (ours)
    min_inside_fraction: float = 0.5

    def __post_init__(self):
        if not self.negative_ratio >= 0 or not self.near_negative_ratio >= 0:
            raise ConfigError(f"negative ratios must be ≥ 0, got {self.negative_ratio} and "
                              f"{self.near_negative_ratio}")
        if self.near_negative_ratio and not 0 <= self.near_negative_min_box < self.min_negative_distance_box:
            raise ConfigError(f"near-miss negatives need 0 ≤ near_negative_min_box < min_negative_distance_box, "
                              f"got {self.near_negative_min_box} and {self.min_negative_distance_box}")
        if not self.off_centre_ratio >= 0:
            raise ConfigError(f"the off-centre ratio must be ≥ 0, got {self.off_centre_ratio}")
        if self.off_centre_ratio and not (self.off_centre_max_box > 0 and self.off_centre_sigma_box > 0):
            raise ConfigError(f"off-centre patches need a positive reach and width, got {self.off_centre_max_box} "
                              f"and {self.off_centre_sigma_box} box")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PatchConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class PatchSet:
    """Labelled model-frame patches and where they came from.

    Attributes
    ----------
    patches
        (N, model_px, model_px) float32, cropped from :func:`~deeppick.preprocess.prepare_micrograph`
        output with :func:`crop_patches` (the pixels the scanner sees).
    labels
        (N,) uint8: 1 particle (centred on a labelled one), 0 background or off-centre view.
    source
        (N,) int32 index into ``metadata["sources"]`` (one entry per micrograph).
    x, y
        (N,) float32 patch centres in micrograph pixels (as labelled / as sampled).
    metadata
        JSON-able dict: ``box_px`` (common box, or None if the sources differ), ``model_px``,
        ``preprocess`` (config dict), ``patch_config``, ``sources`` (per micrograph: ``micrograph``,
        ``path``, ``box_px``, ``dataset``, counts) and ``deeppick_version``.
    targets
        None, or (N,) float32 training targets in [0, 1]: equal to ``labels`` for particle and
        background patches, soft for off-centre views (:class:`PatchConfig` ``off_centre_ratio``).
    """

    patches: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    x: np.ndarray
    y: np.ndarray
    metadata: dict = field(default_factory=dict)
    targets: np.ndarray | None = None

    def __post_init__(self):
        self.patches = np.asarray(self.patches, dtype=np.float32)
        if self.patches.ndim == 4 and self.patches.shape[1] == 1:
            self.patches = self.patches[:, 0]
        n = len(self.patches)
        if self.patches.ndim != 3 or self.patches.shape[1] != self.patches.shape[2]:
            raise ValueError(f"patches must be (N, P, P) or (N, 1, P, P), got {self.patches.shape}")
        self.labels = np.asarray(self.labels, dtype=np.uint8).reshape(-1)
        self.source = np.asarray(self.source, dtype=np.int32).reshape(-1)
        self.x = np.asarray(self.x, dtype=np.float32).reshape(-1)
        self.y = np.asarray(self.y, dtype=np.float32).reshape(-1)
        if not (len(self.labels) == len(self.source) == len(self.x) == len(self.y) == n):
            raise ValueError("patches, labels, source, x and y must have the same length")
        if self.targets is not None:
            self.targets = np.asarray(self.targets, dtype=np.float32).reshape(-1)
            if len(self.targets) != n or not ((self.targets >= 0) & (self.targets <= 1)).all():
                raise ValueError("targets must be one value in [0, 1] per patch")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def box_px(self) -> float | None:
        """Box side in micrograph px shared by every source, or None when the sources differ."""
        return self.metadata.get("box_px")

    @property
    def training_targets(self) -> np.ndarray:
        """(N,) float32 what training fits: ``targets``, else the labels."""
        return self.targets if self.targets is not None else self.labels.astype(np.float32)

    @property
    def hard(self) -> np.ndarray:
        """(N,) bool: particle and background patches (target = label); False for off-centre views.
        Patch accuracy is measured on these."""
        if self.targets is None:
            return np.ones(len(self), dtype=bool)
        return self.targets == self.labels

    @property
    def n_positive(self) -> int:
        return int(self.labels.sum())

    @property
    def n_off_centre(self) -> int:
        return len(self) - int(self.hard.sum())

    @property
    def n_negative(self) -> int:
        return len(self) - self.n_positive - self.n_off_centre

    def subset(self, index) -> "PatchSet":
        """The patches at ``index`` (sources and metadata kept as they are)."""
        index = np.asarray(index)
        return PatchSet(self.patches[index], self.labels[index], self.source[index], self.x[index],
                        self.y[index], dict(self.metadata), None if self.targets is None else self.targets[index])

    def summary(self) -> str:
        box = f"{self.box_px:g} px" if self.box_px else "mixed"
        off = f", {self.n_off_centre} off-centre" if self.n_off_centre else ""
        sources = self.metadata.get("sources", [])
        n, m = self.n_positive, len(sources)
        text = (f"{len(self)} patches ({n} particle{'' if n == 1 else 's'}, {self.n_negative} background{off}) "
                f"from {m} micrograph{'' if m == 1 else 's'}, box {box}")
        outside = sum(s.get("n_labels_off_the_image", 0) for s in sources)
        if outside:
            text += (f"; {outside} labelled particle{'' if outside == 1 else 's'} left out: outside the micrograph "
                     "or with most of the box off it")
        return text


def save_patch_set(patch_set: PatchSet, path: str | os.PathLike) -> None:
    """Write a patch set as an ``.npz`` (arrays plus a JSON metadata string), atomically."""
    meta = dict(patch_set.metadata)
    meta.setdefault("format", PATCHSET_FORMAT)
    meta["format_version"] = PATCHSET_FORMAT_VERSION
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            extra = {} if patch_set.targets is None else {"targets": patch_set.targets}
            np.savez(fh, patches=patch_set.patches, labels=patch_set.labels, source=patch_set.source,
                     x=patch_set.x, y=patch_set.y, metadata_json=np.array(json.dumps(meta, sort_keys=True)), **extra)


def load_patch_set(path: str | os.PathLike) -> PatchSet:
    """Read a patch set written by :func:`save_patch_set` (``allow_pickle=False``).

    Raises
    ------
    PatchSetError
        If the file is missing, corrupt, not a patch set or of an unsupported format version.
    """
    path = Path(path)
    if not path.is_file():
        raise PatchSetError(f"{path}: no such patch set; write one with 'deeppick extract' or check the path")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise PatchSetError(f"{path}: not a readable patch set ({str(exc)[:120]}); the file is corrupt "
                            "or not an .npz written by 'deeppick extract'") from None
    missing = {"patches", "labels", "source", "x", "y", "metadata_json"} - set(arrays)
    if missing:
        raise PatchSetError(f"{path}: not a deeppick patch set (lacks {', '.join(sorted(missing))}); "
                            "write one with 'deeppick extract'")
    try:
        meta = json.loads(str(arrays["metadata_json"]))
    except ValueError:
        raise PatchSetError(f"{path}: patch set metadata is damaged; extract the patches again") from None
    if meta.get("format") != PATCHSET_FORMAT or meta.get("format_version") not in (1, PATCHSET_FORMAT_VERSION):
        raise PatchSetError(f"{path}: patch set format {meta.get('format')!r} version {meta.get('format_version')} "
                            f"is not supported by this deeppick (version {PATCHSET_FORMAT_VERSION}); "
                            "extract the patches again")
    try:
        return PatchSet(arrays["patches"], arrays["labels"], arrays["source"], arrays["x"], arrays["y"], meta,
                        arrays.get("targets"))
    except ValueError as exc:
        raise PatchSetError(f"{path}: patch set arrays are inconsistent ({exc}); extract the patches again") from None


def _preparation(metadata: dict) -> PreprocessConfig | None:
    """A patch set's preprocessing, read as a model's is (so files of any version compare)."""
    stored = metadata.get("preprocess")
    return None if stored is None else PreprocessConfig.from_dict(stored)


def concat_patch_sets(patch_sets: Iterable[PatchSet]) -> PatchSet:
    """Join patch sets (e.g. of several datasets, each with its own box) into one.

    All must share ``model_px``; ``source`` indices are renumbered into the joined ``sources`` list.
    ``box_px`` stays per source; the joined ``metadata["box_px"]`` is the common value or None.
    ``preprocess`` must be the same for all (training would otherwise mix incompatible pixels).
    """
    patch_sets = list(patch_sets)
    if not patch_sets:
        raise ValueError("no patch sets to join")
    first = patch_sets[0].metadata
    for ps in patch_sets[1:]:
        if ps.patches.shape[1:] != patch_sets[0].patches.shape[1:]:
            raise PatchSetError(f"cannot join patch sets of {ps.patches.shape[1]} and "
                                f"{patch_sets[0].patches.shape[1]} px patches; extract them with one model_px")
        if _preparation(ps.metadata) != _preparation(first):
            raise PatchSetError("cannot join patch sets prepared with different preprocessing "
                                f"({ps.metadata.get('preprocess')} vs {first.get('preprocess')}); extract them again")
    sources, offsets = [], []
    for ps in patch_sets:
        offsets.append(len(sources))
        sources.extend(ps.metadata.get("sources", []))
    boxes = {s.get("box_px") for s in sources}
    meta = {k: v for k, v in first.items() if k not in ("sources", "box_px", "dataset")}
    meta.update(box_px=boxes.pop() if len(boxes) == 1 else None, sources=sources)
    if all(ps.metadata.get("dataset") == first.get("dataset") for ps in patch_sets) and first.get("dataset"):
        meta["dataset"] = first["dataset"]
    return PatchSet(
        np.concatenate([ps.patches for ps in patch_sets]),
        np.concatenate([ps.labels for ps in patch_sets]),
        np.concatenate([ps.source + off for ps, off in zip(patch_sets, offsets)]),
        np.concatenate([ps.x for ps in patch_sets]),
        np.concatenate([ps.y for ps in patch_sets]),
        meta,
        None if all(ps.targets is None for ps in patch_sets)
        else np.concatenate([ps.training_targets for ps in patch_sets]),
    )


def sample_negative_centres(shape: tuple[int, int], particles_xy: np.ndarray, n: int, *, min_distance_px: float,
                            rng: np.random.Generator, max_tries: int = 50, edge_margin_px: float = 0.0) -> np.ndarray:
    """Draw up to ``n`` random centres in an image of ``shape`` at least ``min_distance_px`` from every particle
    (and at least ``edge_margin_px`` from the image edge).

    Returns an (M, 2) array of ``(x, y)`` micrograph-pixel centres, ``M <= n`` (fewer only when the
    image is so crowded that ``max_tries`` rounds of candidates did not find ``n``).
    """
    from scipy.spatial import cKDTree

    rows, cols = shape
    particles_xy = np.asarray(particles_xy, dtype=np.float64).reshape(-1, 2)
    tree = cKDTree(particles_xy) if len(particles_xy) else None
    mx, my = min(edge_margin_px, (cols - 1) / 2), min(edge_margin_px, (rows - 1) / 2)

    def propose(batch: int) -> np.ndarray:
        cand = np.column_stack([rng.uniform(mx, cols - 1 - mx, batch), rng.uniform(my, rows - 1 - my, batch)])
        if tree is not None:
            dist, _ = tree.query(cand, k=1)
            cand = cand[dist >= min_distance_px]
        return cand

    return _draw_until(n, propose, max_tries)


def sample_off_centre(shape: tuple[int, int], anchors_xy: np.ndarray, particles_xy: np.ndarray, n: int,
                      *, max_distance_px: float, sigma_px: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Off-centre views: ``n`` centres uniform in the disk of ``max_distance_px`` around randomly chosen
    ``anchors_xy``, inside the image of ``shape``, and their soft targets ``exp(-d² / 2 sigma_px²)`` with
    d the distance to the nearest of ``particles_xy`` (in crowds, a neighbour may be nearer than the
    anchor).

    Returns ``(centres (M, 2), targets (M,))``, ``M <= n`` (fewer when too many fall off the image).
    """
    from scipy.spatial import cKDTree

    anchors_xy = np.asarray(anchors_xy, dtype=np.float64).reshape(-1, 2)
    particles_xy = np.asarray(particles_xy, dtype=np.float64).reshape(-1, 2)
    if n <= 0 or not len(anchors_xy):
        return np.zeros((0, 2)), np.zeros(0)

    def propose(batch: int) -> np.ndarray:  # uniform over the disk: radius ∝ √u
        return _beside(anchors_xy, batch, lambda k: max_distance_px * np.sqrt(rng.uniform(0.0, 1.0, k)), shape, rng)

    centres = _draw_until(n, propose, max_tries=50)
    if not len(centres):
        return centres, np.zeros(0)
    distance = cKDTree(particles_xy if len(particles_xy) else anchors_xy).query(centres, k=1)[0]
    return centres, np.exp(-0.5 * (distance / sigma_px) ** 2)


def _beside(anchors_xy: np.ndarray, batch: int, radius, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``batch`` points at ``radius(batch)`` px in a random direction from randomly chosen anchors; those
    inside the image of ``shape``."""
    anchor = anchors_xy[rng.integers(len(anchors_xy), size=batch)]
    angle = rng.uniform(0.0, 2 * np.pi, batch)
    cand = anchor + np.column_stack([np.cos(angle), np.sin(angle)]) * radius(batch)[:, None]
    rows, cols = shape
    return cand[(cand[:, 0] >= 0) & (cand[:, 0] <= cols - 1) & (cand[:, 1] >= 0) & (cand[:, 1] <= rows - 1)]


def _draw_until(n: int, propose, max_tries: int) -> np.ndarray:
    """Up to ``n`` centres from at most ``max_tries`` rounds of ``propose(batch)``, which draws ``batch``
    candidates and returns the (k, 2) accepted ones."""
    found: list[np.ndarray] = []
    n_found = 0
    for _ in range(max_tries):
        if n_found >= n:
            break
        found.append(propose(max(64, 4 * (n - n_found)))[: n - n_found])
        n_found += len(found[-1])
    return np.concatenate(found) if found else np.zeros((0, 2))


def sample_near_negative_centres(shape: tuple[int, int], particles_xy: np.ndarray, n: int, *, min_distance_px: float,
                                 max_distance_px: float, rng: np.random.Generator, max_tries: int = 50) -> np.ndarray:
    """Draw up to ``n`` centres beside particles: each lies ``min_distance_px`` to ``max_distance_px`` from a
    randomly chosen particle (uniform in distance and direction), at least ``min_distance_px`` from every
    particle, and inside the image of ``shape``.

    Returns an (M, 2) array of ``(x, y)`` centres, ``M <= n`` (fewer where particles crowd so closely that
    no such place is left, or when there are no particles).
    """
    from scipy.spatial import cKDTree

    particles_xy = np.asarray(particles_xy, dtype=np.float64).reshape(-1, 2)
    if n <= 0 or not len(particles_xy) or not max_distance_px > min_distance_px:
        return np.zeros((0, 2))
    tree = cKDTree(particles_xy)

    def propose(batch: int) -> np.ndarray:
        cand = _beside(particles_xy, batch, lambda k: rng.uniform(min_distance_px, max_distance_px, k), shape, rng)
        return cand[tree.query(cand, k=1)[0] >= min_distance_px]

    return _draw_until(n, propose, max_tries)


def extract_patches(micrographs, picks, box_px: float, *, config: PatchConfig = PatchConfig(),
                    preprocess: PreprocessConfig = PreprocessConfig(), negatives=None,
                    seed: int | np.random.Generator | None = 0, dataset: str | None = None,
                    progress: bool = False) -> PatchSet:
    """Crop labelled training patches exactly as the scanner sees the micrographs.

    Each micrograph goes through :func:`~deeppick.preprocess.prepare_micrograph` (downscale so the box is
    ``model_px``, low-pass, normalise); positives are cropped with :func:`crop_patches` at
    :func:`model_centres` of the labelled centres, random negatives at centres at least
    ``config.min_negative_distance_box × box_px`` from every labelled particle, optional near-miss
    negatives beside particles (:func:`sample_near_negative_centres`, ``config.near_negative_ratio``),
    explicit negatives (ice, carbon, bad particles) at the centres given in ``negatives``, and off-centre
    views with soft targets (:func:`sample_off_centre`, ``config.off_centre_ratio``; label 0, target in
    ``targets``).

    Parameters
    ----------
    micrographs
        A path, a 2-D array, a list of those, or a dict stem → path/array. Arrays in a list are named
        ``image0``, ``image1``, ….
    picks
        Particle centres (micrograph px): the picks table (its ``micrograph`` column names the stems),
        a dict stem → picks table or (N, 2) ``x, y`` array, or, for a single micrograph, one table/array.
    box_px
        Box side in micrograph pixels (the particle box that becomes ``preprocess.model_px``).
    negatives
        Optional explicit background centres, in any form ``picks`` accepts.
    seed
        Seed or generator for the random negatives and subsampling.
    dataset
        Name recorded with each source (for patch sets that mix datasets).

    Returns
    -------
    PatchSet

    Example
    -------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).normal(size=(256, 256))
    >>> ps = extract_patches(image, np.array([[100.0, 120.0]]), box_px=32, config=PatchConfig(off_centre_ratio=0))
    >>> ps.patches.shape, ps.labels.tolist()
    ((2, 64, 64), [1, 0])
    """
    from .io import read_micrograph

    if box_px is None or not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}; give --box-px")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    items = _named_micrographs(micrographs)
    single = len(items) == 1
    pick_xy = _centres_by_stem(picks, [s for s, _ in items], single, "picks")
    neg_xy = _centres_by_stem(negatives, [s for s, _ in items], single, "negatives") if negatives is not None else {}
    model_px = preprocess.model_px
    out = {k: [] for k in ("patches", "labels", "source", "x", "y", "targets")}
    sources = []
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc="extract", unit="micrograph")
    for index, (stem, item) in enumerate(iterator):
        path = None
        if isinstance(item, (str, os.PathLike)):
            path = str(item)
            image = read_micrograph(item)
        else:
            image = np.asarray(item)
        prepared = prepare_micrograph(image, box_px, preprocess, path=path or stem)
        rows, cols = prepared.shape_micrograph
        pos = pick_xy.get(stem, np.zeros((0, 2)))
        all_particles = pos
        pos = _inside(pos, rows, cols, box_px, config.min_inside_fraction)
        n_left_out = len(all_particles) - len(pos)
        if config.max_positives_per_micrograph is not None and len(pos) > config.max_positives_per_micrograph:
            pos = pos[np.sort(rng.choice(len(pos), config.max_positives_per_micrograph, replace=False))]
        n_neg = int(round(config.negative_ratio * len(pos)))
        rand_neg = sample_negative_centres((rows, cols), all_particles, n_neg,
                                           min_distance_px=config.min_negative_distance_box * box_px, rng=rng)
        near_neg = sample_near_negative_centres((rows, cols), all_particles,
                                                int(round(config.near_negative_ratio * len(pos))),
                                                min_distance_px=config.near_negative_min_box * box_px,
                                                max_distance_px=config.min_negative_distance_box * box_px, rng=rng)
        explicit = neg_xy.get(stem, np.zeros((0, 2)))
        explicit = explicit[(explicit[:, 0] >= 0) & (explicit[:, 0] <= cols - 1)
                            & (explicit[:, 1] >= 0) & (explicit[:, 1] <= rows - 1)]
        off, off_targets = sample_off_centre((rows, cols), pos, all_particles,
                                             int(round(config.off_centre_ratio * len(pos))),
                                             max_distance_px=config.off_centre_max_box * box_px,
                                             sigma_px=config.off_centre_sigma_box * box_px, rng=rng)
        centres = np.concatenate([pos, rand_neg, near_neg, explicit, off])
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(centres) - len(pos))])
        if len(centres):
            padded = pad_for_patches(prepared.image, model_px)
            cx, cy = model_centres(prepared, centres[:, 0], centres[:, 1])
            out["patches"].append(crop_patches(prepared.image, cx, cy, model_px, padded=padded))
            out["labels"].append(labels)
            out["targets"].append(np.concatenate([labels[:len(centres) - len(off)], off_targets]))
            out["source"].append(np.full(len(centres), index))
            out["x"].append(centres[:, 0])
            out["y"].append(centres[:, 1])
        sources.append({"micrograph": stem, "path": path, "dataset": dataset, "box_px": float(box_px),
                        "shape": [int(rows), int(cols)], "n_positive": int(len(pos)),
                        "n_random_negative": int(len(rand_neg)), "n_near_negative": int(len(near_neg)),
                        "n_explicit_negative": int(len(explicit)), "n_off_centre": int(len(off)),
                        "n_labels_off_the_image": int(n_left_out)})
    meta = {"format": PATCHSET_FORMAT, "format_version": PATCHSET_FORMAT_VERSION, "box_px": float(box_px),
            "model_px": model_px, "preprocess": preprocess.to_dict(), "patch_config": config.to_dict(),
            "sources": sources, "deeppick_version": __version__}
    if not out["patches"]:
        empty = np.zeros((0, model_px, model_px), dtype=np.float32)
        return PatchSet(empty, [], [], [], [], meta)
    targets = np.concatenate(out["targets"]) if config.off_centre_ratio else None
    return PatchSet(*(np.concatenate(out[k]) for k in ("patches", "labels", "source", "x", "y")), metadata=meta,
                    targets=targets)


def patches_from_stacks(positives: str | os.PathLike, negatives: str | os.PathLike, box_px: float, *,
                        preprocess: PreprocessConfig = PreprocessConfig()) -> PatchSet:
    """A patch set from MRC stacks of boxed particles (``positives``) and of background or junk
    (``negatives``), e.g. the particles of good and of junk 2-D classes as RELION extracted them, at any box;
    ``box_px`` is the particle's box in the stacks' pixels. Prepared by
    :func:`~deeppick.preprocess.prepare_stack`, the model frame's resampling and normalisation."""
    from .preprocess import prepare_stack

    parts, sources = [], []
    for index, (path, label) in enumerate(((positives, 1), (negatives, 0))):
        stack = _read_stack(Path(path))
        parts.append((prepare_stack(stack, box_px, preprocess, path=str(path)), label, index))
        sources.append({"micrograph": Path(path).stem, "path": str(path), "stack": True, "box_px": float(box_px),
                        "stack_box_px": int(stack.shape[-1]), "n_positive" if label else "n_explicit_negative":
                        int(len(stack))})
    patches = np.concatenate([p for p, _, _ in parts])
    labels = np.concatenate([np.full(len(p), label) for p, label, _ in parts])
    source = np.concatenate([np.full(len(p), index) for p, _, index in parts])
    meta = {"format": PATCHSET_FORMAT, "format_version": PATCHSET_FORMAT_VERSION, "box_px": float(box_px),
            "model_px": preprocess.model_px, "preprocess": preprocess.to_dict(), "patch_config": None,
            "sources": sources, "deeppick_version": __version__}
    # stacks carry no positions: each image is its own group for validation (x, y are NaN)
    nan = np.full(len(patches), np.nan)
    return PatchSet(patches, labels, source, nan, nan, meta)


def _read_stack(path: Path) -> np.ndarray:
    import mrcfile

    if not path.is_file():
        raise PatchSetError(f"{path}: no such particle stack; check the path")
    try:
        with mrcfile.open(path, permissive=False) as mrc:
            data = np.array(mrc.data, dtype=np.float32)
    except Exception as exc:
        raise PatchSetError(f"{path}: cannot read this MRC stack ({exc}); the file is truncated or corrupt") from None
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1] != data.shape[2]:
        raise PatchSetError(f"{path}: expected a stack of square particle images, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise PatchSetError(f"{path}: the stack holds NaN or infinite pixels; extract the particles again")
    return data


def extract_dataset_patches(dataset, split: str = "train", *, box_px: float | None = None,
                            config: PatchConfig = PatchConfig(), preprocess: PreprocessConfig = PreprocessConfig(),
                            negatives=None, seed: int | np.random.Generator | None = 0,
                            max_micrographs: int | None = None, progress: bool = False) -> PatchSet:
    """Patches of one split of a dataset folder (or loaded :class:`~deeppick.datasets.Dataset`).

    ``box_px`` defaults to :meth:`Dataset.default_box_px`; ``max_micrographs`` keeps the first ones of
    the split (in ``dataset.json`` order) to bound the work on large packs.
    """
    from .datasets import Dataset, load_dataset

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    paths = ds.paths(split)
    if not paths:
        raise DatasetError(f"{ds.root}: no micrographs in the '{split}' split; choose another --split")
    if max_micrographs is not None:
        paths = paths[:max_micrographs]
    box_px = box_px or ds.default_box_px()
    ps = extract_patches(paths, ds.picks, box_px, config=config, preprocess=preprocess, negatives=negatives, seed=seed,
                         dataset=ds.name, progress=progress)
    ps.metadata["dataset"] = {"name": ds.name, "root": str(ds.root), "split": split}
    return ps


def _named_micrographs(micrographs) -> list[tuple[str, object]]:
    from .io import list_micrographs, micrograph_stem

    if isinstance(micrographs, dict):
        return [(str(k), v) for k, v in micrographs.items()]
    if isinstance(micrographs, np.ndarray) and micrographs.ndim == 2:
        return [("image0", micrographs)]
    if isinstance(micrographs, (str, os.PathLike)):
        return [(micrograph_stem(p), p) for p in list_micrographs(micrographs)]
    items = []
    for i, m in enumerate(micrographs):
        if isinstance(m, (str, os.PathLike)):
            items.append((micrograph_stem(m), m))
        else:
            items.append((f"image{i}", m))
    stems = [s for s, _ in items]
    if len(set(stems)) != len(stems):
        raise MicrographError("several micrographs share a name stem; coordinates cannot be matched to them")
    return items


def _centres_by_stem(picks, stems: list[str], single: bool, what: str) -> dict[str, np.ndarray]:
    """Normalise the accepted forms of centres to stem → (N, 2) float array."""
    if isinstance(picks, pd.DataFrame) and "micrograph" in picks:
        names = set(picks["micrograph"])
        # One micrograph whose name the table does not use (e.g. an array): the table is its picks.
        if not (single and stems[0] not in names and len(names) <= 1):
            return {str(s): g[["x", "y"]].to_numpy(np.float64) for s, g in picks.groupby("micrograph")}
    if isinstance(picks, dict):
        return {str(k): _xy(v, what) for k, v in picks.items()}
    if single:
        return {stems[0]: _xy(picks, what)}
    raise CoordinateError(f"{what}: give a picks table or a dict micrograph stem → centres for several micrographs")


def _xy(value, what: str) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        return value[["x", "y"]].to_numpy(np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise CoordinateError(f"{what}: expected (N, 2) x, y centres, got shape {arr.shape}")
    return arr[:, :2]


def _inside(xy: np.ndarray, rows: int, cols: int, box_px: float, min_fraction: float) -> np.ndarray:
    """Centres inside the image whose box has at least ``min_fraction`` of its area on the image."""
    if not len(xy):
        return xy.reshape(0, 2)
    h = box_px / 2
    wx = np.clip(np.minimum(xy[:, 0] + h, cols) - np.maximum(xy[:, 0] - h, 0), 0, None) / box_px
    wy = np.clip(np.minimum(xy[:, 1] + h, rows) - np.maximum(xy[:, 1] - h, 0), 0, None) / box_px
    keep = (xy[:, 0] >= 0) & (xy[:, 0] <= cols - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= rows - 1)
    keep &= wx * wy >= min_fraction
    return xy[keep]
