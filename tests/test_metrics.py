"""Tests of deeppick.metrics: the one matching rule, curves, AP and the evaluation of picks tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve

from deeppick.errors import ConfigError, CoordinateError
from deeppick.io import concat_picks, make_picks
from deeppick.metrics import (
    auroc,
    average_precision,
    box_iou,
    evaluate_picks,
    fbeta_score,
    match_distance_px,
    match_picks,
    match_picks_iou,
    precision_recall_curve,
)


def naive_greedy(pred_xy, scores, ref_xy, max_dist):
    """Reference matching written the obvious O(N·M) way: best score first, nearest free reference."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    free = set(range(len(ref_xy)))
    pairs = {}
    for i in order:
        best, best_d = None, None
        for j in sorted(free):
            d = math.dist(pred_xy[i], ref_xy[j])
            if d <= max_dist and (best_d is None or d < best_d):
                best, best_d = j, d
        if best is not None:
            pairs[i] = best
            free.discard(best)
    return pairs


# --- matching ----------------------------------------------------------------------------------------


def test_match_is_one_to_one_in_descending_score():
    # two picks near one reference: the better-scored takes it even though it is farther
    m = match_picks([[0, 0], [3, 0]], [0.6, 0.9], [[1, 0]], max_dist_px=2.5)
    assert m.order.tolist() == [1, 0]
    assert m.scores.tolist() == [0.9, 0.6]
    assert m.tp.tolist() == [True, False]
    assert m.ref_index.tolist() == [0, -1]
    assert m.distance_px[0] == pytest.approx(2.0) and np.isnan(m.distance_px[1])
    assert m.tp_in_input_order().tolist() == [False, True]
    assert m.n_tp == 1 and m.n_refs == 1


def test_match_takes_nearest_free_reference_and_distance_is_inclusive():
    m = match_picks([[0, 0], [10, 0]], [0.9, 0.8], [[2, 0], [1, 0], [12, 0]], max_dist_px=2)
    assert m.ref_index.tolist() == [1, 2]
    m = match_picks([[0, 0]], [1.0], [[3, 4]], max_dist_px=5.0)
    assert m.tp.tolist() == [True] and m.distance_px[0] == 5.0
    assert not match_picks([[0, 0]], [1.0], [[3, 4]], max_dist_px=4.999).tp.any()


def test_match_empty_sides_and_bad_input():
    m = match_picks(np.empty((0, 2)), [], [[1, 1]], 5)
    assert m.tp.size == 0 and m.n_refs == 1
    m = match_picks([[1, 1], [2, 2]], [0.1, 0.2], np.empty((0, 2)), 5)
    assert m.tp.tolist() == [False, False] and m.ref_index.tolist() == [-1, -1]
    with pytest.raises(ValueError):
        match_picks([[1, 1]], [0.1, 0.2], [[1, 1]], 5)
    with pytest.raises(ValueError):
        match_picks([1, 1, 1], [0.1, 0.2, 0.3], [[1, 1]], 5)
    with pytest.raises(ConfigError):
        match_picks([[1, 1]], [0.1], [[1, 1]], -1)


def test_nan_scores_rank_last():
    m = match_picks([[0, 0], [0.5, 0]], [np.nan, 0.1], [[0, 0]], 1.0)
    assert m.order.tolist() == [1, 0]
    assert m.tp.tolist() == [True, False]


points = st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50)), max_size=25)


@settings(max_examples=60, deadline=None)
@given(pred=points, ref=points, max_dist=st.floats(0, 15), seed=st.integers(0, 2**16))
def test_matching_invariants(pred, ref, max_dist, seed):
    rng = np.random.default_rng(seed)
    scores = rng.permutation(len(pred)).astype(float)  # distinct scores: the order is well defined
    pred_xy = np.array(pred, dtype=float).reshape(-1, 2)
    ref_xy = np.array(ref, dtype=float).reshape(-1, 2)
    m = match_picks(pred_xy, scores, ref_xy, max_dist)
    assert np.all(np.diff(m.scores) <= 0)
    matched = m.ref_index[m.tp]
    assert len(set(matched.tolist())) == len(matched)  # one-to-one
    assert m.n_tp <= min(len(pred), len(ref))
    assert np.all(m.distance_px[m.tp] <= max_dist)
    np.testing.assert_allclose(m.distance_px[m.tp],
                               np.hypot(*(pred_xy[m.order[m.tp]] - ref_xy[matched]).T))
    assert {int(m.order[k]): int(m.ref_index[k]) for k in np.flatnonzero(m.tp)} == naive_greedy(
        pred_xy.tolist(), scores.tolist(), ref_xy.tolist(), max_dist)
    # the input order of the picks does not change who matches whom
    perm = rng.permutation(len(pred))
    m2 = match_picks(pred_xy[perm], scores[perm], ref_xy, max_dist)
    assert {int(perm[m2.order[k]]): int(m2.ref_index[k]) for k in np.flatnonzero(m2.tp)} == {
        int(m.order[k]): int(m.ref_index[k]) for k in np.flatnonzero(m.tp)}


def test_box_iou_is_the_overlap_of_two_drawn_squares():
    box = 40
    rng = np.random.default_rng(3)
    for dx, dy in rng.uniform(-45, 45, size=(20, 2)).round():
        a = np.zeros((200, 200), bool)
        b = np.zeros((200, 200), bool)
        a[80:80 + box, 80:80 + box] = True
        b[80 + int(dy):80 + int(dy) + box, 80 + int(dx):80 + int(dx) + box] = True
        assert box_iou([[dx, dy]], box)[0] == pytest.approx((a & b).sum() / (a | b).sum())


def naive_greedy_iou(pred_xy, scores, ref_xy, box, min_iou):
    """IoU matching the obvious way: best score first, the free reference of highest IoU above min_iou."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    free = set(range(len(ref_xy)))
    pairs = {}
    for i in order:
        best, best_iou = None, min_iou
        for j in sorted(free):
            iou = box_iou([np.subtract(ref_xy[j], pred_xy[i])], box)[0]
            if iou > best_iou:
                best, best_iou = j, iou
        if best is not None:
            pairs[i] = best
            free.discard(best)
    return pairs


@settings(max_examples=60, deadline=None)
@given(pred=points, ref=points, box=st.floats(2, 40), min_iou=st.floats(0, 0.95), seed=st.integers(0, 2**16))
def test_iou_matching_invariants(pred, ref, box, min_iou, seed):
    rng = np.random.default_rng(seed)
    scores = rng.permutation(len(pred)).astype(float)
    pred_xy = np.array(pred, dtype=float).reshape(-1, 2)
    ref_xy = np.array(ref, dtype=float).reshape(-1, 2)
    m = match_picks_iou(pred_xy, scores, ref_xy, box, min_iou)
    matched = m.ref_index[m.tp]
    assert len(set(matched.tolist())) == len(matched)
    assert np.all(box_iou(ref_xy[matched] - pred_xy[m.order[m.tp]], box) > min_iou)
    assert {int(m.order[k]): int(m.ref_index[k]) for k in np.flatnonzero(m.tp)} == naive_greedy_iou(
        pred_xy.tolist(), scores.tolist(), ref_xy.tolist(), box, min_iou)


def test_iou_criterion_is_stricter_diagonally_than_a_distance():
    # 0.2 box along an axis passes both; the same distance along the diagonal fails IoU > 0.6 only
    along, diagonal = [[20.0, 0.0]], [[20 / math.sqrt(2), 20 / math.sqrt(2)]]
    assert match_picks_iou(along, [1.0], [[0.0, 0.0]], 100).tp.all()
    assert not match_picks_iou(diagonal, [1.0], [[0.0, 0.0]], 100).tp.any()
    assert match_picks(diagonal, [1.0], [[0.0, 0.0]], 20).tp.all()
    with pytest.raises(ConfigError):
        match_picks_iou(along, [1.0], [[0.0, 0.0]], 100, min_iou=1.0)


@settings(max_examples=50, deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=40))
def test_auroc_agrees_with_sklearn(data):
    scores = np.array([s / 6 for s, _ in data])
    tp = np.array([f for _, f in data])
    if tp.all() or not tp.any():
        assert math.isnan(auroc(scores, tp))
    else:
        assert auroc(scores, tp) == pytest.approx(roc_auc_score(tp, scores))


# --- curves and AP ------------------------------------------------------------------------------------


def test_curve_groups_ties_and_counts_unpicked_references():
    t, p, r = precision_recall_curve([0.9, 0.8, 0.8, 0.5, 0.1], [True, False, True, False, True], n_refs=5)
    assert t.tolist() == [0.9, 0.8, 0.5, 0.1]
    np.testing.assert_allclose(p, [1, 2 / 3, 2 / 4, 3 / 5])
    np.testing.assert_allclose(r, [1 / 5, 2 / 5, 2 / 5, 3 / 5])
    ap = average_precision([0.9, 0.8, 0.8, 0.5, 0.1], [True, False, True, False, True], n_refs=5)
    assert ap == pytest.approx(0.2 * 1 + 0.2 * 2 / 3 + 0 + 0.2 * 3 / 5)
    assert average_precision([], [], 3) == 0.0
    for bad in (([0.1, 0.9], [True, True], 2), ([0.9], [True, False], 2), ([0.9, 0.1], [True, True], 1),
                ([np.nan], [True], 1)):
        with pytest.raises(ValueError):
            precision_recall_curve(*bad)
    with pytest.raises(CoordinateError):
        precision_recall_curve([0.9], [False], 0)


@settings(max_examples=50, deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=40),
       extra_refs=st.integers(0, 5))
def test_curve_and_ap_agree_with_sklearn(data, extra_refs):
    scores = np.array(sorted((s / 6 for s, _ in data), reverse=True))
    tp = np.array([f for _, f in sorted(data, key=lambda d: -d[0])])
    n_tp = int(tp.sum())
    if n_tp == 0:
        return
    # with every reference reached, our curve and AP are sklearn's
    t, p, r = precision_recall_curve(scores, tp, n_tp)
    sk_p, sk_r, sk_t = sk_precision_recall_curve(tp, scores, drop_intermediate=False)
    keep = np.isin(sk_t, t)
    assert keep.sum() == len(t)
    np.testing.assert_allclose(p[::-1], sk_p[:-1][keep])
    np.testing.assert_allclose(r[::-1], sk_r[:-1][keep])
    ap = average_precision(scores, tp, n_tp)
    assert ap == pytest.approx(average_precision_score(tp, scores))
    # references never picked scale recall, and so AP, down
    assert average_precision(scores, tp, n_tp + extra_refs) == pytest.approx(ap * n_tp / (n_tp + extra_refs))
    assert 0 <= ap <= 1


def test_fbeta_score():
    assert fbeta_score(0.5, 0.5, 2) == pytest.approx(0.5)
    assert fbeta_score(1.0, 0.5, 2) == pytest.approx(5 * 0.5 / (4 + 0.5))
    assert fbeta_score(1.0, 0.5, 1) == pytest.approx(2 / 3)
    assert fbeta_score(0.0, 0.0, 2) == 0.0
    np.testing.assert_allclose(fbeta_score(np.array([0, 1.0]), np.array([0, 1.0])), [0, 1])
    with pytest.raises(ConfigError):
        fbeta_score(0.5, 0.5, 0)


# --- evaluation of picks tables -------------------------------------------------------------------------


@pytest.fixture
def labelled(rng):
    """Three micrographs of 20 references (box 100 px); picks hit 15 of each at 5 px with high scores,
    add 5 false picks with low scores; micrograph c has references but no picks."""
    refs, picks = [], []
    for name in ("a", "b", "c"):
        xy = np.column_stack([np.arange(20) * 150.0 + 100, np.full(20, 300.0)])
        refs.append(make_picks(name, xy[:, 0], xy[:, 1]))
        if name == "c":
            continue
        hit = xy[:15] + [3.0, 4.0]  # 5 px off
        false = np.column_stack([np.arange(5) * 150.0 + 100, np.full(5, 900.0)])
        picks.append(make_picks(name, np.r_[hit[:, 0], false[:, 0]], np.r_[hit[:, 1], false[:, 1]],
                                np.r_[rng.uniform(0.6, 1.0, 15), rng.uniform(0.1, 0.5, 5)]))
    return concat_picks(picks), concat_picks(refs)


def test_evaluate_counts_pools_and_reports(labelled):
    picks, refs = labelled
    ev = evaluate_picks(picks, refs, box_px=100)
    assert (ev.n_picks, ev.n_tp, ev.n_refs, ev.n_micrographs) == (40, 30, 60, 3)
    assert ev.precision == pytest.approx(30 / 40) and ev.recall == pytest.approx(30 / 60)
    assert ev.f1 == pytest.approx(fbeta_score(0.75, 0.5, 1)) and ev.f2 == pytest.approx(fbeta_score(0.75, 0.5, 2))
    assert ev.fbeta == ev.f2 and ev.beta == 2
    assert ev.centre_error_box == pytest.approx(0.05)
    assert ev.max_dist_px == 20.0
    # every true pick outscores every false one: AP is the recall reached, at precision 1
    assert ev.ap == pytest.approx(0.5)
    assert ev.best_threshold == pytest.approx(picks["score"][picks["score"] > 0.55].min())
    assert ev.best_fbeta == pytest.approx(fbeta_score(1.0, 0.5, 2))
    assert np.all(np.diff(ev.scores) <= 0) and len(ev.scores) == 40 and ev.tp.sum() == 30
    json.dumps(ev.to_dict())
    # IoU of a 5 px offset (3, 4) in a 100 px box; every hit passes IoU > 0.6 and true picks outscore false
    iou = box_iou([[3.0, 4.0]], 100)[0]
    assert (ev.precision_iou, ev.recall_iou, ev.ap_iou) == (ev.precision, ev.recall, ev.ap)
    assert ev.mean_iou == pytest.approx(iou) and ev.auroc == 1.0
    small = evaluate_picks(picks, refs, box_px=20, match_px=5)  # 5 px passes the distance, not IoU > 0.6
    assert small.n_tp == 30 and small.recall_iou == 0 and math.isnan(small.mean_iou)
    at = evaluate_picks(picks, refs, box_px=100, threshold=0.55)
    assert (at.n_picks, at.precision, at.threshold) == (30, 1.0, 0.55)
    assert at.ap == ev.ap  # AP uses the whole ranked list


def test_evaluate_match_distance(labelled):
    picks, refs = labelled
    assert evaluate_picks(picks, refs, box_px=20).n_tp == 0  # 5 px > 0.2 × 20
    assert evaluate_picks(picks, refs, box_px=20, match_px=5).n_tp == 30
    assert evaluate_picks(picks, refs, box_px=100, match_fraction=0.04).n_tp == 0
    assert match_distance_px(100) == 20 and match_distance_px(100, match_px=7) == 7
    with pytest.raises(ConfigError):
        evaluate_picks(picks, refs, box_px=0)
    with pytest.raises(ConfigError):
        match_distance_px(100, match_px=-1)


def test_evaluate_matches_within_each_micrograph():
    refs = make_picks(["a", "b"], [10, 500], [10, 500])
    picks = make_picks(["b", "a"], [10, 500], [10, 500], [0.9, 0.8])  # right places, wrong micrographs
    ev = evaluate_picks(picks, refs, box_px=50)
    assert ev.n_tp == 0 and ev.precision == 0 and ev.recall == 0 and math.isnan(ev.centre_error_box)
    assert ev.best_threshold == math.inf and ev.best_fbeta == 0
    assert ev.to_dict()["best_threshold"] is None


def test_evaluate_micrograph_selection_and_scoring_rules(labelled):
    picks, refs = labelled
    only_a = evaluate_picks(picks, refs, box_px=100, micrographs=["a"])
    assert (only_a.n_refs, only_a.n_picks, only_a.n_tp) == (20, 20, 15)
    extra = concat_picks([picks, make_picks("unlabelled", [1, 2], [1, 2], [0.99, 0.98])])
    assert evaluate_picks(extra, refs, box_px=100).n_picks == 42  # named picks count as false
    unscored = picks.assign(score=np.nan)
    ev = evaluate_picks(unscored, refs, box_px=100)
    assert (ev.n_picks, ev.n_tp) == (40, 30) and ev.ap == pytest.approx(0.75 * 0.5)
    with pytest.raises(CoordinateError):
        evaluate_picks(picks.assign(score=np.r_[np.nan, picks["score"][1:]]), refs, box_px=100)
    with pytest.raises(CoordinateError):
        evaluate_picks(picks, refs.iloc[:0], box_px=100)
    with pytest.raises(CoordinateError):
        evaluate_picks(picks.drop(columns="score"), refs, box_px=100)
    empty = evaluate_picks(picks.iloc[:0], refs, box_px=100)
    assert (empty.n_picks, empty.recall, empty.precision, empty.ap) == (0, 0.0, 0.0, 0.0)
