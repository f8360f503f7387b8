"""Tests of deeppick.postprocess: cleaning, peaks, pixel filters, top-N."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deeppick.errors import ConfigError, DeepPickError, MicrographError
from deeppick.io import make_picks
from deeppick.postprocess import (
    PostprocessConfig,
    clean_score_map,
    edge_mask,
    extreme_pixel_mask,
    find_peaks,
    learn_edge_margin,
    rank_with_disc,
    sort_picks,
    top_n,
)


def gaussian_map(shape, centres, sigma=2.0, heights=None):
    """Score map with Gaussian bumps at sub-pixel ``(row, col)`` centres."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    out = np.zeros(shape)
    heights = heights if heights is not None else [0.9] * len(centres)
    for (r, c), h in zip(centres, heights):
        out = np.maximum(out, h * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2)))
    return out


# --- config ----------------------------------------------------------------------------------------


def test_config_defaults_round_trip_and_validation():
    config = PostprocessConfig()
    assert (config.score_threshold, config.max_area_factor, config.peak_window_box, config.extreme_sd) == (
        0.5, 4.0, 0.8, 3.0)
    changed = PostprocessConfig(sd_range=[0.5, 2], top_n=10)
    assert changed.sd_range == (0.5, 2.0)
    assert PostprocessConfig.from_dict(changed.to_dict()) == changed
    assert PostprocessConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    with pytest.raises(AttributeError):
        config.top_n = 3  # frozen
    for bad in ({"score_threshold": 1.5}, {"max_area_factor": 0}, {"peak_window_box": -1},
                {"sd_range": (2, 1)}, {"sd_range": "x"}, {"top_n": -1}, {"max_extreme_fraction": 2},
                {"disc_rank_diameter_box": 0}, {"disc_centre_radius_box": 0.2},
                {"disc_rank_diameter_box": 1.0, "disc_centre_radius_box": -0.1}):
        with pytest.raises(ConfigError):
            PostprocessConfig(**bad)


# --- cleaning ----------------------------------------------------------------------------------------


def test_clean_removes_regions_over_four_times_mean_area():
    scores = gaussian_map((120, 120), [(10, 10 + 15 * i) for i in range(7)] + [(40, 10 + 15 * i) for i in range(7)])
    scores[70:115, 20:110] = 0.95  # a sheet of ice lighting up a big region
    before = scores.copy()
    cleaned = clean_score_map(scores)
    np.testing.assert_array_equal(scores, before)  # the input is untouched
    assert cleaned.dtype == scores.dtype
    assert np.all(cleaned[70:115, 20:110] == 0)
    np.testing.assert_array_equal(cleaned[:60], scores[:60])  # the particle blobs survive


def test_clean_keeps_region_below_the_factor_and_can_be_disabled():
    scores = gaussian_map((60, 60), [(10, 10), (10, 40), (40, 10)])
    scores[35:45, 35:45] = 0.9  # about 2-3× a blob's area: not over 4× the mean
    np.testing.assert_array_equal(clean_score_map(scores), scores)
    big = gaussian_map((200, 200), [(10, 10 + 12 * i) for i in range(15)])
    big[100:200, 0:200] = 0.9
    assert clean_score_map(big).max() > 0
    np.testing.assert_array_equal(clean_score_map(big, max_area_factor=None), big)
    np.testing.assert_array_equal(clean_score_map(np.zeros((5, 5))), np.zeros((5, 5)))
    with pytest.raises(ConfigError):
        clean_score_map(big, max_area_factor=-1)


def test_clean_threshold_defines_regions():
    scores = np.zeros((50, 50))
    scores[5:8, :48] = np.tile([0.9, 0.9, 0.9, 0, 0, 0], 8)  # eight 3×3 blobs
    scores[30:50, 0:50] = 0.3  # a large region, but below the 0.5 threshold: not a region
    np.testing.assert_array_equal(clean_score_map(scores), scores)
    assert np.all(clean_score_map(scores, threshold=0.2)[30:50] == 0)


# --- peaks --------------------------------------------------------------------------------------------


def test_find_peaks_refines_to_sub_pixel_positions():
    rng = np.random.default_rng(0)
    truth = [(20 + 30 * i + rng.uniform(-0.5, 0.5), 20 + 30 * j + rng.uniform(-0.5, 0.5))
             for i in range(4) for j in range(4)]
    scores = gaussian_map((140, 140), truth, sigma=3.0, heights=list(np.linspace(0.6, 0.99, 16)))
    rows, cols, values = find_peaks(scores, window_grid=10, min_score=0.5)
    assert len(rows) == 16
    assert np.all(np.diff(values) <= 0)
    found = np.column_stack([rows, cols])
    truth = np.array(truth)
    nearest = np.array([np.min(np.hypot(*(found - t).T)) for t in truth])
    integer_error = np.array([np.min(np.hypot(*(np.rint(found) - t).T)) for t in truth])
    assert nearest.max() < 0.1  # a parabola is close to a Gaussian's top
    assert nearest.mean() < integer_error.mean() / 3


def test_find_peaks_window_and_min_score():
    scores = np.zeros((60, 60))
    scores[20, 20] = 0.9
    scores[20, 23] = 0.8  # 3 cells away: inside the same window of 8
    scores[20, 40] = 0.7  # 20 cells away: its own window
    scores[50, 50] = 0.4  # below min_score
    rows, cols, values = find_peaks(scores, window_grid=8, min_score=0.5)
    assert values.tolist() == [0.9, 0.7]
    assert rows.tolist() == [20.0, 20.0] and cols.tolist() == [20.0, 40.0]
    _, _, low = find_peaks(scores, window_grid=8, min_score=0.3)
    assert low.tolist() == [0.9, 0.7, 0.4]
    _, _, small = find_peaks(scores, window_grid=2, min_score=0.5)
    assert small.tolist() == [0.9, 0.8, 0.7]
    with pytest.raises(ConfigError):
        find_peaks(scores, window_grid=0.5)


def test_find_peaks_on_a_plateau_keeps_spacing():
    scores = np.zeros((40, 40))
    scores[10:30, 10:30] = 1.0  # a saturated plateau: many equal maxima
    rows, cols, _ = find_peaks(scores, window_grid=6, min_score=0.5)
    d = np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None])
    assert len(rows) >= 1
    assert np.all(d[np.triu_indices(len(rows), 1)] >= 3)


def test_find_peaks_empty_and_border():
    rows, cols, values = find_peaks(np.zeros((10, 10)), window_grid=3)
    assert rows.size == cols.size == values.size == 0
    scores = np.zeros((10, 10))
    scores[0, 9] = 0.9
    scores[1, 9] = 0.6
    rows, cols, _ = find_peaks(scores, window_grid=3)
    assert cols.tolist() == [9.0]  # no neighbour beyond the border: no shift along x
    assert rows.tolist() == [0.0]


@settings(max_examples=40, deadline=None)
@given(scores=arrays(np.float64, st.tuples(st.integers(3, 24), st.integers(3, 24)),
                     elements=st.sampled_from([0.0, 0.2, 0.5, 0.7, 0.9, 1.0]) | st.floats(0, 1)),
       window=st.floats(1, 9), min_score=st.floats(0, 1))
def test_find_peaks_properties(scores, window, min_score):
    rows, cols, values = find_peaks(scores, window_grid=window, min_score=min_score)
    assert np.all(np.diff(values) <= 0)
    assert np.all(values >= min_score)
    # the peak's cell is within half a cell of the refined position (either neighbour at exactly 0.5)
    lo_r, hi_r = np.ceil(rows - 0.5).astype(int), np.floor(rows + 0.5).astype(int)
    lo_c, hi_c = np.ceil(cols - 0.5).astype(int), np.floor(cols + 0.5).astype(int)
    assert np.all(hi_r - lo_r <= 1) and np.all(hi_c - lo_c <= 1)
    half = int(window // 2)
    for k in range(len(values)):
        cells = [(r, c) for r in {lo_r[k], hi_r[k]} for c in {lo_c[k], hi_c[k]} if scores[r, c] == values[k]]
        assert cells, "the reported score is not that of a cell within half a cell"
        # On a plateau the refined position can sit halfway between equal cells: one of them is the peak,
        # and the peak is the maximum of its window.
        assert any(values[k] == scores[max(r - half, 0): r + half + 1, max(c - half, 0): c + half + 1].max()
                   for r, c in cells)
    d = np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None])
    assert np.all(d[np.triu_indices(len(rows), 1)] >= window / 2)
    if scores.max() >= min_score:
        assert len(values) >= 1 and values[0] == scores.max()


# --- pixel filters ----------------------------------------------------------------------------------


@pytest.fixture
def micrograph(rng):
    """A 400×400 noisy micrograph with weak particles, a black ice blob, a bright speck of dirt and a flat
    thick-ice patch."""
    image = rng.normal(10.0, 2.0, size=(400, 400))
    yy, xx = np.mgrid[:400, :400]
    for cx, cy in [(60, 60), (160, 60), (60, 160), (300, 300)]:  # particles: contrast ~0.7 SD, box 48
        image -= 1.4 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 12.0**2))
    image[(xx - 300) ** 2 + (yy - 80) ** 2 < 20**2] = -15.0  # black ice blob (~12 SD below)
    image[(xx - 80) ** 2 + (yy - 300) ** 2 < 13**2] = 40.0  # bright dirt, ~23 % of a 48-px box
    image[180:260, 180:260] = rng.normal(10.0, 0.3, size=(80, 80))  # flat: low SD
    return image.astype(np.float32)


def test_extreme_pixels_drop_ice_and_dirt_keep_particles(micrograph):
    x = [60, 160, 60, 300, 300, 80]
    y = [60, 60, 160, 300, 80, 300]
    keep = extreme_pixel_mask(micrograph, x, y, box_px=48)
    assert keep.tolist() == [True, True, True, True, False, False]


def test_extreme_pixels_keep_pure_noise(rng):
    image = rng.normal(size=(300, 300)).astype(np.float32)
    x, y = rng.uniform(0, 300, 200), rng.uniform(0, 300, 200)
    assert extreme_pixel_mask(image, x, y, box_px=40).all()
    # the literal reading (any pixel beyond 3 SD) would drop nearly all of them
    assert extreme_pixel_mask(image, x, y, box_px=40, max_extreme_fraction=0).mean() < 0.1


def test_smaller_dirt_needs_a_smaller_fraction(micrograph):
    image = micrograph.copy()
    yy, xx = np.mgrid[:400, :400]
    image[(xx - 160) ** 2 + (yy - 60) ** 2 < 8**2] = 40.0  # a speck covering ~9 % of the box, on a particle
    assert extreme_pixel_mask(image, [160], [60], box_px=48).tolist() == [True]
    assert extreme_pixel_mask(image, [160], [60], box_px=48, max_extreme_fraction=0.05).tolist() == [False]


@pytest.mark.parametrize("pack", ["betagal-10017", "ribosome80s-10028"])
def test_real_reference_particles_survive_the_pixel_filter(realdata, pack):
    import json

    from deeppick.io import read_micrograph, read_picks

    box_px = json.loads((realdata / pack / "dataset.json").read_text())["diameter_px"]
    kept = total = 0
    for mic in sorted((realdata / pack / "micrographs").iterdir())[:3]:
        picks = read_picks(realdata / pack / "coords" / f"{mic.stem}.star")
        keep = extreme_pixel_mask(read_micrograph(mic), picks["x"], picks["y"], box_px)
        kept, total = kept + int(keep.sum()), total + len(keep)
    assert total > 100 and kept / total >= 0.99


def test_sd_range_filter(micrograph):
    x, y = [60, 220, 160], [60, 220, 60]
    assert extreme_pixel_mask(micrograph, x, y, box_px=48).tolist() == [True, True, True]
    assert extreme_pixel_mask(micrograph, x, y, box_px=48, sd_range=(0.5, 2.0)).tolist() == [True, False, True]
    assert extreme_pixel_mask(micrograph, x, y, box_px=48, sd_range=(0.0, 0.5)).tolist() == [False, True, False]
    with pytest.raises(ConfigError):
        extreme_pixel_mask(micrograph, x, y, box_px=48, sd_range=(1.0, 0.5))


def test_extreme_pixels_edges_and_bad_input(micrograph):
    keep = extreme_pixel_mask(micrograph, [0, 399, -100], [0, 399, 50], box_px=48)
    assert keep.tolist() == [True, True, False]  # clipped patches are judged on their inside part
    assert extreme_pixel_mask(micrograph, [], [], box_px=48).shape == (0,)
    with pytest.raises(MicrographError):
        extreme_pixel_mask(micrograph[None], [1], [1], box_px=48)
    with pytest.raises(MicrographError):
        extreme_pixel_mask(np.ones((50, 50)), [25], [25], box_px=10)
    with pytest.raises(ConfigError):
        extreme_pixel_mask(micrograph, [1], [1], box_px=0)
    assert issubclass(ConfigError, DeepPickError)


# --- sorting and top N -------------------------------------------------------------------------------


def test_sort_and_top_n():
    picks = make_picks(["b", "a", "b", "a", "b", "a"], [1, 2, 3, 4, 5, 6], [0] * 6,
                       [0.2, 0.9, np.nan, 0.1, 0.8, 0.5])
    ordered = sort_picks(picks)
    assert ordered["micrograph"].tolist() == ["b", "b", "b", "a", "a", "a"]
    assert ordered["x"].tolist() == [5, 1, 3, 2, 6, 4]
    best = top_n(picks, 2)
    assert best["x"].tolist() == [5, 1, 2, 6]
    overall = top_n(picks, 3, per_micrograph=False)
    assert sorted(overall["x"].tolist()) == [2, 5, 6]
    assert len(top_n(picks, None)) == 6 and len(top_n(picks, 0)) == 0
    assert list(top_n(picks, 1).columns) == ["micrograph", "x", "y", "score"]
    assert len(top_n(make_picks([], [], []), 3)) == 0
    with pytest.raises(ConfigError):
        top_n(picks, -1)


def test_edge_mask_keeps_centres_at_least_the_margin_inside():
    x = np.array([0.0, 9.9, 10.0, 50.0, 89.0, 89.1, 50.0, 50.0])
    y = np.array([50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 9.0, 59.0])  # image 70 rows × 100 columns
    keep = edge_mask((70, 100), x, y, 10.0)
    assert keep.tolist() == [False, False, True, True, True, False, False, True]
    assert edge_mask((70, 100), x, y, 0.0).all()


def test_learn_edge_margin_follows_the_labels():
    rng = np.random.default_rng(0)
    distances = 1.2 + rng.exponential(3.0, size=2000)  # an annotator who never picked within 1.2 boxes
    margin = learn_edge_margin(distances)
    assert margin == pytest.approx(np.percentile(distances, 1) - 0.05)
    assert 1.1 < margin < 1.25
    assert learn_edge_margin([]) is None
    assert learn_edge_margin([0.01, 0.02]) == 0.0  # labels up to the edge: no margin


def test_edge_margin_default_and_validation():
    assert PostprocessConfig().edge_margin_box == 0.5  # the box inside the micrograph, as extraction needs
    assert PostprocessConfig.from_dict({"edge_margin_box": 1.2}).edge_margin_box == 1.2
    with pytest.raises(ConfigError):
        PostprocessConfig(edge_margin_box=-0.1)


# --- the dark-disc ranking ----------------------------------------------------------------------------


def _discs_on_noise(rng, centres, depth, diameter=24.0, shape=(256, 256)):
    """Noise of SD 1 with discs of ``diameter`` darkened by ``depth`` (brightened where it is negative)."""
    image = rng.normal(0.0, 1.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for (x, y), d in zip(centres, depth):
        image[np.hypot(xx - x, yy - y) < diameter / 2] -= d
    return image


def test_rank_with_disc_deals_the_same_scores_out_by_the_sum_of_the_two_ranks(rng):
    centres = np.array([(50.0, 50.0), (200.0, 60.0), (60.0, 190.0), (190.0, 200.0)])
    # depth ranks 4, 3, 2, 1: two dark discs, two bright ones
    image = _discs_on_noise(rng, centres, [3.0, 1.5, -1.0, -2.0])
    scores = np.array([0.85, 0.55, 0.9, 0.6])  # score ranks 3, 1, 4, 2: rank sums 7, 4, 6, 3
    dealt = rank_with_disc(image, centres[:, 0], centres[:, 1], scores, 24.0)
    np.testing.assert_array_equal(dealt, [0.9, 0.6, 0.85, 0.55])  # the same scores: as many pass a threshold
    # without contrast the depths tie and the network's order stays; a single candidate keeps its score
    flat = np.zeros((256, 256))
    np.testing.assert_array_equal(rank_with_disc(flat, centres[:, 0], centres[:, 1], scores, 24.0), scores)
    np.testing.assert_array_equal(rank_with_disc(image, [10.0], [10.0], [0.3], 24.0), [0.3])


def test_rank_with_disc_bins_large_particles_and_still_finds_the_disc(rng):
    centres = np.array([(300.0, 300.0), (700.0, 700.0), (300.0, 750.0)])
    # a dark disc, a bright one and ice: depth ranks 3, 1, 2; score ranks 2, 3, 1
    image = _discs_on_noise(rng, centres[:2], [1.0, -1.0], diameter=160.0, shape=(1024, 1024))
    dealt = rank_with_disc(image, centres[:, 0], centres[:, 1], [0.6, 0.7, 0.5], 160.0)
    np.testing.assert_array_equal(dealt, [0.7, 0.6, 0.5])


def test_disc_depth_at_points_ranks_as_the_whole_map_does(rng):
    from scipy.stats import spearmanr

    from deeppick.postprocess import disc_depth, disc_depth_at

    centres = rng.uniform(40, 472, (30, 2))
    image = _discs_on_noise(rng, centres, rng.uniform(-1, 2, 30), diameter=30.0, shape=(512, 512))
    points = np.vstack([centres, rng.uniform(40, 472, (30, 2))])
    full = disc_depth(image, 30.0)[np.round(points[:, 1]).astype(int), np.round(points[:, 0]).astype(int)]
    assert spearmanr(full, disc_depth_at(image, points[:, 0], points[:, 1], 30.0)).correlation > 0.99


def test_the_disc_ranking_is_in_the_identity_only_where_it_is_on():
    identity = PostprocessConfig().identity()  # earlier picks folders still resume
    assert "disc_rank_diameter_box" not in identity and "disc_centre_radius_box" not in identity
    on = PostprocessConfig(disc_rank_diameter_box=0.8, disc_centre_radius_box=0.15)
    assert on.identity()["disc_rank_diameter_box"] == 0.8 and on.identity()["disc_centre_radius_box"] == 0.15
    assert PostprocessConfig.from_dict(on.to_dict()) == on


def test_centre_on_disc_moves_points_onto_nearby_dark_discs_within_the_radius_only(rng):
    from deeppick.postprocess import centre_on_disc

    import scipy.ndimage as ndi

    centres = np.array([(100.0, 100.0), (300.0, 120.0), (200.0, 300.0)])
    yy, xx = np.mgrid[:400, :400]
    particles = sum((np.hypot(xx - x, yy - y) < 16).astype(float) for x, y in centres)
    # particles of 32 px, as blurred as real ones are, darkest at their centres
    image = rng.normal(0.0, 0.3, (400, 400)) - ndi.gaussian_filter(particles, 4.0)
    # 6 px off the first disc, 6 px off the second with a radius too small to reach it, on the third
    x, y = centre_on_disc(image, [106.0, 300.0, 200.3], [100.0, 126.0, 299.6], 32.0, 9.0)
    assert np.hypot(x[0] - 100, y[0] - 100) <= 2.0  # binned by 2: within a binned pixel of the centre
    x_small, y_small = centre_on_disc(image, [300.0], [126.0], 32.0, 1.9)
    assert (x_small[0], y_small[0]) == (300.0, 126.0)  # under one binned pixel: not moved
    assert np.hypot(x[2] - 200, y[2] - 300) <= 2.0
    # a point moves by whole binned pixels from itself, never further than the radius
    moves = np.hypot(x - [106.0, 300.0, 200.3], y - [100.0, 126.0, 299.6])
    assert np.all(moves <= 9.0 + 1e-9) and np.allclose((x - [106.0, 300.0, 200.3]) % 2, 0)
    empty = centre_on_disc(image, [], [], 32.0, 9.0)
    assert len(empty[0]) == len(empty[1]) == 0


def test_apart_keeps_the_better_scored_of_points_that_moved_together():
    from deeppick.postprocess import apart

    keep = apart([10.0, 12.0, 50.0, 10.5], [10.0, 10.0, 50.0, 30.0], [0.4, 0.9, 0.5, 0.6], 5.0)
    np.testing.assert_array_equal(keep, [False, True, True, True])
