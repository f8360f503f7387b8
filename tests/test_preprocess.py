"""Preparation for the network: exact frame mapping, alias-free resampling, robust normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeppick.errors import ConfigError, MicrographError
from deeppick.preprocess import PreprocessConfig, model_shape, prepare_micrograph


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


def test_bad_inputs():
    with pytest.raises(MicrographError, match="smaller than the box"):
        prepare_micrograph(np.random.default_rng(0).normal(size=(50, 50)), box_px=80, path="tiny.mrc")
    with pytest.raises(MicrographError, match="constant"):
        prepare_micrograph(np.zeros((100, 100)), box_px=20)
    with pytest.raises(ConfigError, match="positive"):
        model_shape((100, 100), 0)
