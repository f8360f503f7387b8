"""Cross-molecule pretraining: a general model that picks molecules it has never seen.

DeepPicker's main idea: a network trained on the particles of *other* molecules picks a new molecule
without any human label (:mod:`~deeppick.autopick` then refines it on its own best picks).

:func:`pretrain` builds a **general model**: a balanced mix of labelled patches from several dataset
folders (real or simulated), each molecule giving about the same number of particles, every patch in the
64-px model frame of its own dataset's box; the F2 threshold is chosen on the pooled ranked lists of
all sources' held-out micrographs, each picked at its own box (:func:`pooled_threshold`).

:func:`shipped_model_path` / :func:`load_general_model` give the general model shipped in
``deeppick/pretrained/`` (rebuilt by ``scripts/make_general_model.py``).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, DatasetError, ModelFileError
from .io import micrograph_stem
from .metrics import BETA
from .model import PickerModel, load_model
from .patches import PatchConfig, PatchSet, concat_patch_sets, extract_patches
from .pipeline import PickConfig, evaluate_model
from .threshold import choose_threshold
from .train import TrainConfig, train_model
from .tuning import split_for_threshold

__all__ = ["PretrainConfig", "PRETRAIN_TRAINING", "pretrain", "pretrain_patches", "pooled_threshold", "with_box",
           "positives_per_source", "shipped_model_path", "load_general_model"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
SHIPPED_MODEL = "general.pt"

# Pretraining and self-training train for at most 30 epochs with patience 6, the length the general model
# and self-training are measured with (docs/measurements.md, *Training length*); TrainConfig's defaults are
# semi-automated training's.
PRETRAIN_TRAINING = TrainConfig(epochs=30, patience=6)


@dataclass(frozen=True)
class PretrainConfig:
    """How the cross-molecule training mix is built."""

    total_positives: int = 10_000  # DeepPicker §4.3: 10,000 particles in the cross-molecule training set
    negative_ratio: float = 1.0  # as many background patches as particles (DeepPicker §4.3)
    min_negative_distance_box: float = 0.6  # background ≥ 0.6 box from every particle (DeepPicker §4.3)
    max_train_micrographs: int | None = None  # per source; None uses the whole train split (bounds big packs)
    max_valid_micrographs: int | None = 2  # per source, for the threshold (ours: picking is the slow step)
    beta: float = BETA  # F2: DeepEM
    seed: int = 0

    def __post_init__(self):
        if self.total_positives < 1:
            raise ConfigError(f"total_positives must be ≥ 1, got {self.total_positives}")
        if not self.negative_ratio >= 0:
            raise ConfigError(f"negative_ratio must be ≥ 0, got {self.negative_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


def _load(source):
    from .datasets import Dataset, load_dataset

    return source if isinstance(source, Dataset) else load_dataset(source)


def _source_split(dataset, config: PretrainConfig) -> tuple[list[Path], list[Path]]:
    train, valid = split_for_threshold(dataset)
    if config.max_train_micrographs is not None:
        train = train[:config.max_train_micrographs]
    if config.max_valid_micrographs is not None:
        valid = valid[:config.max_valid_micrographs]
    return train, valid


def pretrain_patches(sources: Sequence, *, config: PretrainConfig = PretrainConfig(), preprocess=None,
                     progress: bool = False) -> PatchSet:
    """The balanced cross-molecule patch set: about ``total_positives / len(sources)`` particles each.

    Each source is a dataset folder (or loaded :class:`~deeppick.datasets.Dataset`); its ``train``
    micrographs (those :func:`~deeppick.tuning.split_for_threshold` leaves for training) are cropped
    at its own :meth:`~deeppick.datasets.Dataset.default_box_px`, so every molecule fills the 64-px model
    box alike. A source's quota is spread evenly over its micrographs, then cut to the quota at random;
    a source with fewer particles than its quota gives all it has. Negatives follow the 0.6-box rule.

    Returns
    -------
    PatchSet
        Mixed boxes (``box_px`` None); each source entry names its ``dataset`` and ``box_px``.
    """
    from .preprocess import PreprocessConfig

    preprocess = preprocess or PreprocessConfig()
    if not sources:
        raise ConfigError("no pretraining datasets: give at least one --dataset")
    datasets = [_load(s) for s in sources]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise DatasetError(f"pretraining datasets share a name ({', '.join(names)}); give each molecule once")
    quota = positives_per_source(config.total_positives, len(datasets))
    rng = np.random.default_rng(config.seed)
    sets = []
    for ds in datasets:
        train, _ = _source_split(ds, config)
        per_mic = int(math.ceil(quota / max(len(train), 1)))
        patch_config = PatchConfig(negative_ratio=config.negative_ratio,
                                   min_negative_distance_box=config.min_negative_distance_box,
                                   max_positives_per_micrograph=per_mic,
                                   off_centre_ratio=0.0)  # DeepPicker's patches: the general model's recipe
        ps = extract_patches(train, ds.picks, ds.default_box_px(), config=patch_config, preprocess=preprocess, seed=rng,
                             dataset=ds.name, progress=progress)
        if ps.n_positive == 0:
            raise DatasetError(f"{ds.root}: no labelled particles in the train split; check its coords/ folder")
        ps = _cut_to_quota(ps, quota, config.negative_ratio, rng)
        sets.append(ps)
    mixed = concat_patch_sets(sets)
    mixed.metadata["pretrain"] = {"config": config.to_dict(), "quota_per_source": quota,
                                  "sources": [_describe_source(d, s, config) for d, s in zip(datasets, sets)]}
    return mixed


def positives_per_source(total_positives: int, n_sources: int) -> int:
    """Each molecule's share of the mix: ``total_positives`` split equally, rounded up."""
    return int(math.ceil(total_positives / max(n_sources, 1)))


def _cut_to_quota(ps: PatchSet, quota: int, negative_ratio: float, rng: np.random.Generator) -> PatchSet:
    pos = np.flatnonzero(ps.labels == 1)
    neg = np.flatnonzero(ps.labels == 0)
    if len(pos) > quota:
        pos = np.sort(rng.choice(pos, quota, replace=False))
    n_neg = int(round(negative_ratio * len(pos)))
    if len(neg) > n_neg:
        neg = np.sort(rng.choice(neg, n_neg, replace=False))
    return ps.subset(np.sort(np.concatenate([pos, neg])))


def _describe_source(ds, ps: PatchSet, config: PretrainConfig) -> dict:
    train, valid = _source_split(ds, config)
    return {"dataset": ds.name, "root": str(ds.root), "box_px": float(ds.default_box_px()),
            "diameter_px": ds.diameter_px, "n_positive": ps.n_positive, "n_negative": ps.n_negative,
            "train": [micrograph_stem(p) for p in train], "threshold": [micrograph_stem(p) for p in valid],
            "molecule": ds.meta.get("molecule"), "simulated": ds.meta.get("source") == "deeppick simulate"}


def with_box(model: PickerModel, box_px: float) -> PickerModel:
    """The same network at another box size (shares the weights): the network works in the model frame."""
    if box_px is None or not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}; give --box-px")
    return replace(model, box_px=float(box_px), info=copy.deepcopy(model.info))


def pooled_threshold(model: PickerModel, sources: Sequence, *, config: PretrainConfig = PretrainConfig(),
                     pick_config: PickConfig = PickConfig()) -> tuple[float, float, list[dict]]:
    """F-beta threshold over the held-out micrographs of every source, each picked at its own box.

    The ranked lists ``(scores, tp, n_refs)`` of all sources are pooled and passed to
    :func:`~deeppick.threshold.choose_threshold`.

    Returns
    -------
    threshold, fbeta, per_source
        ``per_source`` lists each source's name, micrographs, AP and reference count.
    """
    scores, tps, n_refs, per_source = [], [], 0, []
    for src in sources:
        ds = _load(src)
        _, valid = _source_split(ds, config)
        if not valid:
            continue
        ev, _ = evaluate_model(with_box(model, ds.default_box_px()), valid, ds.picks,
                               config=replace(pick_config, threshold=None), beta=config.beta)
        scores.append(ev.scores)
        tps.append(ev.tp)
        n_refs += ev.n_refs
        per_source.append({"dataset": ds.name, "micrographs": [micrograph_stem(p) for p in valid],
                           "ap": float(ev.ap), "n_references": int(ev.n_refs), "box_px": ev.box_px})
    if not per_source:
        raise ConfigError("no held-out micrographs in any pretraining dataset to choose the threshold on")
    s, t = np.concatenate(scores), np.concatenate(tps)
    order = np.argsort(-s, kind="stable")
    threshold, fbeta = choose_threshold((s[order], t[order], n_refs), config.beta)
    return float(threshold), float(fbeta), per_source


def pretrain(sources: Sequence, *, config: PretrainConfig = PretrainConfig(),
             train_config: TrainConfig = PRETRAIN_TRAINING, pick_config: PickConfig = PickConfig(),
             progress: bool = False, checkpoint: str | os.PathLike | None = None,
             preprocess=None) -> PickerModel:
    """Train a general model on a balanced mix of molecules and choose its pooled F2 threshold.

    Parameters
    ----------
    sources
        Dataset folders (or loaded datasets), one per molecule, real or simulated.
    config, train_config, pick_config
        Mix, training and picking settings (the defaults of each stage).
    checkpoint
        Per-epoch training checkpoint (see :func:`~deeppick.train.train_model`).
    preprocess
        How every source's micrographs are prepared (a :class:`~deeppick.preprocess.PreprocessConfig`;
        default: its defaults); the model keeps it, so autopick prepares the new molecule the same way.

    Returns
    -------
    PickerModel
        ``box_px`` is the median of the sources' boxes (replace it with :func:`with_box` for a new
        molecule); ``info["pretrain"]`` records the sources, their counts and the threshold's origin.

    Example
    -------
    >>> model = pretrain(["sim/ring", "sim/bell"], config=PretrainConfig(total_positives=2000))  # doctest: +SKIP
    """
    datasets = [_load(s) for s in sources]
    patches = pretrain_patches(datasets, config=config, preprocess=preprocess, progress=progress)
    boxes = [s["box_px"] for s in patches.metadata["pretrain"]["sources"]]
    model = train_model(patches, train_config, box_px=float(np.median(boxes)), progress=progress,
                        checkpoint=checkpoint)
    threshold, fbeta, per_source = pooled_threshold(model, datasets, config=config, pick_config=pick_config)
    if not np.isfinite(threshold):
        raise ConfigError("no pick on the held-out micrographs of any pretraining dataset matched a reference; "
                          "the general model has not learned (check the datasets' diameters and labels)")
    model.threshold = max(threshold, pick_config.candidate_min_score)
    model.info["name"] = "general model (" + ", ".join(d.name for d in datasets) + ")"
    model.info["pretrain"] = patches.metadata["pretrain"]
    model.info["threshold"] = {"value": model.threshold, "beta": config.beta, "fbeta": fbeta,
                               "rule": "F-beta-optimal on the pooled held-out micrographs of all sources, "
                                       "each picked at its own box", "sources": per_source}
    return model


def shipped_model_path() -> Path:
    """Path of the general model shipped with deeppick (``deeppick/pretrained/general.pt``)."""
    return PRETRAINED_DIR / SHIPPED_MODEL


def load_general_model(path: str | os.PathLike | None = None, *, device="cpu") -> PickerModel:
    """Load a general model: ``path``, or the shipped one when None."""
    path = Path(path) if path is not None else shipped_model_path()
    if path == shipped_model_path() and not path.is_file():
        raise ModelFileError(f"{path}: the shipped general model is missing from this installation; "
                             "rebuild it with scripts/make_general_model.py or give --model")
    return load_model(path, device=device)
