"""Fully automated picking: a general model picks a new molecule, then learns it from its own best picks.

:func:`autopick` picks a folder of micrographs of a new molecule at the user's box with a general model
(:mod:`~deeppick.pretrain`), takes its top picks as particles and background at least 0.6 box from
*every* candidate (DeepPicker §2.3), fine-tunes, and picks again. It never reads coordinates of the
target. Only picks above the threshold become particles (sub-threshold candidates teach a model to pick
empty ice, docs/measurements.md, *Fully automated picking*); with fewer than ``min_top`` of them the
general model's picks are written instead. ``AutopickConfig.top`` still forces a count.

**The threshold without labels.** With no labels of the target there is nothing to optimise F2 on, so
the fine-tuned model keeps the general model's threshold: the F2 optimum over the held-out micrographs
of all pretraining molecules, i.e. a threshold already chosen to transfer across molecules
(``info["threshold"]["rule"]`` says so). ``PickConfig.threshold`` still overrides it.

The work is a sequence of passes, each a function that returns what it produced: the general model's
pass (:func:`_pick_pass` in a seeded random order, stopping once its top picks are complete), a
self-training round (:func:`_self_train`), the fine-tuned model's passes, and the final pass that writes
one coordinate file per micrograph (:func:`~deeppick.batch.pick_micrographs`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .batch import BatchResult, model_fingerprint, pick_micrographs, pick_settings
from .errors import ConfigError, DeepPickError
from .io import (FORMAT_SUFFIX, concat_picks, empty_picks, list_micrographs, micrograph_stem, picks_away_from,
                 read_micrograph)
from .model import PickerModel, load_model, save_model
from .patches import PatchConfig, PatchSet, extract_patches, sample_negative_centres
from .pipeline import PickConfig, candidates_config, effective_threshold, pick_micrograph, postprocess_config
from .postprocess import bin_for_disc, disc_depth
from .pretrain import PRETRAIN_TRAINING, with_box
from .train import TrainConfig, train_model

__all__ = ["AutopickConfig", "AutopickResult", "BoxEstimate", "autopick", "estimate_box", "select_self_training",
           "too_few_to_self_train", "general_pass_target", "drifted", "stand_out", "disc_depth",
           "AUTOPICK_MODEL", "NO_LABEL_THRESHOLD_RULE"]

AUTOPICK_MODEL = "autopick_model.pt"  # the fine-tuned model, written beside the picks
NEW_PICK_BOX = 0.5  # a tuned model's pick is new when no pick before it lies this close (× box)
GENERAL_BOXES = ("estimate", "given")  # AutopickConfig.general_box
DISC_RANKS = ("all", "picks", "off")  # AutopickConfig.disc_rank
NO_LABEL_THRESHOLD_RULE = ("inherited from the general model: F2-optimal on the pooled held-out micrographs "
                           "of the pretraining molecules; no labels of the target are used")


@dataclass(frozen=True)
class AutopickConfig:
    """How self-training turns a general model into a model of the target molecule."""

    iterations: int = 1  # fine-tune / re-pick rounds (DeepPicker: one round of self-training)
    # particles to train on, the best N candidates whatever their score; None: top_fraction of the picks
    # above the threshold, at most max_top
    top: int | None = None
    # DeepPicker §4.3/§4.5: the top 10,000 automatic picks train the new model. Ours: the general model's
    # pass stops once its picks above the threshold give that many (micrographs in a seeded random order),
    # so a large dataset is not picked twice in full; the fine-tuned model then picks every micrograph.
    max_top: int = 10_000
    # ours: half of the above-threshold picks, so small datasets train on their most confident particles
    top_fraction: float = 0.5
    # ours: fewer pseudo-labels than this (without ``top``) and self-training is skipped, the general
    # model's picks kept (docs/measurements.md, *Few particles*)
    min_top: int = 5
    negative_ratio: float = 1.0  # as many background patches as particles (DeepPicker §4.3)
    min_negative_distance_box: float = 0.6  # background ≥ 0.6 box from every candidate (DeepPicker §4.3)
    # ours: off-centre views per pseudo-labelled particle, with the soft target of PatchConfig.off_centre_ratio
    # (falling with the distance to the nearest top pick); 0: DeepPicker's patches
    off_centre_ratio: float = 0.0
    # ours, the drift guard: a fine-tuned model that makes more than this many times the general model's
    # picks above the threshold, on the same micrographs, has learned what the general model did not find
    # (noise blobs, on micrographs without particles) and is rolled back; None: no guard
    # (docs/measurements.md, *Self-training on particle-free micrographs*)
    max_growth: float | None = 1.5
    # ours, an option: unless its picks stand out from the ice at least this much (dark discs of the box's
    # size, :func:`stand_out`; 0.4: a pick darker than 70 % of random places on average). On a crowded
    # micrograph a model that finds the particles the general model missed grows its picks too, and those are
    # dark discs; picks of noise are places like any other. Not the default: at 0.4 it keeps self-training on
    # a crowded molecule and also lets some models self-trained on particle-free micrographs grow their picks
    # past max_growth (docs/measurements.md, *The drift guard that looks at the picks*). None: the count alone
    min_stand_out: float | None = None
    guard_micrographs: int = 8  # ours: the general pass's micrographs the guard compares on (seeded sample)
    # ours: the box the general model picks at, the pseudo-labels' frame: "estimate", the box estimate_box finds
    # its picks strongest at, so the pseudo-labels do not depend on the box the user extracts with (the
    # general model falls apart at some boxes where the fine-tuned model does not, docs/measurements.md,
    # *The general model at its own box*); "given": the target's box, as DeepPicker. The fine-tuned model
    # always works at the target's box, and its background lies min_negative_distance_box × the
    # pseudo-labels' box from every candidate
    general_box: str = "estimate"
    # ours: the peak window in particle diameters (estimated from the micrographs, estimate_box), at most the
    # 0.8 box of DeepPicker and at least 0.4 box, so a box larger than the particle does not hide touching
    # neighbours; None: the window of the pick settings, in boxes
    peak_window_diameters: float | None = 0.8
    # ours: where candidates are ranked by the network's score and their dark-disc depth equally
    # (PostprocessConfig.disc_rank_diameter_box, a disc as wide as the estimated box): "picks", the picks
    # written (the kept model's pass); "all" passes, the pseudo-labels too; "off", the score alone. Without
    # labels the general model's ranking is only as good as its transfer to the molecule, and a dark disc of
    # the particle's size ranks real particles well by itself (docs/measurements.md, *Ranking with dark discs*)
    disc_rank: str = "picks"
    # ours, an option: where candidates are ranked with the disc, each first moves to the darkest disc within
    # this many estimated diameters of it (PostprocessConfig.disc_centre_radius_box). Not the default: where
    # the estimated box is well above the particle the wide disc pulls picks off their particles
    # (docs/measurements.md, *Centres on the dark disc*); None: the network's centres
    disc_centre_diameters: float | None = None
    # ours: the fine-tuned model's box, the frame it is trained and picks at, is at least this × the particle's
    # estimated diameter: a given box that crops the particle shows the network only the particle's inside,
    # where picks are the weakest and the loosest (docs/measurements.md, *A frame that holds the particle*).
    # The picks are centres, whatever the frame; None: the given box, as DeepPicker
    min_box_diameters: float | None = 1.0
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
        if self.max_growth is not None and not self.max_growth >= 1:
            raise ConfigError(f"max_growth must be ≥ 1 (or None: no guard), got {self.max_growth}")
        if self.disc_rank not in DISC_RANKS:
            raise ConfigError(f"disc_rank must be one of {', '.join(DISC_RANKS)}, got {self.disc_rank!r}")
        if self.disc_centre_diameters is not None and not self.disc_centre_diameters >= 0:
            raise ConfigError(f"disc_centre_diameters must be ≥ 0 (or None: off), got {self.disc_centre_diameters}")
        if self.general_box not in GENERAL_BOXES:
            raise ConfigError(f"general_box must be one of {', '.join(GENERAL_BOXES)}, got {self.general_box!r}")
        if self.min_box_diameters is not None and not self.min_box_diameters > 0:
            raise ConfigError(f"min_box_diameters must be > 0 (or None: the given box), got {self.min_box_diameters}")
        if self.min_stand_out is not None and not 0 < self.min_stand_out < 1:
            raise ConfigError(f"min_stand_out must lie in (0, 1) (or None: the count alone), got {self.min_stand_out}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AutopickResult:
    """What :func:`autopick` did: the fine-tuned model, the candidates of every round, the batch result."""

    model: PickerModel
    # round 0 = general model, every candidate of the micrographs it picked (all of them unless the top
    # picks were complete sooner, see AutopickConfig.max_top); the last = the kept model's, of every
    # micrograph; a resumed run has only the final round's
    candidates: list[pd.DataFrame] = field(default_factory=list)
    batch: BatchResult = field(default_factory=BatchResult)  # written, skipped (resumed) and failed micrographs
    n_top: list[int] = field(default_factory=list)  # pseudo-labelled particles per round
    resumed: bool = False  # the fine-tuned model of an interrupted run was reused
    # why self-training was skipped (too few picks above the threshold) or rolled back (the drift guard),
    # else None; ``model`` is then the general model at its own box (``general_box_px``), or the last round kept
    skipped: str | None = None
    # the target's box, the fine-tuned model's: the one given (raised to min_box_diameters × the estimated
    # diameter where it is smaller), or the estimate's
    box_px: float | None = None
    given_box_px: float | None = None  # the box the caller gave, None where it was estimated
    general_box_px: float | None = None  # the box the general model picked at (AutopickConfig.general_box)
    box_estimate: BoxEstimate | None = None  # the particle size the micrographs showed, where it was estimated
    pick_config: PickConfig | None = None  # the kept model's settings (the peak window follows the particle size)
    # per round: picks above the threshold of the model before and after fine-tuning on the guard's
    # micrographs, and their ratio (what the drift guard decides on)
    drift: list[dict] = field(default_factory=list)


@dataclass
class _Pass:
    """One model's pass over micrographs: every candidate (in the micrographs' order), the shape of each
    micrograph picked, and those that could not be used."""

    candidates: pd.DataFrame
    shapes: dict[str, tuple[int, int]]
    failed: list[tuple[str, str]]


def autopick(model: PickerModel, micrographs, *, box_px: float | None = None,
             out_dir: str | os.PathLike | None = None,
             config: AutopickConfig = AutopickConfig(), train_config: TrainConfig = PRETRAIN_TRAINING,
             pick_config: PickConfig = PickConfig(), fmt: str = "star", progress: bool = False,
             resume: bool = False, workers: int = 1, scheduler=None,
             estimate: BoxEstimate | None = None) -> AutopickResult:
    """Pick a new molecule with no labels: general model → top picks → fine-tune → pick again.

    Micrographs are read one at a time (a folder of any size fits in memory); one that cannot be used is
    listed in ``result.batch.failed`` and the others go on.

    Parameters
    ----------
    model
        A general model (:func:`~deeppick.pretrain.pretrain`, or
        :func:`~deeppick.pretrain.load_general_model`).
    micrographs
        A folder, a file or a list of them (:func:`~deeppick.io.list_micrographs`). Only the images are
        read: coordinate files beside them are never opened.
    box_px
        The target's box side in micrograph px; replaces the model's (the network works in the model frame).
        Where it is smaller than ``config.min_box_diameters`` × the particle's estimated diameter the
        fine-tuned model works at that box instead (``result.box_px``; the given one in
        ``result.given_box_px``); the picks are particle centres either way, and ``box`` and ``cbox`` files
        carry the given box, the one to extract at (:func:`~deeppick.batch.extraction_box_px`), as do the
        ones ``pick`` writes with the saved model. None: estimated from the
        micrographs (:func:`estimate_box`). The estimate is in ``result.box_estimate``, the output model's
        ``info['box_estimate']`` and every model file's ``info['autopick']``.
    out_dir
        If given: the fine-tuned model as ``OUT/autopick_model.pt`` as soon as it is trained, then one
        coordinate file per micrograph as soon as it is picked (both atomic, like ``pick``).
    config
        Rounds, how many top picks become particles, background distance.
    train_config
        Fine-tuning settings (it starts from the current model's weights).
    pick_config
        Scan and post-processing; ``threshold`` overrides the inherited one (see the module docstring).
        Without ``post``, the peak window follows the particle's estimated size
        (``config.peak_window_diameters``).
    estimate
        The particle size :func:`estimate_box` found on these micrographs before, to use again.
    workers, scheduler
        Where the fine-tuned model's passes pick (:func:`~deeppick.workers.pick_many`); the general model's
        pass, which stops as soon as it has enough picks, runs here.
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
    out_dir = Path(out_dir) if out_dir is not None else None
    window_follows = pick_config.post is None and config.peak_window_diameters is not None
    if estimate is None and (box_px is None or config.general_box == "estimate" or window_follows
                             or config.min_box_diameters is not None):
        estimate = estimate_box(model, paths, seed=config.seed)
    given_box_px = box_px
    if box_px is None:
        box_px = estimate.box_px
    elif config.min_box_diameters is not None:
        box_px = max(float(box_px), float(round(config.min_box_diameters * estimate.diameter_px)))
    general_box = estimate.box_px if config.general_box == "estimate" else box_px
    general = with_box(model, general_box)
    # the passes that make pseudo-labels and the drift guard's rank by the dark disc only with "all"; the
    # picks written, with "picks" too, at the kept model's box: the fine-tuned model's, or the general model's
    # where nothing was fine-tuned or the drift guard rolled back
    general_config = _settings_at(model, pick_config, general_box, estimate, config, disc=config.disc_rank == "all")
    tuned_config = _settings_at(model, pick_config, box_px, estimate, config, disc=config.disc_rank == "all")
    written = {box: _settings_at(model, pick_config, box, estimate, config, disc=config.disc_rank != "off")
               for box in {general_box, box_px}}
    pick_config = written[box_px]
    record = _autopick_record(model, stems, box_px, general_box, config, pick_config)
    if estimate is not None:  # in every model file this run writes, beside what makes it reusable
        record["box_estimate"] = _estimate_record(estimate, box_px, given_box_px)
    device = next(general.net.parameters()).device
    reused = _resumable_model(out_dir / AUTOPICK_MODEL, record, device) if resume and out_dir is not None else None
    if reused is not None:
        result = AutopickResult(model=reused, resumed=True, skipped=reused.info["autopick"].get("skipped"))
        targets, latest = paths, None
    elif out_dir is not None and config.iterations == 0:  # the model the picks come from, for a rerun
        general.info["autopick"] = {**record, "round": 0}
        _save_kept(general, written, out_dir)
        result, targets, latest = AutopickResult(model=general), paths, None
    else:
        result, targets, latest = _self_train_rounds(general, paths, record, box_px=box_px, out_dir=out_dir,
                                                     config=config, train_config=train_config,
                                                     general_config=general_config, pick_config=tuned_config,
                                                     written=written, progress=progress, workers=workers,
                                                     scheduler=scheduler)
    pick_config = written[result.model.box_px]
    if latest is not None and pick_config != (general_config if result.model is general else tuned_config):
        latest = None  # that pass ranked its candidates otherwise than the picks are
    if result.model.postprocess != pick_config.post:  # not saved so: a reused model, or no out_dir
        result.model.postprocess = pick_config.post
        if out_dir is not None:
            save_model(result.model, out_dir / AUTOPICK_MODEL)
    if out_dir is not None:
        # one file as soon as each micrograph is picked, as pick does; files already there are kept only
        # if they came from this very model
        batch = pick_micrographs(result.model, targets, out_dir, fmt=fmt, config=pick_config,
                                 overwrite=not result.resumed, keep_candidates=True, replace_others=True,
                                 progress=progress, workers=workers, scheduler=scheduler)
        result.batch = replace(batch, failed=result.batch.failed + batch.failed)
        result.candidates.append(batch.candidates)
    else:
        final = _complete_pass(result.model, latest, targets, pick_config, workers=workers, scheduler=scheduler)
        result.batch.failed += final.failed
        if latest is None:
            result.candidates.append(final.candidates)
        else:
            result.candidates[-1] = final.candidates
    result.batch.seconds = time.perf_counter() - start
    result.box_px, result.general_box_px, result.box_estimate = box_px, general_box, estimate
    result.given_box_px = None if given_box_px is None else float(given_box_px)
    result.pick_config = pick_config
    if estimate is not None:
        result.model.info["box_estimate"] = _estimate_record(estimate, box_px, given_box_px)
    return result


def _settings_at(model: PickerModel, pick_config: PickConfig, box_px: float, estimate: BoxEstimate | None,
                 config: AutopickConfig, *, disc: bool) -> PickConfig:
    """``pick_config`` for picking at ``box_px``: unless post-processing is given, the peak window is
    ``config.peak_window_diameters`` × the estimated diameter, as a fraction of that box (at most the
    0.8 box of DeepPicker, at least 0.4 box): neighbours may be a diameter apart whatever the box. With
    ``disc``, candidates are ranked with their dark-disc depth too, the disc as wide as the estimated box (the
    given box where there is no estimate): a disc somewhat larger than the particle ranks as well as one of
    its size and a smaller one worse, and the estimate may be off either way (docs/measurements.md); each
    candidate first moves to the darkest disc within ``config.disc_centre_diameters`` estimated diameters."""
    post = pick_config.post
    if post is None and config.peak_window_diameters is not None:
        window = float(np.clip(config.peak_window_diameters * estimate.diameter_px / box_px, 0.4, 0.8))
        post = replace(postprocess_config(model), peak_window_box=window)
    diameter_box = radius_box = None
    if disc:
        diameter_box = float((estimate.box_px if estimate is not None else box_px) / box_px)
        if config.disc_centre_diameters is not None:
            radius_box = float(config.disc_centre_diameters
                               * (estimate.diameter_px if estimate is not None else box_px) / box_px)
    # set explicitly: a model autopick saved carries the post-processing of its picks, which its own passes
    # may not use
    post = replace(post or postprocess_config(model), disc_rank_diameter_box=diameter_box,
                   disc_centre_radius_box=radius_box)
    return replace(pick_config, post=post)


def _save_kept(model: PickerModel, written: dict[float, PickConfig], out_dir: Path):
    """The kept model saved with the post-processing its picks are written with (``written``, by its box), so
    ``deeppick pick --model`` with its file picks as autopick does (the peak window of the particle's size,
    the disc ranking)."""
    model.postprocess = written[model.box_px].post
    save_model(model, out_dir / AUTOPICK_MODEL)


def _estimate_record(estimate: BoxEstimate, used_px: float, given_px: float | None) -> dict:
    """The particle size the micrographs showed, the box the fine-tuned model used and the one the caller gave
    (None: estimated)."""
    return {"box_px": estimate.box_px, "diameter_px": estimate.diameter_px, "why": estimate.why,
            "curve": estimate.curve, "used": float(used_px), "given": None if given_px is None else float(given_px)}


def _self_train_rounds(general: PickerModel, paths: list[Path], record: dict, *, box_px: float,
                       out_dir: Path | None, config: AutopickConfig, train_config: TrainConfig,
                       general_config: PickConfig, pick_config: PickConfig, written: dict[float, PickConfig],
                       progress: bool, workers: int = 1,
                       scheduler=None) -> tuple[AutopickResult, list[Path], _Pass | None]:
    """The general model's pass (at its own box, with ``general_config``) and the self-training rounds, whose
    fine-tuned models work at ``box_px`` with ``pick_config``; a model saved in ``out_dir`` carries the settings
    its picks are written with (``written``, by box).

    Returns the result so far (the kept model, the candidates of each pass, the general pass's failures),
    the micrographs the final pass picks (all but those known to be unusable), and the kept model's own
    pass if it made one (None when it was trained after the last pass).
    """
    threshold = effective_threshold(general, replace(general_config, threshold=None))
    # a seeded random order (its own stream), so an early stop samples the whole session, not its first
    # grid squares
    order = np.random.default_rng([config.seed, 1]).permutation(len(paths))
    first = _pick_pass(general, paths, general_config, order=order, enough=(threshold, general_pass_target(config)))
    if not first.shapes:
        raise ConfigError(f"none of the {len(paths)} micrograph(s) could be used; the first: {first.failed[0][1]}")
    result = AutopickResult(model=general, candidates=[first.candidates])
    position = {str(p): i for i, p in enumerate(paths)}
    result.batch.failed = sorted(first.failed, key=lambda failure: position.get(failure[0], len(paths)))
    failed = {path for path, _ in first.failed}
    usable = [p for p in paths if micrograph_stem(p) in first.shapes]
    targets = [p for p in paths if str(p) not in failed]  # picked, or not opened by an early stop
    rng = np.random.default_rng(config.seed)
    current, current_config, latest = general, general_config, first
    for round_ in range(config.iterations):
        if len(latest.candidates) == 0:
            raise ConfigError(f"the general model found no particle candidates in {len(usable)} "
                              "micrograph(s); check --box-px (the particle diameter in px) and the micrographs")
        top = select_self_training(latest.candidates, threshold, config)
        too_few = too_few_to_self_train(top, latest.candidates, threshold, config)
        if too_few is not None:  # later rounds would start from the same picks: stop here
            kept = "the general model's" if round_ == 0 else f"round {round_}'s"
            result.skipped = (f"{too_few}; kept {kept} picks. Give more micrographs, check --box-px, or "
                              "force a count with --top N")
            if round_ == 0 and out_dir is not None:  # recorded as done, so a rerun resumes
                current.info["autopick"] = {**record, "round": config.iterations, "n_top": 0,
                                            "skipped": result.skipped}
                _save_kept(current, written, out_dir)
            break
        result.n_top.append(len(top))
        tuned = _self_train(current, latest, usable, top, box_px=box_px, config=config,
                            train_config=replace(train_config, seed=train_config.seed + round_),
                            picked_config=current_config, rng=rng, progress=progress)
        tuned.threshold = threshold
        drift = _drift(current, tuned, latest, usable, threshold, pick_config, config)
        result.drift.append(drift)
        if drifted(drift, config):
            kept = "the general model's" if round_ == 0 else f"round {round_}'s"
            result.skipped = (f"the fine-tuned model made {drift['tuned']} picks above the threshold where "
                              f"{'the general model' if round_ == 0 else 'the model before it'} made "
                              f"{drift['before']} ({drift['growth']:.1f}×, more than {config.max_growth:g}×)"
                              f"{_stand_out_words(drift, config)}: it learned more than the micrographs showed "
                              f"(noise, if they hold no particles), so {kept} picks are kept. Check the micrographs "
                              "and --box-px")
            result.n_top.pop()
            if round_ == 0 and out_dir is not None:  # recorded as done, so a rerun resumes
                current.info["autopick"] = {**record, "round": config.iterations, "n_top": 0,
                                            "skipped": result.skipped, "drift": drift}
                _save_kept(current, written, out_dir)
            break
        current, current_config = tuned, pick_config
        current.info.update(name=f"self-trained from {general.info.get('name', 'a general model')}",
                            autopick={**record, "round": round_ + 1, "n_top": len(top),
                                      "top_min_score": float(top["score"].min()), "drift": drift,
                                      "micrographs": [micrograph_stem(p) for p in usable]},
                            threshold={"value": threshold, "rule": NO_LABEL_THRESHOLD_RULE,
                                       "general": general.info.get("threshold")})
        if out_dir is not None:  # saved now: an interruption while picking keeps the fine-tuning
            _save_kept(current, written, out_dir)
        latest = None
        if round_ < config.iterations - 1:  # pseudo-labels for the next round, from the usable micrographs
            latest = _pick_pass(current, usable, pick_config, workers=workers, scheduler=scheduler)
            result.candidates.append(latest.candidates)
    result.model = current
    return result, targets, latest


def _drift(before: PickerModel, tuned: PickerModel, picked: _Pass, micrographs: list[Path], threshold: float,
           pick_config: PickConfig, config: AutopickConfig) -> dict:
    """How far fine-tuning moved the picks: on up to ``config.guard_micrographs`` of the micrographs
    ``before`` picked (a seeded sample), its picks above ``threshold``, the tuned model's and the tuned model's
    new ones (none of ``before``'s within half a box), how many and how much they stand out from the ice
    (:func:`stand_out`). No labels: a model that learned the molecule finds about the particles the general
    model found, or more of them on a crowded micrograph, all dark discs; one that learned noise finds many
    more places like any other (docs/measurements.md)."""
    rng = np.random.default_rng([config.seed, 2])
    sample = [micrographs[i] for i in np.sort(rng.permutation(len(micrographs))[:config.guard_micrographs])]
    stems = {micrograph_stem(p) for p in sample}
    above = picked.candidates[picked.candidates["micrograph"].isin(stems) & (picked.candidates["score"] >= threshold)]
    after = _pick_pass(tuned, sample, pick_config)
    above_after = after.candidates[after.candidates["score"] >= threshold]
    margin_px = postprocess_config(tuned, pick_config).edge_margin_box * tuned.box_px
    new = picks_away_from(above_after, above, NEW_PICK_BOX * tuned.box_px)
    before_out, tuned_out, new_out = stand_out(sample, [above, above_after, new], tuned.box_px,
                                               margin_px=margin_px, seed=[config.seed, 3])
    return {"micrographs": len(sample), "before": len(above), "tuned": len(above_after),
            "growth": float(len(above_after) / max(len(above), 1)), "new": len(new),
            "stand_out_before": before_out, "stand_out_tuned": tuned_out, "stand_out_new": new_out}


def drifted(drift: dict, config: AutopickConfig = AutopickConfig()) -> bool:
    """Whether the drift guard rolls a fine-tuned model back: its picks grew more than ``config.max_growth``
    times (on the guard's micrographs, :func:`_drift`) and stand out from the ice less than
    ``config.min_stand_out`` (:func:`stand_out`). The general model's stand-out and that of the new picks
    alone are recorded, not used: the new picks separate crowded particles from noise no better than all the
    picks do (docs/measurements.md, *The drift guard that looks at the picks*)."""
    if config.max_growth is None or not drift["growth"] > config.max_growth:
        return False
    tuned = drift.get("stand_out_tuned")
    return config.min_stand_out is None or tuned is None or tuned < config.min_stand_out


def _stand_out_words(drift: dict, config: AutopickConfig) -> str:
    tuned = drift.get("stand_out_tuned")
    if config.min_stand_out is None or tuned is None:
        return ""
    return f" and its picks stand out from the ice {tuned:.2f} (less than {config.min_stand_out:g})"


def stand_out(micrographs, pick_tables, box_px: float, *, margin_px: float = 0.0, seed=0,
              places_per_micrograph: int = 500) -> list[float | None]:
    """How much each table's picks stand out from the ice of ``micrographs``, label-free: 2·P(the disc depth
    (:func:`disc_depth`, the box as diameter) at a pick > at a random place ≥ ``margin_px`` from the edge) − 1;
    1 when every pick is darker than every place, about 0 for picks of places like any other, None for a
    table without picks. Micrographs are read once and binned as the disc ranking bins them
    (:func:`~deeppick.postprocess.bin_for_disc`)."""
    rng = np.random.default_rng(seed)
    at_picks = [[] for _ in pick_tables]
    places = []
    for path in micrographs:
        image, factor = bin_for_disc(np.asarray(read_micrograph(path), dtype=np.float64), box_px)
        depth = disc_depth(image, box_px / factor)
        low = margin_px / factor
        high = np.array(depth.shape[::-1]) - 1 - low
        if np.all(high > low):
            places.append(depth[rng.integers(int(low), int(high[1]) + 1, places_per_micrograph),
                                rng.integers(int(low), int(high[0]) + 1, places_per_micrograph)])
        stem = micrograph_stem(path)
        for values, table in zip(at_picks, pick_tables):
            rows = table[table["micrograph"] == stem]
            x = np.clip(np.round(rows["x"].to_numpy() / factor).astype(int), 0, depth.shape[1] - 1)
            y = np.clip(np.round(rows["y"].to_numpy() / factor).astype(int), 0, depth.shape[0] - 1)
            values.append(depth[y, x])
    places = np.sort(np.concatenate(places)) if places else np.empty(0)
    out = []
    for values in at_picks:
        values = np.concatenate(values) if values else np.empty(0)
        if len(values) == 0 or len(places) == 0:
            out.append(None)
            continue
        below = (np.searchsorted(places, values, side="left") + np.searchsorted(places, values, side="right")) / 2
        out.append(float(2 * below.mean() / len(places) - 1))
    return out


def _self_train(model: PickerModel, picked: _Pass, micrographs: list[Path], top: pd.DataFrame, *, box_px: float,
                config: AutopickConfig, train_config: TrainConfig, picked_config: PickConfig,
                rng: np.random.Generator, progress: bool) -> PickerModel:
    """Fine-tune ``model`` at ``box_px`` on ``top`` as particles and background away from every candidate of
    ``picked`` (``model``'s pass with ``picked_config``), in that pass's frame: at least
    ``config.min_negative_distance_box`` × ``model``'s box from every candidate, and only where candidates can
    be. Returned on ``model``'s device, so it picks where the general model picked (CUDA)."""
    margin_px = postprocess_config(model, picked_config).edge_margin_box * model.box_px
    patches = _self_training_patches({micrograph_stem(p): p for p in micrographs}, picked.shapes, picked.candidates,
                                     top, box_px, model, config, rng, margin_px, spacing_px=model.box_px)
    tuned = train_model(patches, train_config, box_px=box_px, init=model, progress=progress)
    tuned.net.to(next(model.net.parameters()).device)
    return tuned


def _pick_pass(model: PickerModel, paths: list[Path], config: PickConfig, *, order: Sequence[int] | None = None,
               enough: tuple[float, int] | None = None, workers: int = 1, scheduler=None) -> _Pass:
    """Every candidate of ``paths``; a micrograph that cannot be used is listed as failed and the pass goes on.

    ``order`` (indices into ``paths``) is the order to pick in; ``enough = (threshold, n)`` stops once
    ``n`` candidates score at or above ``threshold`` (then one micrograph at a time, here). Otherwise the
    micrographs go to ``workers`` / ``scheduler`` (:func:`~deeppick.workers.pick_many`). Candidates come
    back in the order of ``paths``.
    """
    from .workers import pick_many

    keep_all = candidates_config(model, config)
    tables, shapes, failed = {}, {}, []
    position = {str(p): i for i, p in enumerate(paths)}
    ordered = [paths[i] for i in (range(len(paths)) if order is None else order)]
    if enough is not None:
        workers, scheduler = 1, None
    n_above = 0
    outcomes = pick_many(model, ordered, config=keep_all, workers=workers, scheduler=scheduler)
    for outcome in outcomes:
        if outcome.error is not None:
            failed.append((str(outcome.path), outcome.error))
            continue
        i = position[str(outcome.path)]
        tables[i] = outcome.picks
        shapes[micrograph_stem(outcome.path)] = outcome.shape
        if enough is not None:
            n_above += int((tables[i]["score"] >= enough[0]).sum())
            if n_above >= enough[1]:
                outcomes.close()
                break
    candidates = concat_picks([tables[i] for i in sorted(tables)]) if tables else empty_picks()
    return _Pass(candidates, shapes, failed)


def _complete_pass(model: PickerModel, done: _Pass | None, targets: list[Path], config: PickConfig, *,
                   workers: int = 1, scheduler=None) -> _Pass:
    """``model``'s candidates of every target: ``done`` (its own pass so far, or None) completed with the
    targets it has not picked, in the order of ``targets``. The failures returned are the new ones."""
    if done is None:
        return _pick_pass(model, targets, config, workers=workers, scheduler=scheduler)
    rest = [p for p in targets if micrograph_stem(p) not in done.shapes]
    if not rest:
        return _Pass(done.candidates, done.shapes, [])
    more = _pick_pass(model, rest, config, workers=workers, scheduler=scheduler)
    merged = concat_picks([done.candidates, more.candidates])
    position = {micrograph_stem(p): i for i, p in enumerate(targets)}
    order = np.argsort(merged["micrograph"].map(position).to_numpy(), kind="stable")
    return _Pass(merged.iloc[order].reset_index(drop=True), {**done.shapes, **more.shapes}, more.failed)


@dataclass
class BoxEstimate:
    """The particle box the general model's picks are strongest at, and how it was found."""

    box_px: float
    diameter_px: float
    curve: dict[str, float]  # box (px) → the strength of the picks at that box
    why: str


# boxes estimate_box tries: from small particles in binned micrographs to the largest complexes (px)
ESTIMATE_BOXES_PX = tuple(float(round(24 * 1.25 ** k)) for k in range(12))


def estimate_box(model: PickerModel, micrographs, *, n_micrographs: int = 3, boxes=ESTIMATE_BOXES_PX,
                 seed: int = 0, pick_config: PickConfig = PickConfig()) -> BoxEstimate:
    """The box to autopick at, from the micrographs themselves, with the general model.

    The model picks a centre crop of 20 × 20 boxes of up to ``n_micrographs`` micrographs (a seeded
    sample) at each of ``boxes`` (one rotation: this only ranks boxes); the strength of a box is the mean
    logit of its best picks, as many as would cover 5 % of the crops. A particle fills the model's box as
    in training at a range of boxes, where the strength is highest: the estimate is the geometric middle of
    the boxes within a tenth of the curve's range of the best, and the particle's diameter that box over the
    middle of the boxes the model was pretrained at (``box_factors``, in its info).
    """
    from .io import list_micrographs, read_micrograph

    paths = list_micrographs(micrographs)
    rng = np.random.default_rng([seed, 3])
    images = []
    for i in rng.permutation(len(paths)):  # a seeded sample of the readable micrographs
        if len(images) == n_micrographs:
            break
        try:
            images.append(read_micrograph(paths[i]))
        except DeepPickError:
            continue
    if not images:
        raise ConfigError(f"none of the {len(paths)} micrograph(s) could be read to estimate the particle size on")
    config = replace(pick_config, scan=replace(pick_config.scan, rotations=False), keep_all=True, threshold=None)
    curve = {}
    for box in boxes:
        strengths = []
        for image in images:
            side = int(min(min(image.shape), 20 * box))
            if side < 2 * box:
                continue
            r0, c0 = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
            crop = image[r0:r0 + side, c0:c0 + side]
            picks = pick_micrograph(with_box(model, box), crop, config=candidates_config(model, config))
            # float32 scores: 1 − 2⁻²⁴ is the largest below 1, so the logits keep every step the scores resolve
            scores = np.sort(np.clip(picks["score"].to_numpy(np.float64), 1e-4, 1 - 2.0**-24))[::-1]
            n = max(5, int(0.05 * crop.size / box**2))
            strengths.append(float(np.log(scores[:n] / (1 - scores[:n])).mean()) if len(scores) else -10.0)
        if strengths:
            curve[f"{box:g}"] = float(np.mean(strengths))
    if not curve:
        raise ConfigError("the micrographs are too small to estimate a particle size on; give --box-px")
    best, worst = max(curve.values()), min(curve.values())
    near = [float(b) for b, v in curve.items() if v >= best - 0.1 * (best - worst)]
    box = float(round(np.exp(np.mean(np.log([min(near), max(near)])))))
    factors = model.info.get("pretrain", {}).get("config", {}).get("box_factors") or [1.0]
    middle = float(np.exp(np.mean(np.log([min(factors), max(factors)]))))
    why = (f"the general model's picks are strongest at boxes {min(near):g}–{max(near):g} px (mean top logit "
           f"{best:.1f}) on {len(images)} micrograph(s); box {box:g} px, their geometric middle")
    return BoxEstimate(box_px=box, diameter_px=box / middle, curve=curve, why=why)


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

    Without ``config.top``, fewer than ``min_top`` pseudo-labels skip self-training: a handful of picks
    cannot show what the molecule looks like, and padding them with sub-threshold candidates teaches
    the model to pick empty ice (docs/measurements.md, *Few particles*). A forced ``config.top`` is the
    user's choice and is kept.
    """
    if config.top is not None or len(top) >= config.min_top:
        return None
    n_above = int((candidates["score"] >= threshold).sum())
    return (f"only {n_above} pick(s) above the threshold {threshold:.3g}, too few to self-train on (at least "
            f"{math.ceil(config.min_top / config.top_fraction)} are needed)")


def general_pass_target(config: AutopickConfig = AutopickConfig()) -> int:
    """Picks above the threshold after which the general model's pass may stop: enough for
    :func:`select_self_training` to take all it will take (``top`` or ``max_top`` particles)."""
    return math.ceil((config.top if config.top is not None else config.max_top) / config.top_fraction)


def _self_training_patches(paths: dict, shapes: dict, candidates: pd.DataFrame, top: pd.DataFrame, box_px: float,
                           model: PickerModel, config: AutopickConfig, rng: np.random.Generator,
                           edge_margin_px: float, spacing_px: float) -> PatchSet:
    """Top picks as particles; background ≥ ``config.min_negative_distance_box`` × ``spacing_px`` (the box the
    candidates were found at) from every candidate, drawn only where candidates can be
    (``edge_margin_px`` from the edge): the edge band holds no candidates because pick leaves it out, not
    because it is empty, and crowded micrographs would otherwise draw nearly all background there. Patches
    are cut at ``box_px``. ``paths`` maps stem → micrograph file (read one at a time), ``shapes`` stem → image
    shape."""
    negatives = {}
    for stem in paths:
        all_xy = candidates.loc[candidates["micrograph"] == stem, ["x", "y"]].to_numpy(np.float64)
        n_pos = int((top["micrograph"] == stem).sum())
        negatives[stem] = sample_negative_centres(shapes[stem], all_xy, int(round(config.negative_ratio * n_pos)),
                                                  min_distance_px=config.min_negative_distance_box * spacing_px,
                                                  rng=rng, edge_margin_px=edge_margin_px)
    # DeepPicker's patches unless off-centre views are asked for (their targets fall with the distance to
    # the nearest top pick)
    patch_config = PatchConfig(negative_ratio=0.0, min_negative_distance_box=config.min_negative_distance_box,
                               off_centre_ratio=config.off_centre_ratio)
    return extract_patches(paths, top, box_px, config=patch_config, preprocess=model.preprocess, negatives=negatives,
                           seed=rng)


def _autopick_record(model: PickerModel, stems: list[str], box_px: float, general_box_px: float,
                     config: AutopickConfig, pick_config: PickConfig) -> dict:
    """What makes a fine-tuned model reusable by a rerun: the same general model (its weights, not only its
    name), micrographs, box, the box the general model picked its pseudo-labels at, self-training rules, and
    the scan and peak settings its candidates came from (the threshold and top-N only decide what is
    written, so they may change)."""
    return {"general_model": model.info.get("name"), "general_fingerprint": model_fingerprint(model),
            "requested": list(stems), "box_px": float(box_px), "general_box_px": float(general_box_px),
            "config": config.to_dict(),
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
