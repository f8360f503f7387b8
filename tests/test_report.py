"""Tests of deeppick.report and deeppick.views: the plots, the JSON summary, the HTML report and the pictures of
picks (a real browser renders the report where Chromium is installed)."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

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


# --------------------------------------------------------------------------------------------------
# the HTML report and the pictures of picks


class _Page(HTMLParser):
    """What a browser would load from the page: images, scripts, links, and its visible text."""

    def __init__(self):
        super().__init__()
        self.images, self.external, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)

    def handle_data(self, data):
        self.text.append(data)


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def picked(sim_dataset, trained, tmp_path_factory):
    """Every candidate of the sim dataset's micrographs, picked into a folder."""
    from deeppick.batch import pick_micrographs
    from deeppick.model import load_model
    from deeppick.pipeline import PickConfig

    out = tmp_path_factory.mktemp("picked")
    pick_micrographs(load_model(trained), sim_dataset.paths(), out, config=PickConfig(keep_all=True))
    return out


def test_the_report_is_one_page_whose_figures_are_the_picks(sim_dataset, trained, picked):
    from deeppick.io import read_picks
    from deeppick.metrics import evaluate_picks
    from deeppick.model import load_model
    from deeppick.report import build_report

    model = load_model(trained)
    report = build_report(picked, sim_dataset.root / "micrographs", references=sim_dataset.picks, model=model,
                          gallery=4)
    page = _page(report.html)
    assert page.external == [] and report.problems == []
    assert len(page.images) >= 4 + 2 + 2 + 1  # gallery, histograms, curves, score map
    for src in page.images:  # every image is an embedded PNG that decodes
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size[0] > 50
    text = " ".join("".join(page.text).split())
    picks = read_picks(picked)
    kept = picks[picks["score"] >= 0.5]  # the model has no threshold: pick cuts at 0.5
    assert f"{len(kept):,} picks" in text and f"on {len(sim_dataset.stems()):,} micrographs" in text
    ev = evaluate_picks(picks, sim_dataset.picks, model.box_px, threshold=0.5, micrographs=sim_dataset.stems())
    assert f"AP {ev.ap:.3f}" in text and f"precision {ev.precision:.3f}" in text
    counts = kept.groupby("micrograph").size()
    for name in (counts.idxmin(), counts.idxmax()):  # the gallery holds the fewest and the most picks
        assert f"{name}: {counts[name]} picks" in text
    assert "Micrographs (4 of 6" in text


def test_a_circle_lands_on_its_pick(rng):
    from deeppick.views import draw_picks, micrograph_view

    image = rng.normal(size=(300, 400)).astype(np.float32)
    picks = make_picks("m", [50.0, 301.0], [40.0, 222.0], [0.9, 0.8])
    for width in (400, 200):  # at full size and halved
        view = micrograph_view(image, width_px=width)
        rgb = draw_picks(view, picks, box_px=40, references=picks).astype(np.float64)
        blueness = np.clip(rgb[..., 2] - rgb[..., 0], 0, None)  # grey has none; the circles' blue a lot
        assert blueness.max() > 150
        s = width / 400
        rows, cols = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]]
        for x, y in zip([50.0, 301.0], [40.0, 222.0]):  # no flip, no half-pixel shift
            cx, cy = (x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5
            near = (np.hypot(cols - cx, rows - cy) < 20 * s + 4) * blueness  # the whole ring, and more
            assert near.sum() > 0
            assert (near * cols).sum() / near.sum() == pytest.approx(cx, abs=0.3)
            assert (near * rows).sum() / near.sum() == pytest.approx(cy, abs=0.3)


def test_the_report_says_what_it_cannot_show_and_is_still_written(sim_dataset, trained, picked, tmp_path):
    import shutil

    from click.testing import CliRunner

    from deeppick.cli import cli

    # a picks folder without picks
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "m1.star").write_text("\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n")
    runner = CliRunner()
    mics = str(sim_dataset.root / "micrographs")
    result = runner.invoke(cli, ["report", "--picks", str(tmp_path / "empty"), "--micrographs", mics, "--box-px", "40",
                                 "-o", str(tmp_path / "r1.html")])
    assert result.exit_code == 0 and "no picks at all" in result.stderr and (tmp_path / "r1.html").is_file()
    # a picks file whose micrograph is missing, and references for other micrographs
    shutil.copytree(picked, tmp_path / "picks")
    shutil.copy(tmp_path / "picks" / f"{sim_dataset.stems()[0]}.star", tmp_path / "picks" / "elsewhere.star")
    (tmp_path / "refs").mkdir()
    from deeppick.io import write_picks

    write_picks(make_picks("other", [10.0], [10.0]), tmp_path / "refs" / "other.star")
    write_picks(sim_dataset.picks_for(sim_dataset.stems()[0]), tmp_path / "refs" / f"{sim_dataset.stems()[0]}.star")
    result = runner.invoke(cli, ["report", "--picks", str(tmp_path / "picks"), "--micrographs", mics, "--model",
                                 str(trained), "--references", str(tmp_path / "refs"), "-o", str(tmp_path / "r2.html")])
    assert result.exit_code == 0, result.output
    assert "1 micrograph(s) have picks but are not among the micrographs given (e.g. elsewhere)" in result.stderr
    assert "1 micrograph(s) have references but no picks file (e.g. other)" in result.stderr
    html = (tmp_path / "r2.html").read_text()
    assert "elsewhere" in html and "AP " in html
    # the picture of one micrograph
    result = runner.invoke(cli, ["show", str(sim_dataset.paths()[0]), "--picks", str(tmp_path / "picks"), "--model",
                                 str(trained), "-o", str(tmp_path / "one.png")])
    assert result.exit_code == 0 and Image.open(tmp_path / "one.png").size == (320, 320)
    result = runner.invoke(cli, ["show", str(sim_dataset.paths()[0]), "--picks", str(tmp_path / "picks")])
    assert result.exit_code == 2 and "box size is unknown" in result.stderr


def test_a_browser_renders_the_report(sim_dataset, trained, picked, tmp_path):
    import shutil
    import subprocess

    from deeppick.model import load_model
    from deeppick.report import build_report, write_html_report

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("needs Chromium (Debian package 'chromium'; .ci/run installs it) to render the report")
    path = write_html_report(build_report(picked, sim_dataset.root / "micrographs", references=sim_dataset.picks,
                                          model=load_model(trained), gallery=3), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1200,2000", f"--screenshot={shot}", path.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file(), run.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert image.shape == (2000, 1200)
    assert image.std() > 20 and (image < 128).mean() > 0.02  # drawn, not a blank page
