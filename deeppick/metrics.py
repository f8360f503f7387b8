"""Matching picks to reference particles, and the figures of merit built on one matching.

There is one matching rule, used by evaluation, threshold choice and benchmarks alike
(:func:`match_picks`): picks are taken in descending score and each is matched to the nearest still
unmatched reference centre within ``max_dist_px``; a reference is matched at most once (one-to-one,
greedy, as PASCAL VOC and COCO do). The default distance is 0.2 box (DeepPicker §4.4).

Over many micrographs, each micrograph is matched on its own and the ranked lists are pooled
(:func:`evaluate_picks`). From the pooled list (scores in descending order, a true-positive flag per pick,
and the number of references, which counts references that were never picked) come:

* the precision–recall curve, one point per distinct score (:func:`precision_recall_curve`): keeping the
  picks with ``score >= t`` gives exactly the point of threshold ``t``;
* the average precision (:func:`average_precision`), the step-wise sum over recall increments
  ``AP = Σ_k (R_k − R_{k−1}) P_k`` without interpolation, as ``sklearn.metrics.average_precision_score``
  and VOC 2010+ *without* the monotone precision envelope. References never picked cap the recall below
  1 and so lower AP;
* F-beta at each threshold (:func:`fbeta_curve`) and its optimum (:func:`best_threshold`).

Other pickers report other figures, and :func:`evaluate_picks` gives them too so that numbers compare:
crYOLO counts a pick as a true positive when its box overlaps a reference box with IoU > 0.6
(:func:`match_picks_iou`, same greedy one-to-one rule) and reports the mean IoU of the matched pairs;
HydraPicker reports the area under the ROC curve of the candidates (:func:`auroc`), which, unlike AP,
ignores references that no candidate reached.

Distances and coordinates are in micrograph pixels (centres, see :mod:`deeppick.io`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .errors import ConfigError, CoordinateError

MATCH_FRACTION = 0.2  # centre distance ≤ 0.2 box is a hit: DeepPicker §4.4
MIN_IOU = 0.6  # box IoU > 0.6 is a hit: crYOLO
BETA = 2.0  # F2 weights recall over precision: DeepEM


# --------------------------------------------------------------------------------------------------
# matching


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Outcome of matching one set of picks to one set of references.

    All per-pick arrays are in **descending score order** (ties keep input order); ``order`` maps back.
    """

    order: np.ndarray  # int, input index of each ranked pick
    scores: np.ndarray  # float, score of each ranked pick
    tp: np.ndarray  # bool, the ranked pick is matched to a reference
    ref_index: np.ndarray  # int, index of the matched reference, -1 for a false positive
    distance_px: np.ndarray  # float, centre distance to the matched reference (micrograph px), NaN if none
    n_refs: int  # number of references, matched or not

    @property
    def n_tp(self) -> int:
        return int(self.tp.sum())

    def tp_in_input_order(self) -> np.ndarray:
        """True-positive flag for each pick in the order the picks were given."""
        flags = np.zeros(len(self.tp), dtype=bool)
        flags[self.order] = self.tp
        return flags


def match_picks(pred_xy, pred_score, ref_xy, max_dist_px: float) -> MatchResult:
    """Match picks to references one-to-one, in descending score, within ``max_dist_px``.

    Each pick, best score first, takes the nearest reference not yet taken whose centre lies within
    ``max_dist_px`` (inclusive); a pick with none is a false positive.

    Parameters
    ----------
    pred_xy
        (N, 2) pick centres ``(x, y)``, micrograph pixels.
    pred_score
        (N,) pick scores; higher is better. NaN ranks below every number.
    ref_xy
        (M, 2) reference centres ``(x, y)``, micrograph pixels.
    max_dist_px
        Largest centre distance of a match, micrograph pixels.

    Returns
    -------
    MatchResult

    Example
    -------
    >>> m = match_picks([[0, 0], [1, 0], [50, 50]], [0.9, 0.8, 0.7], [[0.5, 0]], max_dist_px=2)
    >>> m.tp.tolist(), m.ref_index.tolist()
    ([True, False, False], [0, -1, -1])
    """
    if not max_dist_px >= 0:
        raise ConfigError(f"the match distance must be non-negative, got {max_dist_px} px")

    def closeness(offsets):
        d = np.hypot(*offsets.T)
        return np.where(d <= max_dist_px, -d, np.nan)

    return _greedy_match(pred_xy, pred_score, ref_xy, reach_px=max_dist_px, closeness=closeness)


def box_iou(offsets_xy, box_px: float) -> np.ndarray:
    """IoU of two square boxes of side ``box_px`` whose centres lie ``offsets_xy`` (N, 2) apart.

    >>> box_iou([[0, 0], [25, 0]], 100).round(3).tolist()
    [1.0, 0.6]
    """
    offsets = np.abs(np.asarray(offsets_xy, dtype=np.float64).reshape(-1, 2))
    overlap = np.prod(np.clip(box_px - offsets, 0.0, None), axis=1)
    return overlap / (2.0 * box_px * box_px - overlap)


def match_picks_iou(pred_xy, pred_score, ref_xy, box_px: float, min_iou: float = MIN_IOU) -> MatchResult:
    """Match picks to references one-to-one, in descending score, where their boxes overlap with IoU > ``min_iou``.

    Pick and reference boxes are squares of side ``box_px`` around their centres (crYOLO's criterion);
    each pick, best score first, takes the reference not yet taken that its box overlaps most.

    >>> m = match_picks_iou([[0, 0], [30, 0]], [0.9, 0.8], [[20, 0], [0, 0]], box_px=100)
    >>> m.ref_index.tolist()
    [1, 0]
    """
    if not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}")
    if not 0 <= min_iou < 1:
        raise ConfigError(f"the IoU criterion must lie in [0, 1), got {min_iou}")
    pred_xy, ref_xy = _as_xy(pred_xy, "pred_xy"), _as_xy(ref_xy, "ref_xy")
    # IoU > t needs |dx| and |dy| < box (1 - t) / (1 + t): within that square's half-diagonal
    reach = math.sqrt(2.0) * box_px * (1.0 - min_iou) / (1.0 + min_iou)

    def closeness(offsets):
        iou = box_iou(offsets, box_px)
        return np.where(iou > min_iou, iou, np.nan)

    return _greedy_match(pred_xy, pred_score, ref_xy, reach_px=reach, closeness=closeness)


def _greedy_match(pred_xy, pred_score, ref_xy, *, reach_px: float, closeness) -> MatchResult:
    """Best score first, each pick takes the untaken reference within ``reach_px`` of highest
    ``closeness(offsets)`` (NaN: not a match); the one rule behind both match criteria."""
    pred_xy = _as_xy(pred_xy, "pred_xy")
    ref_xy = _as_xy(ref_xy, "ref_xy")
    scores = np.asarray(pred_score, dtype=np.float64).reshape(-1)
    if len(scores) != len(pred_xy):
        raise ValueError(f"{len(pred_xy)} picks but {len(scores)} scores")
    order = _rank(scores)
    n = len(order)
    ref_index = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, np.nan)
    if n and len(ref_xy):
        taken = np.zeros(len(ref_xy), dtype=bool)
        neighbours = cKDTree(ref_xy).query_ball_point(pred_xy[order], r=reach_px)
        for rank, candidates in enumerate(neighbours):
            if not candidates:
                continue
            candidates = np.asarray(candidates, dtype=np.int64)
            candidates = candidates[~taken[candidates]]
            if not candidates.size:
                continue
            offsets = ref_xy[candidates] - pred_xy[order[rank]]
            value = closeness(offsets)
            if np.isnan(value).all():
                continue
            best = int(np.nanargmax(value))  # ties: the reference of lowest index, as candidates come sorted
            ref_index[rank] = candidates[best]
            distance[rank] = float(np.hypot(*offsets[best]))
            taken[candidates[best]] = True
    return MatchResult(order=order, scores=scores[order], tp=ref_index >= 0, ref_index=ref_index,
                       distance_px=distance, n_refs=len(ref_xy))


def _rank(scores: np.ndarray) -> np.ndarray:
    """Indices in descending score, ties in input order, NaN last."""
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.argsort(key, kind="stable")


def _as_xy(xy, name: str) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    if xy.size == 0:
        return xy.reshape(0, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {xy.shape}")
    return xy


# --------------------------------------------------------------------------------------------------
# curves on a pooled ranked list


def _check_ranked(scores, tp, n_refs) -> tuple[np.ndarray, np.ndarray, int]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    tp = np.asarray(tp, dtype=bool).reshape(-1)
    if len(scores) != len(tp):
        raise ValueError(f"{len(scores)} scores but {len(tp)} true-positive flags")
    if np.any(np.isnan(scores)):
        raise ValueError("scores of a ranked list must not be NaN")
    if np.any(np.diff(scores) > 0):
        raise ValueError("scores of a ranked list must be in descending order")
    n_refs = int(n_refs)
    if n_refs < int(tp.sum()):
        raise ValueError(f"{int(tp.sum())} true positives but only {n_refs} references")
    if n_refs == 0:
        raise CoordinateError("there are no reference particles to evaluate against; check the references")
    return scores, tp, n_refs


def precision_recall_curve(scores, tp, n_refs: int):
    """Precision and recall at every distinct score threshold of a ranked list.

    Parameters
    ----------
    scores
        Pick scores in descending order (pooled over micrographs).
    tp
        True-positive flag of each pick, same order.
    n_refs
        Number of references, including those no pick matched.

    Returns
    -------
    thresholds, precision, recall : ndarray of float64
        One entry per distinct score, highest threshold first: keeping the picks with
        ``score >= thresholds[k]`` gives ``precision[k]`` and ``recall[k]``.

    Example
    -------
    >>> t, p, r = precision_recall_curve([0.9, 0.8, 0.8, 0.1], [True, False, True, True], n_refs=4)
    >>> t.tolist(), p.round(3).tolist(), r.tolist()
    ([0.9, 0.8, 0.1], [1.0, 0.667, 0.75], [0.25, 0.5, 0.75])
    """
    scores, tp, n_refs = _check_ranked(scores, tp, n_refs)
    if not len(scores):
        return np.empty(0), np.empty(0), np.empty(0)
    # last index of each tie group: the cut keeps the whole group
    last = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    n_tp = np.cumsum(tp)[last].astype(np.float64)
    n_kept = (last + 1).astype(np.float64)
    return scores[last], n_tp / n_kept, n_tp / n_refs


def average_precision(scores, tp, n_refs: int) -> float:
    """Step-wise AP: ``Σ_k (R_k − R_{k−1}) P_k`` over the distinct thresholds, ``R_0 = 0``, no interpolation.

    Same definition as ``sklearn.metrics.average_precision_score``, except that the recall denominator
    counts references never picked; 0 for an empty list.
    """
    _, precision, recall = precision_recall_curve(scores, tp, n_refs)
    if not len(recall):
        return 0.0
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fbeta_score(precision, recall, beta: float = BETA):
    """F-beta from precision and recall (0 where both are 0); arrays or scalars."""
    if not beta > 0:
        raise ConfigError(f"beta must be positive, got {beta}")
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    b2 = beta * beta
    denom = b2 * p + r
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(denom > 0, (1 + b2) * p * r / np.where(denom > 0, denom, 1), 0.0)
    return float(f) if f.ndim == 0 else f


def fbeta_curve(scores, tp, n_refs: int, beta: float = BETA):
    """F-beta at every distinct score threshold; returns ``(thresholds, fbeta)``, highest threshold first."""
    thresholds, precision, recall = precision_recall_curve(scores, tp, n_refs)
    return thresholds, np.atleast_1d(fbeta_score(precision, recall, beta))


def best_threshold(scores, tp, n_refs: int, beta: float = BETA) -> tuple[float, float]:
    """The score threshold that maximises F-beta over a ranked list, and that F-beta.

    Keeping the picks with ``score >= threshold`` gives exactly the returned F-beta. Of equal optima the
    highest threshold (fewest picks) wins. With no true positive at all the best F-beta is 0 and the
    threshold is ``inf`` (keep nothing).
    """
    thresholds, f = fbeta_curve(scores, tp, n_refs, beta)
    if not len(f) or f.max() <= 0:
        return math.inf, 0.0
    k = int(np.argmax(f))
    return float(thresholds[k]), float(f[k])


def auroc(scores, tp) -> float:
    """Area under the ROC curve of scored candidates, true positives against false ones (HydraPicker).

    The chance that a true positive outscores a false one, ties counting half (Mann–Whitney); NaN
    when either kind is missing. References that no candidate reached do not enter it: quote it with
    recall.

    >>> auroc([0.9, 0.8, 0.7, 0.1], [True, False, True, False])
    0.75
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    tp = np.asarray(tp, dtype=bool).reshape(-1)
    n_pos, n_neg = int(tp.sum()), int((~tp).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[tp].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --------------------------------------------------------------------------------------------------
# evaluation of picks tables


@dataclass(frozen=True, eq=False)  # holds arrays: compare figures with to_dict()
class Evaluation:
    """Figures of merit of a picks table against references, and the pooled ranked list behind them.

    Scalars at ``threshold`` (None: all picks) are ``precision``, ``recall``, ``f1``, ``f2``, ``fbeta``
    (for ``beta``), ``n_picks``, ``n_tp`` and ``centre_error_box`` (mean centre distance of the matched
    pairs / box; NaN with no match). ``ap`` and ``best_threshold`` / ``best_fbeta`` use the whole list.
    The same under crYOLO's criterion (box IoU > ``min_iou``): ``precision_iou``, ``recall_iou``,
    ``ap_iou`` and ``mean_iou`` (of the pairs matched so, at ``threshold``); ``auroc`` is HydraPicker's
    area under the ROC curve of all candidates, true and false positives by the distance criterion.
    """

    precision: float
    recall: float
    f1: float
    f2: float
    fbeta: float
    beta: float
    threshold: float | None
    ap: float
    best_threshold: float
    best_fbeta: float
    centre_error_box: float
    n_picks: int
    n_tp: int
    n_refs: int
    n_micrographs: int
    box_px: float
    max_dist_px: float
    # pooled ranked list over all picks (not only those above threshold), descending score
    scores: np.ndarray = field(repr=False)
    tp: np.ndarray = field(repr=False)
    distance_px: np.ndarray = field(repr=False)  # NaN for false positives
    micrograph: np.ndarray = field(repr=False)  # name of each ranked pick's micrograph
    # the threshold when no pick scores below it: the picks were cut there, the curve covers only the top
    truncated_at: float | None = None
    # other pickers' figures (see the module's docstring)
    min_iou: float = MIN_IOU
    precision_iou: float = math.nan
    recall_iou: float = math.nan
    ap_iou: float = math.nan
    mean_iou: float = math.nan
    auroc: float = math.nan

    def to_dict(self) -> dict:
        """The scalar figures as JSON-ready Python values (NaN and inf become None)."""
        out = {}
        for name in ("precision", "recall", "f1", "f2", "fbeta", "beta", "threshold", "ap", "best_threshold",
                     "best_fbeta", "centre_error_box", "n_picks", "n_tp", "n_refs", "n_micrographs", "box_px",
                     "max_dist_px", "min_iou", "precision_iou", "recall_iou", "ap_iou", "mean_iou", "auroc"):
            value = getattr(self, name)
            if isinstance(value, (float, np.floating)):
                value = float(value) if math.isfinite(value) else None
            elif isinstance(value, (int, np.integer)):
                value = int(value)
            out[name] = value
        return out

    def curve(self):
        """``(thresholds, precision, recall)`` of the pooled list; see :func:`precision_recall_curve`."""
        return precision_recall_curve(self.scores, self.tp, self.n_refs)


@dataclass(frozen=True)
class SharedNames:
    """Which micrographs two coordinate sources share, by name: evaluated on ``shared``, the rest left out."""

    shared: list[str]
    picks_only: list[str]  # picked, with no references
    references_only: list[str]  # with references, not picked

    def summary(self) -> str:
        """One line: how many micrographs match, and the first few names of each kind left out."""
        def some(names):
            return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

        text = f"{len(self.shared)} micrograph(s) with both picks and references"
        if self.picks_only:
            text += f"; left out, picked but without references: {some(self.picks_only)}"
        if self.references_only:
            text += f"; left out, with references but not picked: {some(self.references_only)}"
        return text


def shared_micrographs(picked: Iterable[str], referenced: Iterable[str], *, picks="the picks",
                       references="the references") -> SharedNames:
    """The micrographs both sides name (by micrograph name stem), and those only one side does.

    Raises
    ------
    CoordinateError
        If no name is shared: nothing could be evaluated, and zeros would look like a result.
    """
    picked, referenced = set(picked), set(referenced)
    names = SharedNames(sorted(picked & referenced), sorted(picked - referenced), sorted(referenced - picked))
    if not names.shared:
        def some(side):
            return ", ".join(sorted(side)[:3]) or "none"

        raise CoordinateError(f"no micrograph name is in both {picks} ({some(picked)}) and {references} "
                              f"({some(referenced)}); coordinates are matched to micrographs by name stem "
                              "(mic_001.star, mic_001_autopick.star → mic_001): rename the files, or give a "
                              "STAR file with rlnMicrographName")
    return names


def match_distance_px(box_px: float, match_fraction: float = MATCH_FRACTION, match_px: float | None = None) -> float:
    """The match distance in micrograph pixels: ``match_px`` if given, else ``match_fraction × box_px``."""
    if match_px is not None:
        if not match_px >= 0:
            raise ConfigError(f"--match-px must be non-negative, got {match_px}")
        return float(match_px)
    if not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}")
    if not match_fraction >= 0:
        raise ConfigError(f"the match fraction must be non-negative, got {match_fraction}")
    return float(match_fraction * box_px)


def evaluate_picks(picks: pd.DataFrame, references: pd.DataFrame, box_px: float,
                   *, match_fraction: float = MATCH_FRACTION, match_px: float | None = None,
                   threshold: float | None = None, beta: float = BETA, min_iou: float = MIN_IOU,
                   micrographs: Iterable[str] | None = None) -> Evaluation:
    """Evaluate a picks table against reference picks over many micrographs.

    Each micrograph's picks are matched to its references (:func:`match_picks`) and the ranked lists are
    pooled by score. References of micrographs without picks count as missed; picks of micrographs
    without references count as false positives.

    Parameters
    ----------
    picks
        Picks table (``micrograph, x, y, score``; centres, micrograph px). Scores must be all numbers,
        or all NaN (unscored picks: one operating point, every pick kept).
    references
        Reference picks table; scores are ignored.
    box_px
        Particle box side, micrograph pixels; normalises the match distance and the centre error.
    match_fraction
        Match distance as a fraction of the box (0.2: DeepPicker §4.4).
    match_px
        Match distance in micrograph pixels; overrides ``match_fraction``.
    threshold
        Keep picks with ``score >= threshold`` for the scalar figures; None keeps all.
    beta
        The beta of ``fbeta`` and of the optimal threshold (2: DeepEM).
    min_iou
        The IoU criterion of the crYOLO-style figures (boxes of side ``box_px``).
    micrographs
        Names of the labelled micrographs to evaluate; picks and references of others are ignored.
        None: every micrograph named in either table.

    Returns
    -------
    Evaluation
    """
    if not box_px > 0:
        raise ConfigError(f"box size must be positive, got {box_px}")
    max_dist = match_distance_px(box_px, match_fraction, match_px)
    if not beta > 0:
        raise ConfigError(f"beta must be positive, got {beta}")
    for table, what in ((picks, "picks"), (references, "references")):
        missing = {"micrograph", "x", "y", "score"} - set(table.columns)
        if missing:
            raise CoordinateError(f"the {what} table lacks the column(s) {', '.join(sorted(missing))}")
    pick_scores = picks["score"].to_numpy(dtype=np.float64)
    nan = np.isnan(pick_scores)
    if nan.any() and not nan.all():
        raise CoordinateError(f"{int(nan.sum())} of {len(nan)} picks have no score; score all picks or none")
    if nan.all() and len(nan):
        picks = picks.assign(score=1.0)
    if micrographs is None:
        names = list(dict.fromkeys([*references["micrograph"], *picks["micrograph"]]))
    else:
        names = list(dict.fromkeys(str(m) for m in micrographs))
    pick_groups = dict(tuple(picks.groupby("micrograph", sort=False)))
    ref_groups = dict(tuple(references.groupby("micrograph", sort=False)))
    parts, n_refs = [], 0
    for name in names:
        p = pick_groups.get(name)
        r = ref_groups.get(name)
        ref_xy = r[["x", "y"]].to_numpy(dtype=np.float64) if r is not None else np.empty((0, 2))
        n_refs += len(ref_xy)
        if p is None:
            continue
        xy, score = p[["x", "y"]].to_numpy(dtype=np.float64), p["score"].to_numpy(dtype=np.float64)
        m = match_picks(xy, score, ref_xy, max_dist)
        by_iou = match_picks_iou(xy, score, ref_xy, box_px, min_iou)
        iou = np.full(len(by_iou.tp), np.nan)
        iou[by_iou.tp] = box_iou(ref_xy[by_iou.ref_index[by_iou.tp]] - xy[by_iou.order[by_iou.tp]], box_px)
        parts.append((m.scores, m.tp, m.distance_px, np.full(len(m.tp), name, dtype=object), by_iou.tp, iou))
    if n_refs == 0:
        raise CoordinateError("there are no reference particles in the evaluated micrographs; "
                              "check the reference coordinates and micrograph names")
    if parts:
        scores, tp, dist, mics, tp_iou, iou = (np.concatenate(a) for a in zip(*parts))
    else:
        scores, tp, dist, mics = np.empty(0), np.empty(0, bool), np.empty(0), np.empty(0, object)
        tp_iou, iou = np.empty(0, bool), np.empty(0)
    # per-micrograph lists are ranked alike under both criteria: one stable pooling serves both
    order = np.argsort(-scores, kind="stable")
    scores, tp, dist, mics, tp_iou, iou = (a[order] for a in (scores, tp, dist, mics, tp_iou, iou))

    kept = np.ones(len(scores), dtype=bool) if threshold is None else scores >= threshold
    n_picks, n_tp = int(kept.sum()), int(tp[kept].sum())
    precision = n_tp / n_picks if n_picks else 0.0
    recall = n_tp / n_refs
    matched = dist[kept & tp]
    n_tp_iou = int(tp_iou[kept].sum())
    best_t, best_f = best_threshold(scores, tp, n_refs, beta)
    return Evaluation(
        precision=float(precision), recall=float(recall),
        f1=fbeta_score(precision, recall, 1.0), f2=fbeta_score(precision, recall, 2.0),
        fbeta=fbeta_score(precision, recall, beta), beta=float(beta),
        threshold=None if threshold is None else float(threshold),
        ap=average_precision(scores, tp, n_refs), best_threshold=best_t, best_fbeta=best_f,
        centre_error_box=float(matched.mean() / box_px) if matched.size else math.nan,
        n_picks=n_picks, n_tp=n_tp, n_refs=int(n_refs), n_micrographs=len(names),
        box_px=float(box_px), max_dist_px=max_dist,
        scores=scores, tp=tp, distance_px=dist, micrograph=mics,
        truncated_at=threshold if threshold is not None and len(scores) and scores.min() >= threshold else None,
        min_iou=float(min_iou), precision_iou=n_tp_iou / n_picks if n_picks else 0.0, recall_iou=n_tp_iou / n_refs,
        ap_iou=average_precision(scores, tp_iou, n_refs),
        mean_iou=float(iou[kept & tp_iou].mean()) if n_tp_iou else math.nan, auroc=auroc(scores, tp),
    )
