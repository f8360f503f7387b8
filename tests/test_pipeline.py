"""Picking one micrograph on simulated data: picks land on particles, their scores are the per-patch
scores, the threshold, top-N and edge margin cut as configured."""

from __future__ import annotations

import numpy as np

from deeppick.io import read_micrograph
from deeppick.metrics import evaluate_picks
from deeppick.model import load_model
from deeppick.patches import extract_dataset_patches
from deeppick.pipeline import PickConfig, pick_micrograph, pick_paths
from deeppick.postprocess import PostprocessConfig
from deeppick.preprocess import prepare_micrograph
from deeppick.scan import model_step_px, score_positions
from deeppick.tuning import adopt_label_edge_margin

from .conftest import SIM_DIAMETER_PX


def test_picks_land_on_held_out_particles(sim_dataset, trained):
    model = load_model(trained)
    test = sim_dataset.paths("test")
    picks = pick_paths(model, test, config=PickConfig(keep_all=True))
    ev = evaluate_picks(picks, sim_dataset.picks, box_px=SIM_DIAMETER_PX, threshold=0.5,
                        micrographs=[p.stem for p in test])
    assert ev.ap > 0.8, ev.to_dict()
    assert ev.centre_error_box < 0.1  # sub-pixel peaks land near the true centres


def test_reported_scores_equal_the_naive_per_patch_scores(sim_dataset, trained):
    model = load_model(trained)
    path = sim_dataset.paths("test")[0]
    image = read_micrograph(path)
    picks = pick_micrograph(model, image, name=path.stem, config=PickConfig(keep_all=True))
    assert len(picks) > 3
    prepared = prepare_micrograph(image, model.box_px, model.preprocess)
    step = model_step_px(PickConfig().scan.step_px, prepared)
    # Each pick's score is that of its grid cell (the refined centre lies within half a cell of it).
    mx, my = prepared.to_model(picks["x"], picks["y"])
    cx, cy = np.rint(mx / step).astype(int) * step, np.rint(my / step).astype(int) * step
    naive = score_positions(model, prepared, cx, cy, rotations=True)
    np.testing.assert_allclose(picks["score"], naive, atol=1e-5)


def test_threshold_filters_the_candidates_and_top_n(sim_dataset, trained):
    model = load_model(trained)
    path = sim_dataset.paths("test")[0]
    image = read_micrograph(path)
    all_picks = pick_micrograph(model, image, name=path.stem, config=PickConfig(keep_all=True))
    cut = pick_micrograph(model, image, name=path.stem, config=PickConfig(threshold=0.7))
    assert list(cut["score"]) == list(all_picks["score"][all_picks["score"] >= 0.7])
    assert np.all(np.diff(all_picks["score"]) <= 0)  # sorted by score
    top = pick_micrograph(model, image, name=path.stem, config=PickConfig(keep_all=True,
                                                                          post=PostprocessConfig(top_n=3)))
    assert list(top["score"]) == list(all_picks["score"][:3])


def test_edge_margin_is_learned_from_the_labels_and_honoured_by_pick(sim_dataset, trained):
    model = load_model(trained)
    path = sim_dataset.paths("test")[0]
    image = read_micrograph(path)
    rows, cols = image.shape

    def edge_box(picks):
        return np.minimum.reduce([picks["x"], picks["y"], cols - 1 - picks["x"], rows - 1 - picks["y"]]) / model.box_px

    # Every local maximum is a candidate (score floor 0), so some lie near the edge.
    everything = pick_micrograph(model, image, name=path.stem, config=PickConfig(keep_all=True, candidate_min_score=0,
                                                                     post=PostprocessConfig(edge_margin_box=0)))
    assert (edge_box(everything) < 0.5).any()  # candidates near the edge exist, so the cut below is tested
    for margin in (0.5, 1.0):
        picks = pick_micrograph(model, image, name=path.stem, config=PickConfig(keep_all=True, candidate_min_score=0,
                                                                    post=PostprocessConfig(edge_margin_box=margin)))
        assert (edge_box(picks) >= margin).all()
        assert len(picks) == int((edge_box(everything) >= margin).sum())  # nothing else changes

    # Labels that keep ≥ 1.5 boxes from the edge: the model learns that margin and pick applies it.
    patches = extract_dataset_patches(sim_dataset, "train", box_px=SIM_DIAMETER_PX, seed=0)
    centre_edge = []
    for i in np.flatnonzero(patches.labels == 1):
        r, c = patches.metadata["sources"][patches.source[i]]["shape"]
        centre_edge.append(min(patches.x[i], patches.y[i], c - 1 - patches.x[i], r - 1 - patches.y[i]))
    keep = np.ones(len(patches), bool)
    keep[np.flatnonzero(patches.labels == 1)[np.array(centre_edge) < 1.5 * SIM_DIAMETER_PX]] = False
    far = patches.subset(np.flatnonzero(keep))
    adopted = adopt_label_edge_margin(load_model(trained), far)
    learned = adopted.postprocess.edge_margin_box
    assert 1.45 <= learned < 2.5 and adopted.info["edge_margin"]["from_labels"] == far.n_positive
    picks = pick_micrograph(adopted, image, name=path.stem, config=PickConfig(keep_all=True, candidate_min_score=0))
    assert (edge_box(picks) >= learned).all() and len(picks) == int((edge_box(everything) >= learned).sum())
