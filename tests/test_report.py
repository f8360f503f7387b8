"""Tests of deeppick.report: the PR and F-beta plots and the JSON summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deeppick.io import make_picks
from deeppick.metrics import evaluate_picks
from deeppick.report import plot_fbeta_vs_threshold, plot_pr_curve, write_report


@pytest.fixture
def evaluation(rng):
    refs = make_picks("m", np.arange(30) * 50.0, np.full(30, 100.0))
    xy = np.column_stack([np.arange(25) * 50.0 + rng.normal(0, 2, 25), np.full(25, 100.0)])
    xy = np.vstack([xy, rng.uniform(0, 1500, size=(10, 2)) + [0, 300]])
    scores = np.r_[rng.uniform(0.4, 1.0, 25), rng.uniform(0.0, 0.7, 10)]
    return evaluate_picks(make_picks("m", xy[:, 0], xy[:, 1], scores), refs, box_px=40, threshold=0.5)


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_write_report(evaluation, tmp_path):
    out = tmp_path / "report"
    paths = write_report(evaluation, out, prefix="val_")
    assert [p.name for p in paths] == ["val_pr_curve.png", "val_fbeta_threshold.png", "val_evaluation.json"]
    for png in paths[:2]:
        width, height = _png_size(png)
        assert width > 200 and height > 200
    figures = json.loads(paths[2].read_text())
    assert figures == json.loads(json.dumps(evaluation.to_dict()))
    assert figures["n_refs"] == 30 and figures["threshold"] == 0.5
    assert 0 < figures["ap"] <= 1 and figures["best_threshold"] == evaluation.best_threshold
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary files left


def test_plots_differ_with_content_and_beta(evaluation, tmp_path):
    a = plot_fbeta_vs_threshold(evaluation, tmp_path / "f2.png")
    b = plot_fbeta_vs_threshold(evaluation, tmp_path / "f05.png", beta=0.5)
    assert a.read_bytes() != b.read_bytes()
    c = plot_pr_curve(evaluation, tmp_path / "pr.png")
    assert c == tmp_path / "pr.png" and c.read_bytes() != a.read_bytes()


def test_plots_without_picks(tmp_path):
    refs = make_picks("m", [10.0], [10.0])
    ev = evaluate_picks(make_picks([], [], [], []), refs, box_px=40)
    paths = write_report(ev, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
    assert json.loads(paths[2].read_text())["best_threshold"] is None
