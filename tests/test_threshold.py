"""Tests of deeppick.threshold: the F-beta-optimal threshold and its exact reproduction by a score cut."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeppick.errors import CoordinateError
from deeppick.io import concat_picks, make_picks
from deeppick.metrics import evaluate_picks, fbeta_score
from deeppick.threshold import choose_threshold, threshold_from_picks


def test_choose_threshold_by_hand():
    scores, tp = [0.9, 0.8, 0.3, 0.2], [True, True, False, True]
    # F2 at 0.9, 0.8, 0.3, 0.2: 0.2941, 0.5556, 0.5263, 0.75
    assert choose_threshold((scores, tp, 4), beta=2) == (0.2, pytest.approx(0.75))
    # F0.5 weighs precision: stopping at 0.8 (P=1, R=0.5) is better than 0.2 (P=R=0.75)
    assert choose_threshold((scores, tp, 4), beta=0.5) == (0.8, pytest.approx(fbeta_score(1, 0.5, 0.5)))


def test_ties_are_kept_or_dropped_together():
    # a false pick tied with a true one: a cut cannot take the true one alone
    scores, tp = [0.9, 0.5, 0.5], [True, False, True]
    t, f = choose_threshold((scores, tp, 2), beta=2)
    assert t == 0.5 and f == pytest.approx(fbeta_score(2 / 3, 1.0, 2))
    t, f = choose_threshold((scores, tp, 2), beta=0.1)
    assert t == 0.9 and f == pytest.approx(fbeta_score(1.0, 0.5, 0.1))


def test_equal_optima_take_the_highest_threshold():
    # F1 is 2/3 both at 0.9 (P=1, R=1/2) and at 0.3 (P=1/2, R=1): the fewer picks win
    scores, tp = [0.9, 0.7, 0.5, 0.3], [True, False, False, True]
    assert choose_threshold((scores, tp, 2), beta=1) == (0.9, pytest.approx(2 / 3))
    t, f = choose_threshold(([0.7, 0.7], [False, False], 3))
    assert t == math.inf and f == 0.0


def test_unpicked_references_count():
    scores, tp = [0.9, 0.8, 0.7, 0.6], [True, False, True, True]
    t_all, f_all = choose_threshold((scores, tp, 3))
    t_missed, f_missed = choose_threshold((scores, tp, 10))  # seven references never picked
    assert f_missed < f_all
    assert f_missed == pytest.approx(fbeta_score(3 / 4, 3 / 10, 2))
    assert t_missed == 0.6


def test_evaluation_and_tuple_agree():
    refs = make_picks("m", [10, 100, 200], [10, 100, 200])
    picks = make_picks("m", [11, 100, 300, 200], [10, 101, 300, 205], [0.9, 0.7, 0.8, 0.2])
    ev = evaluate_picks(picks, refs, box_px=50)
    assert choose_threshold(ev) == choose_threshold((ev.scores, ev.tp, ev.n_refs)) == (
        ev.best_threshold, ev.best_fbeta)
    assert threshold_from_picks(picks, refs, box_px=50) == choose_threshold(ev)
    with pytest.raises(CoordinateError):
        threshold_from_picks(picks, refs.iloc[:0], box_px=50)


@st.composite
def labelled_tables(draw):
    """Up to 3 micrographs; references on a coarse grid, picks near them or random, coarse scores (ties)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    refs, picks = [], []
    for name in ("m0", "m1", "m2")[: draw(st.integers(1, 3))]:
        n_ref = draw(st.integers(0, 12))
        ref_xy = rng.uniform(0, 1000, size=(n_ref, 2))
        refs.append(make_picks(name, ref_xy[:, 0], ref_xy[:, 1]))
        n_near, n_far = draw(st.integers(0, 12)), draw(st.integers(0, 8))
        near = ref_xy[rng.integers(0, max(n_ref, 1), n_near)] + rng.normal(0, 8, (n_near, 2)) if n_ref else \
            np.empty((0, 2))
        far = rng.uniform(0, 1000, size=(n_far, 2))
        xy = np.vstack([near, far])
        scores = rng.integers(0, 6, len(xy)) / 5  # few distinct values: many ties
        picks.append(make_picks(name, xy[:, 0], xy[:, 1], scores))
    return concat_picks(picks), concat_picks(refs)


@settings(max_examples=40, deadline=None)
@given(tables=labelled_tables(), beta=st.sampled_from([0.5, 1.0, 2.0]))
def test_cut_at_threshold_reproduces_the_optimum(tables, beta):
    picks, refs = tables
    if len(refs) == 0:
        return
    names = sorted(set(refs["micrograph"]) | set(picks["micrograph"]))
    t, f = threshold_from_picks(picks, refs, box_px=100, beta=beta, micrographs=names)
    if math.isinf(t):
        assert f == 0.0
        return
    cut = evaluate_picks(picks[picks["score"] >= t], refs, box_px=100, beta=beta, micrographs=names)
    assert cut.fbeta == pytest.approx(f, abs=1e-12)
    # no other cut does better, each re-matched from scratch
    for other in np.unique(picks["score"]):
        alt = evaluate_picks(picks[picks["score"] >= other], refs, box_px=100, beta=beta, micrographs=names)
        assert alt.fbeta <= f + 1e-12
