"""Choosing the score threshold a model picks with: the F-beta optimum on held-out micrographs.

DeepEM chooses the threshold that maximises F2 (recall weighted over precision: a missed particle costs
more than a false pick that 2-D classification will remove). The optimum is taken over the pooled
ranked list of all held-out micrographs, matched by the one matching rule of :mod:`deeppick.metrics`,
and counts references that no pick reached. The pipeline stores the result in the model file.

Keeping the picks with ``score >= threshold`` reproduces exactly the returned F-beta, because the
matching is greedy in descending score (the matches of a kept pick never depend on dropped picks) and
ties in score are kept or dropped together.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from .metrics import BETA, MATCH_FRACTION, Evaluation, best_threshold, evaluate_picks


def choose_threshold(ranked, beta: float = BETA) -> tuple[float, float]:
    """F-beta-optimal score threshold of a pooled ranked list.

    Parameters
    ----------
    ranked
        An :class:`~deeppick.metrics.Evaluation`, or a tuple ``(scores, tp, n_refs)``: scores in
        descending order, the true-positive flag of each pick, and the number of references (including
        references never picked).
    beta
        Weight of recall over precision (2: DeepEM).

    Returns
    -------
    threshold : float
        Keep picks with ``score >= threshold``; ``inf`` when no pick matches a reference. Of equal
        optima, the highest threshold.
    fbeta : float
        The F-beta those picks reach.

    Example
    -------
    >>> choose_threshold(([0.9, 0.8, 0.3, 0.2], [True, True, False, True], 4), beta=2)
    (0.2, 0.75)
    """
    if isinstance(ranked, Evaluation):
        scores, tp, n_refs = ranked.scores, ranked.tp, ranked.n_refs
    else:
        scores, tp, n_refs = ranked
    return best_threshold(scores, tp, n_refs, beta)


def threshold_from_picks(picks: pd.DataFrame, references: pd.DataFrame, box_px: float,
                         *, match_fraction: float = MATCH_FRACTION, match_px: float | None = None,
                         beta: float = BETA, micrographs: Iterable[str] | None = None) -> tuple[float, float]:
    """F-beta-optimal threshold of scored picks on labelled micrographs (see :func:`choose_threshold`).

    Parameters are those of :func:`deeppick.metrics.evaluate_picks`: ``picks`` holds every candidate
    (no threshold applied), ``references`` the labelled particles, ``box_px`` the box in micrograph px.
    """
    evaluation = evaluate_picks(picks, references, box_px, match_fraction=match_fraction, match_px=match_px,
                                beta=beta, micrographs=micrographs)
    return choose_threshold(evaluation, beta)
