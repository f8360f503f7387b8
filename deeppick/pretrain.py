"""Cross-molecule pretraining and fully automated picking (self-training).

DeepPicker's main idea: a network trained on the particles of *other* molecules picks a new molecule
without any human label, and its own best picks then teach it the new molecule.

:func:`pretrain` builds a **general model**: a balanced mix of labelled patches from several dataset
folders (real or simulated), each molecule giving about the same number of particles, every patch in the
64-px model frame of its own dataset's box; the F2 threshold is chosen on the pooled ranked lists of
all sources' held-out micrographs, each picked with its own box.

:func:`autopick` picks a folder of micrographs of a new molecule at the user's box with a general model,
takes its top picks as particles and background at least 0.6 box from *every* candidate, fine-tunes,
and picks again. It never reads coordinates of the target. Its particles are only picks above the
threshold: sub-threshold candidates added to make up a count taught a model to pick empty ice (docs/measurements.md,
*Fully automated picking*). With almost none above the threshold (fewer than ``min_top`` particles to
train on) the general model's picks are written instead. ``AutopickConfig.top`` still forces a count.

**The threshold without labels.** With no labels of the target there is nothing to optimise F2 on, so
the fine-tuned model keeps the general model's threshold: the F2 optimum over the held-out micrographs
of all pretraining molecules, i.e. a threshold already chosen to transfer across molecules
(``info["threshold"]["rule"]`` says so). ``PickConfig.threshold`` still overrides it.

:func:`shipped_model_path` / :func:`load_general_model` give the general model shipped in
``deeppick/pretrained/`` (reproduced by ``scripts/make_general_model.py``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError, DatasetError, DeepPickError, ModelFileError
from .io import FORMAT_SUFFIX, concat_picks, empty_picks, list_micrographs, micrograph_stem, read_micrograph
from .metrics import BETA
from .model import PickerModel, load_model, save_model
from .patches import PatchConfig, PatchSet, concat_patch_sets, extract_patches, sample_negative_centres
from .pipeline import (BatchResult, PickConfig, candidates_config, effective_threshold, model_fingerprint,
                       pick_micrograph, pick_micrographs, pick_settings, postprocess_config)
from .threshold import choose_threshold
from .train import TrainConfig, train_model

__all__ = ["PretrainConfig", "AutopickConfig", "AutopickResult", "pretrain", "pretrain_patches",
           "pooled_threshold", "with_box", "autopick", "select_self_training", "too_few_to_self_train",
           "general_pass_target", "shipped_model_path",
           "load_general_model", "positives_per_source", "simulate_zoo", "simulate_zoo_for_quota",
           "ZOO_DIAMETERS_PX", "NO_LABEL_THRESHOLD_RULE", "PRETRAIN_TRAINING"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
SHIPPED_MODEL = "general.pt"
NO_LABEL_THRESHOLD_RULE = ("inherited from the general model: F2-optimal on the pooled held-out micrographs "
                           "of the pretraining molecules; no labels of the target are used")

# Pretraining and self-training keep the training length they were measured with (30 epochs, patience 6);
# TrainConfig's longer default (100, 10) was measured for semi-automated training only (docs/measurements.md).
PRETRAIN_TRAINING = TrainConfig(epochs=30, patience=6)

# Diameters (px) of the simulated molecule zoo: spread over the real packs' 36–108 px (ours).
ZOO_DIAMETERS_PX = {"klh-like": 104.0, "ring": 44.0, "apoferritin-like": 60.0, "bell": 76.0,
                    "elongated": 92.0, "globular": 36.0}
# Crowding of the zoo: the fraction of each micrograph covered by the particles' diameter discs (ours).
# The real packs' train labels cover 0.19 (ribosome80s-10028), 0.36 (betagal-10017, 0.21–0.45) and
# 0.54 (cryoppp-10059); a zoo at 0.15, sparser than all of them, gave worse models on the crowded packs
# (leave one out, full recipe, AP general → self-trained at 0.15 / 0.35: ribosome
# 0.741 → 0.751 / 0.726 → 0.765, betagal 0.595 → 0.759 / 0.723 → 0.789, cryoppp 0.205 → 0.208 /
# 0.291 → 0.254; docs/measurements.md). 0.35 is the middle of that range and what the simulator can place for the
# largest molecule (klh-like, 104 px) in 1024² px.
ZOO_DENSITY = 0.35
ZOO_SNR = 0.1  # Baxter et al.'s typical range is 0.05–0.3


# --------------------------------------------------------------------------------------------------
# pretraining


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
    from .pipeline import split_for_threshold

    train, valid = split_for_threshold(dataset)
    if config.max_train_micrographs is not None:
        train = train[:config.max_train_micrographs]
    if config.max_valid_micrographs is not None:
        valid = valid[:config.max_valid_micrographs]
    return train, valid


def pretrain_patches(sources: Sequence, config: PretrainConfig = PretrainConfig(), preprocess=None,
                     progress: bool = False) -> PatchSet:
    """The balanced cross-molecule patch set: about ``total_positives / len(sources)`` particles each.

    Each source is a dataset folder (or loaded :class:`~deeppick.datasets.Dataset`); its ``train``
    micrographs (those :func:`~deeppick.pipeline.split_for_threshold` leaves for training) are cropped
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
                                   off_centre_ratio=0.0)  # the shipped model's recipe (not tried with them)
        ps = extract_patches(train, ds.picks, ds.default_box_px(), patch_config, preprocess, seed=rng,
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


def pooled_threshold(model: PickerModel, sources: Sequence, config: PretrainConfig = PretrainConfig(),
                     pick_config: PickConfig = PickConfig()) -> tuple[float, float, list[dict]]:
    """F-beta threshold over the held-out micrographs of every source, each picked at its own box.

    The ranked lists ``(scores, tp, n_refs)`` of all sources are pooled and passed to
    :func:`~deeppick.threshold.choose_threshold`.

    Returns
    -------
    threshold, fbeta, per_source
        ``per_source`` lists each source's name, micrographs, AP and reference count.
    """
    from .pipeline import evaluate_model

    scores, tps, n_refs, per_source = [], [], 0, []
    for src in sources:
        ds = _load(src)
        _, valid = _source_split(ds, config)
        if not valid:
            continue
        ev, _ = evaluate_model(with_box(model, ds.default_box_px()), valid, ds.picks,
                               replace(pick_config, threshold=None), beta=config.beta)
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


def pretrain(sources: Sequence, config: PretrainConfig = PretrainConfig(),
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
    >>> model = pretrain(["sim/ring", "sim/bell"], PretrainConfig(total_positives=2000))  # doctest: +SKIP
    """
    datasets = [_load(s) for s in sources]
    patches = pretrain_patches(datasets, config, preprocess=preprocess, progress=progress)
    boxes = [s["box_px"] for s in patches.metadata["pretrain"]["sources"]]
    model = train_model(patches, train_config, box_px=float(np.median(boxes)), progress=progress,
                        checkpoint=checkpoint)
    threshold, fbeta, per_source = pooled_threshold(model, datasets, config, pick_config)
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


# --------------------------------------------------------------------------------------------------
# fully automated picking


@dataclass(frozen=True)
class AutopickConfig:
    """How self-training turns a general model into a model of the target molecule."""

    iterations: int = 1  # fine-tune / re-pick rounds (DeepPicker: one round of self-training)
    # particles to train on, the best N candidates whatever their score; None: top_fraction of the picks
    # above the threshold, at most max_top
    top: int | None = None
    # DeepPicker §2.3: the top 10,000 automatic picks train the new model. Ours: the general model's pass
    # stops once its picks above the threshold give that many (micrographs in a seeded random order), so a
    # large dataset is not picked twice in full; the fine-tuned model then picks every micrograph.
    max_top: int = 10_000
    # ours: half of the above-threshold picks, so small datasets train on their most confident particles
    top_fraction: float = 0.5
    # ours: fewer pseudo-labels than this (without ``top``) and self-training is skipped, the general
    # model's picks kept. 6 or 7 above-threshold picks still fine-tune well (docs/measurements.md); fewer are untested.
    min_top: int = 5
    negative_ratio: float = 1.0  # as many background patches as particles (DeepPicker §4.3)
    min_negative_distance_box: float = 0.6  # background ≥ 0.6 box from every candidate (DeepPicker §4.3)
    # ours: off-centre views per pseudo-labelled particle, with the soft target of PatchConfig.off_centre_ratio
    # (falling with the distance to the nearest top pick); 0: DeepPicker's patches
    off_centre_ratio: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.iterations < 0:
            raise ConfigError(f"--iterations must be ≥ 0, got {self.iterations}")
        if self.top is not None and self.top < 1:
            raise ConfigError(f"--top must be ≥ 1, got {self.top}")
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must lie in (0, 1], got {self.top_fraction}")
        if not self.off_centre_ratio >= 0:
            raise ConfigError(f"--off-centre must be ≥ 0, got {self.off_centre_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


AUTOPICK_MODEL = "autopick_model.pt"  # the fine-tuned model, written beside the picks


@dataclass
class AutopickResult:
    """What :func:`autopick` did: the fine-tuned model, the candidates of every round, the batch result."""

    model: PickerModel
    # round 0 = general model, every candidate of the micrographs it picked (all of them unless the top
    # picks were complete sooner, see AutopickConfig.max_top); a resumed run has only the final round's
    candidates: list[pd.DataFrame] = field(default_factory=list)
    batch: BatchResult = field(default_factory=BatchResult)  # written, skipped (resumed) and failed micrographs
    n_top: list[int] = field(default_factory=list)  # pseudo-labelled particles per round
    resumed: bool = False  # the fine-tuned model of an interrupted run was reused
    # why self-training was skipped (too few picks above the threshold), else None; ``model`` is then the
    # general model at the target's box
    skipped: str | None = None


def select_self_training(candidates: pd.DataFrame, threshold: float, config: AutopickConfig = AutopickConfig()
                         ) -> pd.DataFrame:
    """The top picks that become positive labels, best score first over all micrographs: the best
    ``config.top`` candidates, else ``top_fraction`` of the picks at or above ``threshold`` (at most
    ``max_top``; never a candidate below it). :func:`autopick` skips self-training when these are fewer
    than ``min_top`` (see :func:`too_few_to_self_train`)."""
    ranked = candidates.sort_values("score", ascending=False, kind="mergesort")
    if config.top is not None:
        n = config.top
    else:
        n_above = int((ranked["score"] >= threshold).sum())
        n = min(config.max_top, int(round(config.top_fraction * n_above)))
    return ranked.head(n).reset_index(drop=True)


def too_few_to_self_train(top: pd.DataFrame, candidates: pd.DataFrame, threshold: float,
                          config: AutopickConfig = AutopickConfig()) -> str | None:
    """Why ``top`` (from :func:`select_self_training`) cannot fine-tune a model, or None if it can.

    Without ``config.top``, fewer than ``min_top`` pseudo-labels skip self-training. The rule once made
    up a minimum of 50 with sub-threshold candidates instead: on one 2048² px micrograph of KLH (box
    272 px) the shipped model's 13 picks above its threshold were all on particles, and the model
    fine-tuned on those plus the 9 other candidates picked 6, three of them on empty ice. A forced
    ``config.top`` is the user's choice and is kept.
    """
    if config.top is not None or len(top) >= config.min_top:
        return None
    n_above = int((candidates["score"] >= threshold).sum())
    return (f"only {n_above} pick(s) above the threshold {threshold:.3g}, too few to self-train on (at least "
            f"{math.ceil(config.min_top / config.top_fraction)} are needed)")


def _pick_all(model: PickerModel, paths: list[Path], config: PickConfig, shapes: dict,
              failed: list[tuple[str, str]], order: Sequence[int] | None = None,
              enough: tuple[float, int] | None = None) -> pd.DataFrame:
    """Every candidate of ``paths``, one micrograph in memory at a time. Records each image's shape in
    ``shapes``; a micrograph that cannot be used goes to ``failed`` and the batch goes on.

    ``order`` (indices into ``paths``) is the order to pick in; ``enough = (threshold, n)`` stops once
    ``n`` candidates score at or above ``threshold``. Tables come back in the order of ``paths`` either way.
    """
    keep_all = candidates_config(model, config)
    tables = {}
    n_above = 0
    for i in (range(len(paths)) if order is None else order):
        if enough is not None and n_above >= enough[1]:
            break
        path = paths[i]
        try:
            image = read_micrograph(path)
            tables[i] = pick_micrograph(model, image, micrograph_stem(path), keep_all, path=path)
        except DeepPickError as exc:
            failed.append((str(path), str(exc)))
            continue
        shapes[micrograph_stem(path)] = image.shape
        if enough is not None:
            n_above += int((tables[i]["score"] >= enough[0]).sum())
    return concat_picks([tables[i] for i in sorted(tables)]) if tables else empty_picks()


def _pick_rest(model: PickerModel, paths: list[Path], targets: list[Path], candidates: pd.DataFrame,
               config: PickConfig, shapes: dict, failed: list[tuple[str, str]]) -> pd.DataFrame:
    """``candidates`` completed with those of the ``targets`` not picked yet (no entry in ``shapes``), in
    the order of ``paths``, as :func:`_pick_all` returns them. Their failures go after the general pass's
    in ``failed``, as the last round's do."""
    rest = [p for p in targets if micrograph_stem(p) not in shapes]
    if not rest:
        return candidates
    merged = concat_picks([candidates, _pick_all(model, rest, config, shapes, failed)])
    position = {micrograph_stem(p): i for i, p in enumerate(paths)}
    order = np.argsort(merged["micrograph"].map(position).to_numpy(), kind="stable")
    return merged.iloc[order].reset_index(drop=True)


def general_pass_target(config: AutopickConfig = AutopickConfig()) -> int:
    """Picks above the threshold after which the general model's pass may stop: enough for
    :func:`select_self_training` to take all it will take (``top`` or ``max_top`` particles)."""
    return math.ceil((config.top if config.top is not None else config.max_top) / config.top_fraction)


def _self_training_patches(paths: dict, shapes: dict, candidates: pd.DataFrame, top: pd.DataFrame, box_px: float,
                           model: PickerModel, config: AutopickConfig, rng: np.random.Generator,
                           edge_margin_px: float = 0.0) -> PatchSet:
    """Top picks as particles; background ≥ 0.6 box from every candidate, drawn only where candidates can
    be (``edge_margin_px`` from the edge): the edge band holds no candidates because pick leaves it out,
    not because it is empty, and crowded micrographs would otherwise draw nearly all background there.
    ``paths`` maps stem → micrograph file (read one at a time), ``shapes`` stem → image shape."""
    negatives = {}
    for stem in paths:
        all_xy = candidates.loc[candidates["micrograph"] == stem, ["x", "y"]].to_numpy(np.float64)
        n_pos = int((top["micrograph"] == stem).sum())
        negatives[stem] = sample_negative_centres(shapes[stem], all_xy, int(round(config.negative_ratio * n_pos)),
                                                  config.min_negative_distance_box * box_px, rng,
                                                  edge_margin_px=edge_margin_px)
    # DeepPicker's patches unless off-centre views are asked for (their targets fall with the distance to
    # the nearest top pick)
    patch_config = PatchConfig(negative_ratio=0.0, min_negative_distance_box=config.min_negative_distance_box,
                               off_centre_ratio=config.off_centre_ratio)
    return extract_patches(paths, top, box_px, patch_config, model.preprocess, negatives=negatives, seed=rng)


def _autopick_record(model: PickerModel, stems: list[str], box_px: float, config: AutopickConfig,
                     pick_config: PickConfig) -> dict:
    """What makes a fine-tuned model reusable by a rerun: the same general model (its weights, not only its
    name), micrographs, box, self-training rules, and the scan and peak settings its candidates came from
    (the threshold and top-N only decide what is written, so they may change)."""
    return {"general_model": model.info.get("name"), "general_fingerprint": model_fingerprint(model),
            "requested": list(stems), "box_px": float(box_px), "config": config.to_dict(),
            "candidates": pick_settings(model, candidates_config(model, pick_config))}


def _resumable_model(path: Path, record: dict, device) -> PickerModel | None:
    """The fine-tuned model an interrupted run left at ``path``, if it was made the way this run would."""
    if not path.is_file():
        return None
    try:
        model = load_model(path, device=device)
    except DeepPickError:
        return None  # damaged or from another version: fine-tune again
    done = model.info.get("autopick", {})
    same = all(done.get(key) == value for key, value in record.items())
    return model if same and done.get("round") == record["config"]["iterations"] else None


def autopick(model: PickerModel, micrographs, box_px: float, out_dir: str | os.PathLike | None = None,
             config: AutopickConfig = AutopickConfig(), train_config: TrainConfig = PRETRAIN_TRAINING,
             pick_config: PickConfig = PickConfig(), fmt: str = "star", progress: bool = False,
             resume: bool = False) -> AutopickResult:
    """Pick a new molecule with no labels: general model → top picks → fine-tune → pick again.

    Micrographs are read one at a time (a folder of any size fits in memory); one that cannot be used is
    listed in ``result.batch.failed`` and the others go on.

    Parameters
    ----------
    model
        A general model (:func:`pretrain`, or :func:`load_general_model`).
    micrographs
        A folder, a file or a list of them (:func:`~deeppick.io.list_micrographs`). Only the images are
        read: coordinate files beside them are never opened.
    box_px
        The target's box side in micrograph px; replaces the model's (the network works in the model frame).
    out_dir
        If given: the fine-tuned model as ``OUT/autopick_model.pt`` as soon as it is trained, then one
        coordinate file per micrograph as soon as it is picked (both atomic, like ``pick``).
    config
        Rounds, how many top picks become particles, background distance.
    train_config
        Fine-tuning settings (``init`` is the current model).
    pick_config
        Scan and post-processing; ``threshold`` overrides the inherited one (see the module docstring).
    resume
        With ``out_dir``: reuse the fine-tuned model an interrupted run of the same general model, box,
        micrographs, ``config`` and candidate settings left there, and skip micrographs whose output it
        already wrote with the same pick settings (others, e.g. at another threshold, are picked again).
        Otherwise (or without such a model) everything is fine-tuned and written again.

    Returns
    -------
    AutopickResult
        ``candidates[0]`` are the general model's candidates, ``candidates[-1]`` the final model's (every
        candidate, sub-threshold ones included, for evaluation).
    """
    paths = list_micrographs(micrographs)
    stems = [micrograph_stem(p) for p in paths]
    if len(set(stems)) != len(stems):
        raise ConfigError("several micrographs share a name stem; their picks cannot be told apart")
    if out_dir is not None and fmt not in FORMAT_SUFFIX:
        raise ConfigError(f"unknown output format '{fmt}'; use one of {', '.join(FORMAT_SUFFIX)}")
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    current = with_box(model, box_px)
    device = next(current.net.parameters()).device
    general_threshold = effective_threshold(current, replace(pick_config, threshold=None))
    result = AutopickResult(model=current)
    record = _autopick_record(model, stems, box_px, config, pick_config)
    out_dir = Path(out_dir) if out_dir is not None else None
    reused = _resumable_model(out_dir / AUTOPICK_MODEL, record, device) if resume and out_dir is not None else None
    # usable: the micrographs the general model picked; targets: every micrograph not known to be unusable
    if reused is not None:
        current, result.resumed, usable, targets = reused, True, paths, paths
        result.skipped = current.info["autopick"].get("skipped")
    else:
        usable = targets = paths
        if out_dir is not None and config.iterations == 0:  # the model the picks come from, for a rerun
            current.info["autopick"] = {**record, "round": 0}
            save_model(current, out_dir / AUTOPICK_MODEL)
        else:
            shapes = {}
            # a seeded random order (its own stream: the self-training draws stay as they were), so an
            # early stop samples the whole session, not its first grid squares
            order = np.random.default_rng([config.seed, 1]).permutation(len(paths))
            candidates = _pick_all(current, paths, pick_config, shapes, result.batch.failed, order,
                                   (general_threshold, general_pass_target(config)))
            result.candidates.append(candidates)
            position = {str(p): i for i, p in enumerate(paths)}
            result.batch.failed.sort(key=lambda failure: position.get(failure[0], len(paths)))
            usable = [p for p in paths if micrograph_stem(p) in shapes]
            if not usable:
                raise ConfigError(f"none of the {len(paths)} micrograph(s) could be used; the first: "
                                  f"{result.batch.failed[0][1]}")
            failed = {path for path, _ in result.batch.failed}
            targets = [p for p in paths if str(p) not in failed]  # picked or not yet opened
        for round_ in range(config.iterations):
            if len(candidates) == 0:
                raise ConfigError(f"the general model found no particle candidates in {len(usable)} "
                                  "micrograph(s); check --box-px (the particle diameter in px) and the micrographs")
            top = select_self_training(candidates, general_threshold, config)
            too_few = too_few_to_self_train(top, candidates, general_threshold, config)
            if too_few is not None:  # later rounds would start from the same picks: stop here
                kept = "the general model's" if round_ == 0 else f"round {round_}'s"
                result.skipped = (f"{too_few}; kept {kept} picks. Give more micrographs, check --box-px, or "
                                  "force a count with --top N")
                if round_ == 0 and out_dir is not None:  # recorded as done, so a rerun resumes
                    current.info["autopick"] = {**record, "round": config.iterations, "n_top": 0,
                                                "skipped": result.skipped}
                    save_model(current, out_dir / AUTOPICK_MODEL)
                if round_ > 0 and out_dir is None:  # the kept round picked only what the general pass opened
                    result.candidates[-1] = _pick_rest(current, paths, targets, candidates, pick_config, shapes,
                                                       result.batch.failed)
                break
            result.n_top.append(len(top))
            margin_px = postprocess_config(current, pick_config).edge_margin_box * box_px
            patches = _self_training_patches({micrograph_stem(p): p for p in usable}, shapes, candidates, top,
                                             box_px, current, config, rng, margin_px)
            tuned = train_model(patches, replace(train_config, seed=train_config.seed + round_), box_px=box_px,
                                init=current, progress=progress)
            tuned.net.to(device)  # pick where the general model picked (CUDA)
            tuned.threshold = general_threshold
            tuned.info["name"] = f"self-trained from {model.info.get('name', 'a general model')}"
            tuned.info["autopick"] = {**record, "round": round_ + 1, "n_top": len(top),
                                      "top_min_score": float(top["score"].min()),
                                      "micrographs": [micrograph_stem(p) for p in usable]}
            tuned.info["threshold"] = {"value": general_threshold, "rule": NO_LABEL_THRESHOLD_RULE,
                                       "general": model.info.get("threshold")}
            current = tuned
            if out_dir is not None:  # saved now: an interruption while picking keeps the fine-tuning
                save_model(current, out_dir / AUTOPICK_MODEL)
            # The last round's picking is left to the writing below, one file as soon as it is picked.
            # Without an output folder the last round picks every micrograph, those the general model's
            # pass left unopened too; earlier rounds only need pseudo-labels, from the micrographs it picked.
            if round_ < config.iterations - 1:
                candidates = _pick_all(current, usable, pick_config, shapes, [])
            elif out_dir is None:
                candidates = _pick_all(current, targets, pick_config, shapes, result.batch.failed)
            else:
                candidates = None
            if candidates is not None:
                result.candidates.append(candidates)
    result.model = current
    if out_dir is not None:
        # Picked and written one micrograph at a time, as pick does; outputs already there are kept
        # only if they came from this very model.
        final: list[pd.DataFrame] = []
        batch = pick_micrographs(current, targets, out_dir, fmt, pick_config, overwrite=not result.resumed,
                                 candidates=final, replace_others=True)
        # the batch's own account, after the micrographs the general model's pass could not use
        result.batch = replace(batch, failed=result.batch.failed + batch.failed)
        result.candidates.append(concat_picks(final) if final else empty_picks())
    result.batch.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------------
# the shipped general model and the simulated zoo


def shipped_model_path() -> Path:
    """Path of the general model shipped with deeppick (``deeppick/pretrained/general.pt``)."""
    return PRETRAINED_DIR / SHIPPED_MODEL


def load_general_model(path: str | os.PathLike | None = None, device="cpu") -> PickerModel:
    """Load a general model: ``path``, or the shipped one when None."""
    path = Path(path) if path is not None else shipped_model_path()
    if path == shipped_model_path() and not path.is_file():
        raise ModelFileError(f"{path}: the shipped general model is missing from this installation; "
                             "rebuild it with scripts/make_general_model.py or give --model")
    return load_model(path, device=device)


def simulate_zoo(out_dir: str | os.PathLike, molecules: Sequence[str] | None = None, n_micrographs: int = 4,
                 size_px: int = 1024, snr: float = ZOO_SNR, density: float = ZOO_DENSITY, seed: int = 0,
                 diameters_px: dict | None = None) -> list[Path]:
    """Simulated pretraining molecules at real-pack-like sizes; one dataset folder per molecule.

    A complete folder simulated before with the same settings is reused; one simulated otherwise (an
    earlier zoo density, say) is simulated again. Defaults: 4 micrographs of 1024² px per molecule
    (3 train, 1 valid), SNR :data:`ZOO_SNR`, :data:`ZOO_DENSITY` of the area covered, diameters
    :data:`ZOO_DIAMETERS_PX`.
    """
    from .simulate import SimConfig, simulate_datasets

    molecules = list(molecules or ZOO_DIAMETERS_PX)
    diameters = {m: (diameters_px or ZOO_DIAMETERS_PX).get(m, ZOO_DIAMETERS_PX.get(m)) for m in molecules}
    out_dir = Path(out_dir)
    config = SimConfig(size_px=size_px, snr=snr, density=density)
    wanted = {m: replace(config, molecule=m, diameter_px=diameters[m]) for m in molecules}
    todo = [m for m in molecules if not _simulated_with(out_dir / m, wanted[m], n_micrographs, seed)]
    if todo:
        simulate_datasets(out_dir, todo, config, n_micrographs=n_micrographs, seed=seed,
                          diameters_px={m: diameters[m] for m in todo}, split_fractions=(0.75, 0.25, 0.0),
                          overwrite=True)
    return [out_dir / m for m in molecules]


def _simulated_with(folder: Path, config, n_micrographs: int, seed: int) -> bool:
    """Whether ``folder`` holds a complete simulated dataset made with ``config``, ``n_micrographs`` and
    ``seed`` (as :func:`~deeppick.simulate.simulate_dataset` records them in ``dataset.json``)."""
    import json

    try:
        done = json.loads((folder / "dataset.json").read_text())["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    wanted = json.loads(json.dumps(config.to_dict()))  # as the file stores it (tuples as lists)
    same = all(done.get(key) == value for key, value in wanted.items())
    seeds = done.get("seed")  # [seed, the molecule's stream] (simulate_datasets)
    return same and done.get("n_micrographs") == n_micrographs and isinstance(seeds, list) and seeds[:1] == [int(seed)]


ZOO_PILOT_MICROGRAPHS = 8


def simulate_zoo_for_quota(work: str | os.PathLike, quota: int, **kwargs) -> list[Path]:
    """The simulated zoo with enough micrographs that every molecule can give ``quota`` train particles.

    Large molecules fit few particles in a micrograph (klh-like: ~19 in 1024², ~13 of them usable), so a
    fixed count leaves them far under quota. A pilot of 8 micrographs per molecule (``work/zoo``)
    measures particles per micrograph; a molecule short of its quota is simulated again with enough
    micrographs (``work/zoo-N``; 75 % of them train, × 1.6 for particles too near the edge to use).
    ``kwargs`` go to :func:`simulate_zoo`.
    """
    import json

    work = Path(work)
    zoo = []
    molecules = kwargs.pop("molecules", None)
    for folder in simulate_zoo(work / "zoo", molecules, n_micrographs=ZOO_PILOT_MICROGRAPHS, **kwargs):
        entries = json.loads((folder / "dataset.json").read_text())["micrographs"]
        per_micrograph = sum(e["particles"] for e in entries) / len(entries)
        needed = math.ceil(quota / max(per_micrograph * 0.75, 1e-9))
        n = max(ZOO_PILOT_MICROGRAPHS, int(1.6 * needed))
        if n == ZOO_PILOT_MICROGRAPHS:
            zoo.append(folder)
        else:
            zoo += simulate_zoo(work / f"zoo-{n}", molecules=[folder.name], n_micrographs=n, **kwargs)
    return zoo
