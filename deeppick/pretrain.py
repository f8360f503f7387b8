"""Cross-molecule pretraining: a general model that picks molecules it has never seen.

DeepPicker's main idea: a network trained on the particles of *other* molecules picks a new molecule
without any human label (:mod:`~deeppick.autopick` then refines it on its own best picks).

:func:`pretrain` builds a **general model**: a balanced mix of labelled patches from several dataset
folders (real or simulated), each molecule giving about the same number of particles, every patch in the
64-px model frame of its own dataset's box; the F2 threshold is chosen on the pooled ranked lists of
all sources' held-out micrographs, each picked at its own box (:func:`pooled_threshold`).

:func:`pretrain_general` makes one from labelled real packs plus the simulated molecule zoo, as a
:class:`GeneralRecipe` says; :func:`shipped_model_path` / :func:`load_general_model` give the general model
shipped in ``deeppick/pretrained/`` (rebuilt by ``scripts/make_general_model.py`` with it).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, DatasetError, ModelFileError
from .io import concat_picks, micrograph_stem
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
PRETRAIN_TRAINING = TrainConfig(epochs=30, patience=6, min_patience_steps=0)


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
    # ours: each source's particles are cut at these boxes (× its diameter), its quota shared equally, so the
    # network sees particles at every apparent size in the 64-px frame that a user's box can give them (a
    # user's box is rarely the diameter exactly); (1.0,): DeepPicker's one box per molecule
    box_factors: tuple[float, ...] = (0.8, 1.0, 1.2, 1.4, 1.6)
    # ours: the share of a source's background patches centred on its contaminants (ice, carbon edges,
    # filaments, aggregates, broken particles) where it marks them (simulated datasets' junk/), so junk is
    # taught as background rather than met by chance; the rest are DeepPicker's random background
    junk_share: float = 0.3
    # ours: background patches from particle-free micrographs (``pretrain``'s ``background`` datasets), as a
    # share of all background patches (crYOLO's general model learns from particle-free data sets)
    empty_share: float = 0.2

    def __post_init__(self):
        if self.total_positives < 1:
            raise ConfigError(f"total_positives must be ≥ 1, got {self.total_positives}")
        if not self.negative_ratio >= 0:
            raise ConfigError(f"negative_ratio must be ≥ 0, got {self.negative_ratio}")
        object.__setattr__(self, "box_factors", tuple(float(f) for f in self.box_factors))
        if not self.box_factors or min(self.box_factors) <= 0:
            raise ConfigError(f"box factors must be positive, got {self.box_factors}")
        if not (0 <= self.junk_share <= 1 and 0 <= self.empty_share < 1):
            raise ConfigError(f"junk_share must lie in [0, 1] and empty_share in [0, 1), got {self.junk_share} and "
                              f"{self.empty_share}")

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
                     background: Sequence = (), progress: bool = False) -> PatchSet:
    """The balanced cross-molecule patch set: about ``total_positives / len(sources)`` particles each.

    Each source is a dataset folder (or loaded :class:`~deeppick.datasets.Dataset`); its ``train``
    micrographs (those :func:`~deeppick.tuning.split_for_threshold` leaves for training) are cropped at
    ``factor × diameter`` for each of ``config.box_factors``, the source's quota shared equally among them,
    so every molecule fills the 64-px model box alike and at every apparent size a box can give it. A quota
    is spread evenly over the micrographs, then cut at random; a source with fewer particles gives all it
    has. Background: as many patches as particles (``negative_ratio``), ≥ 0.6 box and ≥ 0.6 diameter from
    every particle, ``junk_share`` of them centred on the source's contaminants where it marks them; and
    with ``background`` datasets (particle-free micrographs) ``empty_share`` of all background from those.

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
    sets, described = [], []
    for ds in datasets:
        train, _ = _source_split(ds, config)
        parts = []
        for factor in config.box_factors:
            share = int(math.ceil(quota / len(config.box_factors)))
            parts.append(_source_patches(ds, train, factor, share, config, preprocess, rng, progress))
        if sum(p.n_positive for p in parts) == 0:
            raise DatasetError(f"{ds.root}: no labelled particles in the train split; check its coords/ folder")
        sets += parts
        described.append(_describe_source(ds, parts, config))
    n_background = sum(p.n_negative for p in sets)
    empties = [_load(b) for b in background]
    if empties and config.empty_share > 0:
        boxes = sorted({float(src["box_px"]) for p in sets for src in p.metadata["sources"]})
        wanted = int(round(config.empty_share / (1 - config.empty_share) * n_background))
        for ds in empties:
            sets.append(_empty_patches(ds, int(math.ceil(wanted / len(empties))), boxes, config, preprocess, rng))
            described.append({"dataset": ds.name, "root": str(ds.root), "particle_free": True,
                              "n_negative": sets[-1].n_negative})
    mixed = concat_patch_sets(sets)
    mixed.metadata["pretrain"] = {"config": config.to_dict(), "quota_per_source": quota, "sources": described}
    return mixed


def _source_patches(ds, train, factor: float, quota: int, config: PretrainConfig, preprocess, rng,
                    progress: bool) -> PatchSet:
    """One source's particles and background at one box, ``factor × diameter``, cut to ``quota`` particles."""
    box = float(round(factor * ds.default_box_px()))
    per_mic = int(math.ceil(quota / max(len(train), 1)))
    n_junk = 0
    junk = None
    if config.junk_share > 0 and ds.junk is not None and len(ds.junk):
        junk = ds.junk[ds.junk["micrograph"].isin([p.stem for p in train])]
        n_junk = min(len(junk), int(round(config.junk_share * config.negative_ratio * quota)))
        junk = junk.iloc[np.sort(rng.choice(len(junk), n_junk, replace=False))] if n_junk else None
    random_ratio = config.negative_ratio * (1 - n_junk / max(config.negative_ratio * quota, 1))
    patch_config = PatchConfig(negative_ratio=random_ratio,
                               min_negative_distance_box=config.min_negative_distance_box * max(1.0, 1 / factor),
                               max_positives_per_micrograph=per_mic,
                               off_centre_ratio=0.0)  # DeepPicker's patches: the general model's recipe
    ps = extract_patches(train, ds.picks, box, config=patch_config, preprocess=preprocess, negatives=junk, seed=rng,
                         dataset=ds.name, progress=progress)
    return _cut_to_quota(ps, quota, config.negative_ratio, rng)


def _empty_patches(ds, n: int, boxes: list[float], config: PretrainConfig, preprocess, rng) -> PatchSet:
    """``n`` background patches of particle-free micrographs, spread over ``boxes`` and the micrographs, on
    their contaminants (``junk_share`` of them, where marked) and at random."""
    from .patches import sample_negative_centres
    from .io import make_picks, read_micrograph

    paths = ds.paths()
    sets = []
    per = int(math.ceil(n / max(len(paths) * len(boxes), 1)))
    for path in paths:
        shape = read_micrograph(path).shape
        for box in boxes:
            centres = sample_negative_centres(shape, np.zeros((0, 2)), per, min_distance_px=0.0, rng=rng,
                                              edge_margin_px=box / 2)
            negatives = make_picks(path.stem, centres[:, 0], centres[:, 1])
            if ds.junk is not None and config.junk_share > 0:
                junk = ds.junk[ds.junk["micrograph"] == path.stem]
                k = min(len(junk), int(round(config.junk_share * per)))
                if k:
                    negatives = concat_picks([negatives.iloc[k:], junk.iloc[rng.choice(len(junk), k, replace=False)]])
            sets.append(extract_patches([path], make_picks(path.stem, [], []), box,
                                        config=PatchConfig(negative_ratio=0.0, off_centre_ratio=0.0),
                                        preprocess=preprocess, negatives=negatives, seed=rng, dataset=ds.name))
    ps = concat_patch_sets(sets)
    keep = np.sort(rng.choice(len(ps), min(n, len(ps)), replace=False)) if len(ps) > n else np.arange(len(ps))
    return ps.subset(keep)


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


def _describe_source(ds, parts: list[PatchSet], config: PretrainConfig) -> dict:
    train, valid = _source_split(ds, config)
    junk = sum(src.get("n_explicit_negative", 0) for ps in parts for src in ps.metadata["sources"])
    return {"dataset": ds.name, "root": str(ds.root), "box_px": float(ds.default_box_px()),
            "boxes_px": sorted({float(src["box_px"]) for ps in parts for src in ps.metadata["sources"]}),
            "diameter_px": ds.diameter_px, "n_positive": sum(ps.n_positive for ps in parts),
            "n_negative": sum(ps.n_negative for ps in parts), "n_junk": int(junk),
            "train": [micrograph_stem(p) for p in train], "threshold": [micrograph_stem(p) for p in valid],
            "molecule": ds.meta.get("molecule"), "simulated": ds.meta.get("source") == "deeppick simulate"}


def with_box(model: PickerModel, box_px: float) -> PickerModel:
    """The same network at another box size (shares the weights): the network works in the model frame."""
    if box_px is None or not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}; give --box-px")
    return replace(model, box_px=float(box_px), info=copy.deepcopy(model.info))


def pooled_ranking(model: PickerModel, sources: Sequence, *, config: PretrainConfig = PretrainConfig(),
                   pick_config: PickConfig = PickConfig()) -> tuple[tuple, list[dict]]:
    """The picks of the held-out micrographs of every source, each picked at its own box, as one ranked list.

    Returns
    -------
    ranked, per_source
        ``ranked`` is ``(scores, tp, n_refs)``, scores descending (what
        :func:`~deeppick.threshold.choose_threshold` takes); ``per_source`` lists each source's name,
        micrographs, AP and reference count.
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
    return (s[order], t[order], n_refs), per_source


def pooled_threshold(model: PickerModel, sources: Sequence, *, config: PretrainConfig = PretrainConfig(),
                     pick_config: PickConfig = PickConfig()) -> tuple[float, float, list[dict]]:
    """F-beta threshold over the held-out micrographs of every source (:func:`pooled_ranking`).

    Returns
    -------
    threshold, fbeta, per_source
        ``per_source`` lists each source's name, micrographs, AP and reference count.
    """
    ranked, per_source = pooled_ranking(model, sources, config=config, pick_config=pick_config)
    threshold, fbeta = choose_threshold(ranked, config.beta)
    return float(threshold), float(fbeta), per_source


def pretrain(sources: Sequence, *, config: PretrainConfig = PretrainConfig(),
             train_config: TrainConfig = PRETRAIN_TRAINING, pick_config: PickConfig = PickConfig(),
             progress: bool = False, checkpoint: str | os.PathLike | None = None,
             preprocess=None, background: Sequence = ()) -> PickerModel:
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
    background
        Dataset folders of particle-free micrographs: background patches (``config.empty_share``).

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
    patches = pretrain_patches(datasets, config=config, preprocess=preprocess, background=background,
                               progress=progress)
    boxes = [s["box_px"] for s in patches.metadata["pretrain"]["sources"] if "box_px" in s]
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


@dataclass(frozen=True)
class GeneralRecipe:
    """How a general model is made from labelled real packs plus the simulated molecule zoo
    (:func:`pretrain_general`): the shipped one (``scripts/make_general_model.py``) and the leave-one-out
    benchmark's. None: the library's default (:class:`PretrainConfig`, :data:`PRETRAIN_TRAINING`, the
    ``ZOO_*`` constants of :mod:`~deeppick.simulate`)."""

    positives: int = 10_000  # particles in the mix (DeepPicker: 10,000)
    arch: str = "deeppicker"  # the network (model.ARCHITECTURES)
    source_heads: bool = False  # HydraPicker's head per source while training (TrainConfig.source_heads)
    epochs: int | None = None  # most epochs
    max_train: int | None = None  # train micrographs per source [all]
    max_valid: int = 1  # threshold micrographs per source
    zoo: bool = True  # the simulated molecules join the real packs
    zoo_micrographs: int | None = None  # per simulated molecule [enough for each molecule's quota]
    zoo_density: float | None = None  # area fraction the zoo's particles cover
    procedural: int = 0  # procedural molecules added to the zoo (simulate.procedural_zoo)
    zoo_ice_gradient: float | None = None  # the zoo's uneven ice (SimConfig.ice_gradient)
    zoo_detector_blur_px: float | None = None  # the zoo's detector blur (SimConfig.detector_blur_px)
    zoo_defocus_spread_um: float | None = None  # the zoo's per-particle defocus (SimConfig.defocus_spread_um)
    box_factors: tuple[float, ...] | None = None  # pretraining boxes × each source's diameter
    junk_share: float | None = None
    empty_share: float | None = None  # background from particle-free simulated micrographs
    rotations: bool = True  # the threshold's scans average the four rotations
    highpass: float = 0.0  # background subtraction σ, model px (0: off)
    seed: int = 0  # the procedural molecules' shapes, pretraining and the threshold
    # the zoo's and the particle-free micrographs' draws (positions, views, noise): recipe comparisons vary it
    # as well as ``seed``, since one zoo draw moves leave one out's figures as much as most recipe changes
    zoo_seed: int = 0

    def pretrain_config(self) -> PretrainConfig:
        config = PretrainConfig(total_positives=self.positives, max_train_micrographs=self.max_train,
                                max_valid_micrographs=self.max_valid, seed=self.seed)
        return replace(config, **{k: v for k, v in (("box_factors", self.box_factors or None),
                                                    ("junk_share", self.junk_share),
                                                    ("empty_share", self.empty_share)) if v is not None})

    def pick_config(self) -> PickConfig:
        """How the threshold's held-out micrographs (and leave one out's test micrographs) are scanned."""
        from .scan import ScanConfig

        return PickConfig() if self.rotations else PickConfig(scan=ScanConfig(rotations=False))

    def train_config(self) -> TrainConfig:
        return replace(PRETRAIN_TRAINING, seed=self.seed, arch=self.arch, source_heads=self.source_heads,
                       **({} if self.epochs is None else {"epochs": self.epochs}))

    def resolved(self) -> dict:
        """Every setting that decides the model, the library's defaults filled in (JSON-ready): recipes with
        the same make the same model, whatever the defaults were when each was written."""
        config, looks = self.pretrain_config(), self.zoo_settings()
        settings = {f.name: getattr(self, f.name) for f in fields(GeneralRecipe)}
        settings.update(epochs=self.train_config().epochs, box_factors=config.box_factors,
                        junk_share=config.junk_share, empty_share=config.empty_share, zoo_density=looks["density"],
                        zoo_ice_gradient=looks["ice_gradient"], zoo_detector_blur_px=looks["detector_blur_px"],
                        zoo_defocus_spread_um=looks["defocus_spread_um"])
        return json.loads(json.dumps(settings))

    def zoo_settings(self) -> dict:
        """:func:`~deeppick.simulate.simulate_zoo`'s arguments: molecules, diameters and looks."""
        from . import simulate

        diameters = {**simulate.ZOO_DIAMETERS_PX, **simulate.procedural_zoo(self.procedural, seed=self.seed)}

        def chosen(value, default):
            return default if value is None else value

        return {"molecules": list(diameters), "diameters_px": diameters,
                "density": chosen(self.zoo_density, simulate.ZOO_DENSITY),
                "ice_gradient": chosen(self.zoo_ice_gradient, simulate.ZOO_ICE_GRADIENT),
                "detector_blur_px": chosen(self.zoo_detector_blur_px, simulate.ZOO_DETECTOR_BLUR_PX),
                "defocus_spread_um": chosen(self.zoo_defocus_spread_um, simulate.ZOO_DEFOCUS_SPREAD_UM)}


def pretrain_general(real: Sequence, work: str | os.PathLike, recipe: GeneralRecipe = GeneralRecipe(), *,
                     progress: bool = False) -> tuple[PickerModel, list[Path]]:
    """A general model from the labelled real dataset folders ``real`` plus the simulated zoo (simulated
    into ``work``, reused when simulated before with the same settings) and, with an ``empty_share``,
    particle-free simulated micrographs. Returns the model and the zoo's dataset folders."""
    from .preprocess import PreprocessConfig
    from .simulate import simulate_empty_zoo, simulate_zoo, simulate_zoo_for_quota

    work = Path(work)
    zoo_settings = recipe.zoo_settings()
    if not recipe.zoo:
        zoo = []
    elif recipe.zoo_micrographs:
        zoo = simulate_zoo(work / "zoo", n_micrographs=recipe.zoo_micrographs, seed=recipe.zoo_seed, **zoo_settings)
    else:
        quota = positives_per_source(recipe.positives, len(real) + len(zoo_settings["molecules"]))
        zoo = simulate_zoo_for_quota(work, quota, seed=recipe.zoo_seed, **zoo_settings)
    config = recipe.pretrain_config()
    background = ([simulate_empty_zoo(work / "empty", n_micrographs=8, seed=recipe.zoo_seed)]
                  if config.empty_share else [])
    model = pretrain([*real, *zoo], config=config, train_config=recipe.train_config(), pick_config=recipe.pick_config(),
                     preprocess=PreprocessConfig(highpass_sigma_model_px=recipe.highpass), background=background,
                     progress=progress)
    return model, zoo


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
