"""Preparation for the network: exact frame mapping, alias-free resampling, robust normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from deeppick.errors import ConfigError, MicrographError
from deeppick.preprocess import PreprocessConfig, model_shape, prepare_micrograph, smooth_background


def _blob(shape, x, y, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(100, 700), cols=st.integers(100, 700), box=st.floats(20, 200),
       fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_point_survives_round_trip_to_half_a_pixel(rows, cols, box, fx, fy):
    image = np.random.default_rng(0).normal(size=(rows, cols))
    prep = prepare_micrograph(image, box_px=min(box, rows, cols))
    x, y = fx * (cols - 1), fy * (rows - 1)
    mx, my = prep.to_model(x, y)
    # The model-frame pixel nearest the point maps back to within half a model px of it...
    bx, by = prep.to_micrograph(np.rint(mx), np.rint(my))
    assert abs(bx - x) <= 0.5 / prep.scale_x + 1e-9 and abs(by - y) <= 0.5 / prep.scale_y + 1e-9
    # ...and the exact model-frame position maps back exactly.
    rx, ry = prep.to_micrograph(mx, my)
    assert abs(rx - x) < 0.5 and abs(ry - y) < 0.5
    assert abs(rx - x) < 1e-9 and abs(ry - y) < 1e-9


@pytest.mark.parametrize("shape, box", [((512, 600), 160), ((333, 401), 90), ((200, 200), 40)])
def test_features_land_where_the_mapping_says(shape, box):
    x, y = 0.37 * shape[1], 0.61 * shape[0]
    image = -_blob(shape, x, y, sigma=box / 6)  # particles are dark
    prep = prepare_micrograph(image, box_px=box, config=PreprocessConfig(clip_sd=0))
    mx, my = prep.to_model(x, y)
    model = prep.image
    iy, ix = np.unravel_index(np.argmin(model), model.shape)
    # Centroid of the dark blob in the model frame.
    w = np.clip(-(model - np.median(model)), 0, None)
    w[w < 0.2 * w.max()] = 0
    yy, xx = np.mgrid[: model.shape[0], : model.shape[1]]
    cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    assert abs(cx - mx) < 0.1 and abs(cy - my) < 0.1
    assert abs(ix - mx) <= 1 and abs(iy - my) <= 1


def test_box_becomes_model_px():
    prep = prepare_micrograph(np.random.default_rng(1).normal(size=(1000, 800)), box_px=125)
    assert prep.image.shape == model_shape((1000, 800), 125) == (512, 410)
    assert prep.scale_y == pytest.approx(64 / 125, rel=1e-3)
    assert prep.image.dtype == np.float32


def test_resampling_is_alias_free():
    # A stripe pattern far above the model-frame Nyquist must vanish, not fold into a low frequency.
    shape = (640, 640)
    xx = np.arange(shape[1])[None, :] * np.ones(shape[0])[:, None]
    high = np.cos(2 * np.pi * 0.45 * xx)  # 0.45 cycles/px; model frame keeps < 0.1
    low = _blob(shape, 320, 320, 30)
    prep = prepare_micrograph(high + low, box_px=320, config=PreprocessConfig(lowpass_sigma_model_px=0, clip_sd=0))
    ref = prepare_micrograph(low + 1e-3 * np.random.default_rng(0).normal(size=shape), box_px=320,
                             config=PreprocessConfig(lowpass_sigma_model_px=0, clip_sd=0))
    a = (prep.image - prep.image.mean()) / prep.image.std()
    b = (ref.image - ref.image.mean()) / ref.image.std()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_normalisation_is_robust_to_outliers():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(512, 512))
    image[:40, :40] = 1e4  # a hot region (dirt)
    prep = prepare_micrograph(image, box_px=64, config=PreprocessConfig(lowpass_sigma_model_px=0))
    interior = prep.image[100:, 100:]
    assert 0.8 < interior.std() < 1.2 and abs(np.median(interior)) < 0.1
    assert prep.image.max() <= PreprocessConfig().clip_sd


def _particles_on_a_gradient(rng, shape=(600, 900), box=60, n=40):
    """Dark blobs on noise, over a ramp of three noise SDs from left to right (thick ice on one side)."""
    image = rng.normal(size=shape) + np.linspace(0, 3, shape[1])[None, :]
    xy = rng.uniform(box, np.array(shape[::-1]) - box, size=(n, 2))
    for x, y in xy:
        image -= 2 * _blob(shape, x, y, box / 6)
    return image, xy


def test_background_subtraction_flattens_a_gradient_and_keeps_the_particles(rng):
    image, xy = _particles_on_a_gradient(rng)
    box = 60
    plain = prepare_micrograph(image, box, PreprocessConfig(clip_sd=0))
    flat = prepare_micrograph(image, box, PreprocessConfig(clip_sd=0, highpass_sigma_model_px=64))

    def level_step(prep):  # median level of the right fifth minus the left fifth
        w = prep.image.shape[1] // 5
        return float(np.median(prep.image[:, -w:]) - np.median(prep.image[:, :w]))

    assert level_step(plain) > 1.0
    assert abs(level_step(flat)) < 0.1

    def contrast(prep):  # particle centre below the ring around it, in SDs of the prepared image
        mx, my = prep.to_model(xy[:, 0], xy[:, 1])
        img = prep.image
        centre = scipy.ndimage.map_coordinates(img, [my, mx], order=1)
        r = 0.6 * prep.scale_x * box
        ring = np.mean([scipy.ndimage.map_coordinates(img, [my + r * np.sin(a), mx + r * np.cos(a)], order=1)
                        for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)], axis=0)
        return np.median(ring - centre) / img.std()

    assert contrast(flat) > 0.9 * contrast(plain)


@pytest.mark.parametrize("sigma", [3, 16, 40])
def test_background_is_a_gaussian_blur_inside_and_a_local_plane_at_the_edges(rng, sigma):
    shape = (420, 520)
    noise = rng.normal(size=shape).astype(np.float32)
    got = smooth_background(noise, sigma)
    assert got.shape == shape and got.dtype == np.float32
    inner = slice(4 * sigma, -4 * sigma)
    exact = scipy.ndimage.gaussian_filter(noise.astype(np.float64), sigma)
    assert np.abs(got - exact)[inner, inner].max() < 0.01
    # at the edges noise is not amplified into a false background: a plane fitted to a quarter of the
    # Gaussian's weight varies a few times more than the blur inside, which falls off as 1/σ
    edges = np.concatenate([got[:, 0], got[:, -1], got[0], got[-1]])
    assert np.abs(edges).max() < 3 / sigma
    # a plane (a gradient of ice thickness) is its own background, edges included, at any size
    for rows, cols in [(97, 130), (64, 64), (301, 177)]:
        yy, xx = np.mgrid[:rows, :cols].astype(np.float32)
        plane = 0.05 * xx - 0.02 * yy + 3
        assert np.abs(smooth_background(plane, sigma) - plane).max() < 1e-4


def test_background_narrower_than_a_quarter_box_is_refused():
    for sigma in (-1, 4, float("nan")):
        with pytest.raises(ConfigError, match="at least 16 model px"):
            PreprocessConfig(highpass_sigma_model_px=sigma)
    assert PreprocessConfig(highpass_sigma_model_px=16).highpass_sigma_model_px == 16


def test_models_from_before_background_subtraction_load_without_it():
    old = {"model_px": 64, "lowpass_sigma_model_px": 2.5, "clip_sd": 4.0}
    assert PreprocessConfig.from_dict(old).highpass_sigma_model_px == 0.0
    new = PreprocessConfig(highpass_sigma_model_px=64)
    assert PreprocessConfig.from_dict(new.to_dict()) == new


def test_bad_inputs():
    with pytest.raises(MicrographError, match="smaller than the box"):
        prepare_micrograph(np.random.default_rng(0).normal(size=(50, 50)), box_px=80, path="tiny.mrc")
    with pytest.raises(MicrographError, match="constant"):
        prepare_micrograph(np.zeros((100, 100)), box_px=20)
    with pytest.raises(ConfigError, match="positive"):
        model_shape((100, 100), 0)
