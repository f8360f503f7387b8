"""Picking one micrograph: prepare → score map → post-processing → a picks table.

``pick_micrograph`` chains the stages: prepare (:mod:`~deeppick.preprocess`) → score map
(:mod:`~deeppick.scan`) → cleaning, peaks, pixel filters and, without labels, the dark-disc ranking
(:mod:`~deeppick.postprocess`) → a picks
table in micrograph pixels, best score first. ``score_micrograph`` and ``picks_from_score_map`` are its
two halves, so one score map can serve several post-processing settings. A folder of micrographs is
:mod:`~deeppick.batch`'s job; choosing the threshold and post-processing on labelled micrographs is
:mod:`~deeppick.tuning`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import ConfigError
from .io import concat_picks, empty_picks, make_picks, micrograph_stem, read_micrograph
from .metrics import BETA, MATCH_FRACTION, Evaluation, evaluate_picks
from .model import PickerModel
from .postprocess import (PostprocessConfig, apart, centre_on_disc, clean_score_map, edge_mask, extreme_pixel_mask,
                          find_peaks, rank_with_disc, sort_picks, top_n)
from .preprocess import prepare_micrograph
from .scan import ScanConfig, ScoreMap, scan_micrograph

DEFAULT_THRESHOLD = 0.5  # a model without a chosen threshold picks where the particle class wins


@dataclass(frozen=True)
class PickConfig:
    """How ``pick`` turns a micrograph into picks; every default comes from the stage configs."""

    scan: ScanConfig = field(default_factory=ScanConfig)
    post: PostprocessConfig | None = None  # None: the model's own (chosen at training), else the stage's defaults
    # ours: peaks down to this score are candidates, so a threshold below 0.5 (F2 favours recall) and AP
    # see the whole ranked list; the pick threshold then decides what is written.
    candidate_min_score: float = 0.05
    threshold: float | None = None  # None: the model's F-beta threshold (or 0.5 if it has none)
    keep_all: bool = False  # write sub-threshold candidates too (re-threshold without re-picking)

    def __post_init__(self):
        if not 0 <= self.candidate_min_score <= 1:
            raise ConfigError(f"candidate_min_score must lie in [0, 1], got {self.candidate_min_score}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"--threshold must lie in [0, 1] (a particle probability), got {self.threshold}")


def postprocess_config(model: PickerModel, config: PickConfig = PickConfig()) -> PostprocessConfig:
    """The post-processing ``pick`` applies: ``config.post``, else the model's, else the stage's defaults."""
    if config.post is not None:
        return config.post
    return model.postprocess if model.postprocess is not None else PostprocessConfig()


def effective_threshold(model: PickerModel, config: PickConfig = PickConfig()) -> float:
    """The score cut ``pick`` applies: ``--threshold``, else the model's stored one, else 0.5."""
    if config.threshold is not None:
        return float(config.threshold)
    if model.threshold is not None and np.isfinite(model.threshold):
        return float(model.threshold)
    return DEFAULT_THRESHOLD


def pick_micrograph(model: PickerModel, image: np.ndarray, *, name: str = "micrograph",
                    config: PickConfig = PickConfig(), path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Pick one micrograph.

    Parameters
    ----------
    model
        A trained model (its box size, preparation and post-processing are used).
    image
        The micrograph, ``image[y, x]`` as read.
    name
        Micrograph name (stem) written in the picks table.
    config
        Scan, post-processing and threshold settings.
    path
        Where the image came from, for error messages.

    Returns
    -------
    DataFrame
        Picks table (centres in micrograph px), best score first: candidates at or above the threshold,
        or every candidate with ``config.keep_all``; at most ``top_n`` of them (see :func:`postprocess_config`).
    """
    score_map = score_micrograph(model, image, config=config, path=path or name)
    return picks_from_score_map(model, image, score_map, name=name, config=config)


def score_micrograph(model: PickerModel, image: np.ndarray, *, config: PickConfig = PickConfig(),
                     path: str | os.PathLike | None = None) -> ScoreMap:
    """The score map of one micrograph: prepare it for ``model`` and scan it (``config.scan``)."""
    prepared = prepare_micrograph(image, model.box_px, model.preprocess, path=str(path or "micrograph"))
    return scan_micrograph(model, prepared, config.scan)


def picks_from_score_map(model: PickerModel, image: np.ndarray, score_map: ScoreMap, *, name: str = "micrograph",
                         config: PickConfig = PickConfig()) -> pd.DataFrame:
    """The post-processing half of :func:`pick_micrograph`: cleaning, peaks, edge and pixel filters, threshold.

    ``score_map`` comes from :func:`score_micrograph` of the same ``image``; one map serves any number of
    post-processing settings (:func:`~deeppick.tuning.choose_postprocess` scans each micrograph once).
    """
    post = postprocess_config(model, config)
    cleaned = clean_score_map(score_map.scores, post.score_threshold, post.max_area_factor)
    window_grid = post.peak_window_box * model.preprocess.model_px / score_map.model_step_px
    rows, cols, scores = find_peaks(cleaned, window_grid, min_score=config.candidate_min_score)
    x, y = score_map.to_micrograph(rows, cols)
    margin_px = post.edge_margin_box * model.box_px
    keep = edge_mask(image.shape, x, y, margin_px)
    keep[keep] = extreme_pixel_mask(image, x[keep], y[keep], model.box_px, sd_limit=post.extreme_sd,
                                    sd_range=post.sd_range, max_extreme_fraction=post.max_extreme_fraction)
    x, y, scores = x[keep], y[keep], scores[keep]
    if post.disc_centre_radius_box is not None:  # moved, they stay inside the margin and as far apart as peaks
        x, y = centre_on_disc(image, x, y, post.disc_rank_diameter_box * model.box_px,
                              post.disc_centre_radius_box * model.box_px)
        keep = edge_mask(image.shape, x, y, margin_px)
        keep[keep] = apart(x[keep], y[keep], scores[keep], post.peak_window_box * model.box_px / 2)
        x, y, scores = x[keep], y[keep], scores[keep]
    if post.disc_rank_diameter_box is not None:
        scores = rank_with_disc(image, x, y, scores, post.disc_rank_diameter_box * model.box_px)
    return cut_picks(model, sort_picks(make_picks(name, x, y, scores)), config)


def cut_picks(model: PickerModel, candidates: pd.DataFrame, config: PickConfig = PickConfig()) -> pd.DataFrame:
    """What ``pick`` keeps of sorted candidates: those at or above the threshold (all with ``keep_all``),
    then the best ``top_n``."""
    if not config.keep_all:
        candidates = candidates[candidates["score"] >= effective_threshold(model, config)].reset_index(drop=True)
    return top_n(candidates, postprocess_config(model, config).top_n)


def candidates_config(model: PickerModel, config: PickConfig = PickConfig()) -> PickConfig:
    """``config`` keeping every candidate: no threshold, no top-N cut (for ranking and evaluation)."""
    return replace(config, keep_all=True, post=replace(postprocess_config(model, config), top_n=None))


def pick_paths(model: PickerModel, paths: Iterable[str | os.PathLike], *,
               config: PickConfig = PickConfig()) -> pd.DataFrame:
    """Pick micrographs in memory and return one picks table (errors propagate)."""
    tables = []
    for path in map(Path, paths):
        tables.append(pick_micrograph(model, read_micrograph(path), name=micrograph_stem(path), config=config,
                                      path=path))
    return concat_picks(tables) if tables else empty_picks()


def evaluate_model(model: PickerModel, paths: list[Path], references: pd.DataFrame, *,
                   config: PickConfig = PickConfig(), match_fraction: float = MATCH_FRACTION,
                   match_px: float | None = None, beta: float = BETA) -> tuple[Evaluation, pd.DataFrame]:
    """Pick ``paths`` keeping every candidate and evaluate them against ``references`` at the model's
    threshold. Returns the evaluation and the candidate picks table."""
    candidates = pick_paths(model, paths, config=replace(config, keep_all=True))
    evaluation = evaluate_picks(candidates, references, model.box_px, match_fraction=match_fraction,
                                match_px=match_px, threshold=effective_threshold(model, config), beta=beta,
                                micrographs=[micrograph_stem(p) for p in paths])
    return evaluation, candidates
