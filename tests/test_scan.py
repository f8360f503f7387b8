"""Tests for deeppick.scan: the dense scanner equals the per-patch reference, and the grid's frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeppick.errors import ConfigError
from deeppick.model import PickerModel, build_net
from deeppick.preprocess import PreparedMicrograph, prepare_micrograph
from deeppick.scan import ScanConfig, ScoreMap, model_step_px, naive_scan, scan_micrograph, score_positions

TOLERANCE = 1e-5  # issue 5: max |fast − naive| on probabilities


def random_model(arch: str, seed: int, **arch_kwargs) -> PickerModel:
    """A network with random weights, its logits rescaled to mean 0 and SD 2 so that scores spread over (0, 1)."""
    torch.manual_seed(seed)
    net = build_net(arch, **arch_kwargs).eval()
    with torch.no_grad():
        for module in net.body:
            if isinstance(module, torch.nn.Conv2d):
                # SD 4/√fan-in keeps features varied, so the logit gain below stays ~10 and float32
                # rounding (which depends on summation order) stays far below the tolerance.
                module.weight.normal_(0.0, 4.0 / np.sqrt(module.weight[0].numel()))
                module.bias.normal_(0.0, 0.5)
            if isinstance(module, torch.nn.BatchNorm2d):  # statistics a training run could leave
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
        patches = torch.from_numpy(prepared_image(96, 96, seed).image).unfold(0, 64, 4).unfold(1, 64, 4)
        logits = net(patches.reshape(-1, 1, 64, 64))
        gain = 2.0 / max(float(logits.std()), 1e-6)
        last = net.body[-1]
        last.weight.mul_(gain)
        last.bias.mul_(gain)
        last.bias[-1] -= gain * float(logits.mean())  # the logit is channel 1 − channel 0, or channel 0
    return PickerModel(net=net, arch=arch, box_px=64.0)


def prepared_image(rows: int, cols: int, seed: int, scale: float = 1.0) -> PreparedMicrograph:
    """A model-frame image of smooth random blobs (more structure than white noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(rows + 8, cols + 8))
    kernel = np.ones(5) / 5
    smooth = np.apply_along_axis(np.convolve, 0, noise, kernel, "same")
    smooth = np.apply_along_axis(np.convolve, 1, smooth, kernel, "same")[4:-4, 4:-4]
    image = (smooth / (smooth.std() or 1.0) + 0.3 * rng.normal(size=(rows, cols))).astype(np.float32)
    shape_micrograph = (int(round(rows / scale)), int(round(cols / scale)))
    return PreparedMicrograph(image=image, scale_x=scale, scale_y=scale, shape_micrograph=shape_micrograph)


@pytest.fixture(scope="module", params=["deeppicker", "deepem", "wide"])
def model(request) -> PickerModel:
    return random_model(request.param, seed=7)


@pytest.mark.parametrize("rotations", [False, True])
@pytest.mark.parametrize("shape, step_px", [((12, 15), 1), ((26, 21), 2), ((35, 40), 3), ((44, 37), 4), ((70, 90), 8),
                                            ((100, 70), 20)])
def test_fast_scan_equals_naive(model, shape, step_px, rotations):
    # Small grids (≤ 170 positions) keep the per-patch reference quick; 5-position tiles make several tiles.
    prepared = prepared_image(*shape, seed=step_px)
    config = ScanConfig(step_px=step_px, rotations=rotations, tile_px=5 * step_px, tiles_per_batch=4, snap_step=False)
    fast = scan_micrograph(model, prepared, config)
    naive = naive_scan(model, prepared, config)
    assert fast.scores.shape == naive.scores.shape == ((shape[0] - 1) // step_px + 1, (shape[1] - 1) // step_px + 1)
    assert fast.scores.dtype == np.float32
    assert naive.scores.std() > 0.02, "scores too flat for the comparison to mean anything"
    assert np.abs(fast.scores - naive.scores).max() <= TOLERANCE


@pytest.mark.parametrize("shape, step_px", [((26, 21), 2), ((31, 44), 4), ((70, 41), 8)])
def test_fast_scan_equals_naive_with_an_even_first_kernel(shape, step_px):
    # The first conv + pool runs as a space-to-depth conv; an even kernel on an odd tile side needs the
    # zero padding that conv adds, which the 9-px kernels of the shipped networks never exercise.
    model = random_model("deeppicker", seed=11, kernels=(8, 5, 3, 2))
    prepared = prepared_image(*shape, seed=step_px)
    for tile in (5 * step_px, 7 * step_px):  # tile sides (m − 1)·step + 64 of both parities
        config = ScanConfig(step_px=step_px, rotations=True, tile_px=tile, snap_step=False)
        fast, naive = scan_micrograph(model, prepared, config), naive_scan(model, prepared, config)
        assert naive.scores.std() > 0.02
        assert np.abs(fast.scores - naive.scores).max() <= TOLERANCE


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arch=st.sampled_from(["deeppicker", "deepem", "wide"]), grid_rows=st.integers(1, 8), grid_cols=st.integers(1, 8),
       step_px=st.integers(1, 9), extra=st.integers(0, 8), tile_px=st.integers(1, 30), rotations=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fast_scan_equals_naive_property(arch, grid_rows, grid_cols, step_px, extra, tile_px, rotations, seed):
    model = random_model(arch, seed)
    rows, cols = (grid_rows - 1) * step_px + 1 + extra % step_px, (grid_cols - 1) * step_px + 1 + extra // 2
    prepared = prepared_image(rows, cols, seed)
    config = ScanConfig(step_px=step_px, rotations=rotations, tile_px=tile_px * step_px, tiles_per_batch=8,
                        snap_step=False)
    fast = scan_micrograph(model, prepared, config).scores
    naive = naive_scan(model, prepared, config).scores
    assert fast.shape == naive.shape
    assert np.abs(fast - naive).max() <= TOLERANCE


def test_rotation_averaging_is_the_mean_of_rotated_patch_probabilities(model):
    """Independent of naive_scan: rotate the patches by hand and average the sigmoids."""
    prepared = prepared_image(40, 40, seed=3)
    fast = scan_micrograph(model, prepared, ScanConfig(step_px=3, rotations=True)).scores
    padded = np.pad(prepared.image, 32)
    cy, cx = 3 * np.array([0, 5, 13, 13]), 3 * np.array([0, 7, 2, 13])
    for x, y in zip(cx, cy):
        patch = padded[y:y + 64, x:x + 64]  # patches.py: centre at index 32
        batch = torch.from_numpy(np.stack([np.rot90(patch, k).copy() for k in range(4)])[:, None])
        with torch.no_grad():
            expected = torch.sigmoid(model.net(batch)).mean().item()
        assert abs(fast[y // 3, x // 3] - expected) <= TOLERANCE
    # and the averaging matters: the unrotated map differs
    plain = scan_micrograph(model, prepared, ScanConfig(step_px=3, rotations=False)).scores
    assert np.abs(plain - fast).max() > 1e-3


def test_tiling_does_not_change_scores(model):
    prepared = prepared_image(36, 29, seed=5)
    maps = [scan_micrograph(model, prepared, ScanConfig(step_px=2, tile_px=tile, tiles_per_batch=batch)).scores
            for tile, batch in [(6, 50), (10, 1), (24, 3), (1000, 1)]]
    for other in maps[1:]:
        assert np.abs(other - maps[0]).max() <= 1e-6


def test_scan_uses_eval_mode_even_if_the_net_is_training():
    model = random_model("deeppicker", seed=2)  # has dropout
    prepared = prepared_image(30, 30, seed=2)
    config = ScanConfig(step_px=3, rotations=False)
    reference = naive_scan(model, prepared, config).scores
    model.net.train()
    first = scan_micrograph(model, prepared, config).scores
    model.net.train()
    second = scan_micrograph(model, prepared, config).scores
    assert np.abs(first - reference).max() <= TOLERANCE
    assert np.array_equal(first, second)


def test_score_positions_matches_map_and_keeps_shape(model):
    prepared = prepared_image(50, 60, seed=11)
    score_map = scan_micrograph(model, prepared, ScanConfig(step_px=2))
    rows = np.array([[0, 3], [24, 10]])
    cols = np.array([[29, 0], [7, 18]])
    exact = score_positions(model, prepared, cols * 2, rows * 2, rotations=True)
    assert exact.shape == (2, 2) and exact.dtype == np.float32
    assert np.abs(exact - score_map.scores[rows, cols]).max() <= TOLERANCE
    with pytest.raises(ValueError):
        score_positions(model, prepared, [60], [0])  # outside the image


def test_grid_frames_and_model_step():
    # box 160 px → scale 0.4: a 4 px step is 1.6 model px, rounded to 2
    prepared = prepared_image(41, 30, seed=0, scale=0.4)
    assert model_step_px(4.0, prepared) == 2
    assert model_step_px(1.0, prepared) == 1  # never 0
    # an odd step snaps to the nearby value with more factors of two, unless told not to
    assert model_step_px(17.75, prepared) == 8 and model_step_px(17.75, prepared, snap=False) == 7
    assert model_step_px(50.0, prepared) == 16 and model_step_px(7.5, prepared) == 3
    score_map = ScoreMap(scores=np.zeros((21, 15), np.float32), model_step_px=2, scale_x=0.4, scale_y=0.5)
    x, y = score_map.to_micrograph(np.array([0.0, 3.0, 2.5]), np.array([0.0, 1.0, 4.25]))
    np.testing.assert_allclose(x, [0.0, 5.0, 21.25])  # col × 2 model px / 0.4
    np.testing.assert_allclose(y, [0.0, 12.0, 10.0])  # row × 2 model px / 0.5
    # the grid covers the whole prepared image: last row is model y = 40 of 41 rows
    model = random_model("deepem", seed=0)
    scanned = scan_micrograph(model, prepared, ScanConfig(step_px=4.0))
    assert scanned.scores.shape == (21, 15) and scanned.model_step_px == 2
    assert (scanned.scale_x, scanned.scale_y) == (0.4, 0.4)


def test_scan_of_a_prepared_micrograph_end_to_end():
    model = random_model("deeppicker", seed=4)
    model.box_px = 100.0
    micrograph = np.random.default_rng(4).normal(size=(300, 410))
    prepared = prepare_micrograph(micrograph, model.box_px)
    config = ScanConfig(step_px=4.7)  # 3.008 model px → 3: an odd step (no power of two within 25 %)
    fast = scan_micrograph(model, prepared, config)
    assert fast.model_step_px == 3 and fast.scores.shape == (64, 88)
    assert np.all((fast.scores >= 0) & (fast.scores <= 1))
    # spot-check 60 positions, edges included, against the exact per-patch scores
    rng = np.random.default_rng(0)
    rows = np.r_[0, 63, rng.integers(0, 64, 58)]
    cols = np.r_[0, 87, rng.integers(0, 88, 58)]
    exact = score_positions(model, prepared, cols * 3, rows * 3)
    assert np.abs(fast.scores[rows, cols] - exact).max() <= TOLERANCE


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="step"):
        ScanConfig(step_px=0)
    with pytest.raises(ConfigError):
        ScanConfig(tile_px=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scan_on_cuda_matches_cpu(model):
    prepared = prepared_image(60, 50, seed=9)
    config = ScanConfig(step_px=2)
    cpu = scan_micrograph(model, prepared, config).scores
    model.net.cuda()
    try:
        gpu = scan_micrograph(model, prepared, config).scores
    finally:
        model.net.cpu()
    assert np.abs(gpu - cpu).max() <= 1e-4  # TF32 / kernel choice may differ slightly
