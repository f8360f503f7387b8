"""What a person looks at: plots of an evaluation, and one self-contained HTML report of a picks folder.

:func:`write_report` writes the precision–recall and F-beta-against-threshold plots and a JSON of the
figures. :func:`build_report` / :func:`write_html_report` make the report of ``deeppick report``: a
summary (picks per micrograph, scores, the model, the failures), a gallery of micrographs with every pick
drawn (:mod:`~deeppick.views`), with references the curves and per-micrograph precision and recall, and
with a model the score map of one micrograph beside its picks. Every image is embedded as a PNG data URI
and the page has no external script, font or link, so it opens anywhere from one file.

Figures are drawn with Matplotlib's object API on the Agg canvas (no pyplot state, no display needed)
and written atomically.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path, atomic_write_text
from .metrics import Evaluation, fbeta_score


def _figure(width_in: float = 5.0, height_in: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def plot_pr_curve(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Write :func:`pr_figure` of ``evaluation`` as a PNG at ``path``; returns the path."""
    return _save(pr_figure(evaluation), path)


def pr_figure(evaluation: Evaluation):
    """The precision–recall curve of ``evaluation``.

    The curve is drawn as steps (the AP in the legend is the area under those steps); the operating point
    at ``evaluation.threshold`` (the threshold in use, the model's) and the F-beta optimum of these
    micrographs are marked.
    """
    thresholds, precision, recall = evaluation.curve()
    fig = _figure()
    ax = fig.add_subplot()
    if len(recall):
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post", color="C0",
                label=f"AP = {evaluation.ap:.3f}")
        k = int(np.argmin(np.abs(thresholds - evaluation.best_threshold))) if math.isfinite(
            evaluation.best_threshold) else None
        if k is not None:
            ax.plot(recall[k], precision[k], "o", color="C3",
                    label=f"best F{evaluation.beta:g} here ({evaluation.best_fbeta:.3f} at {thresholds[k]:.3g})")
    ax.plot(evaluation.recall, evaluation.precision, "s", color="C2", mfc="none", ms=9,
            label="all picks" if evaluation.threshold is None else f"threshold in use ({evaluation.threshold:.3g})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Precision and recall: {evaluation.n_refs} references, {evaluation.n_micrographs} micrographs",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return fig


def plot_fbeta_vs_threshold(evaluation: Evaluation, path: str | os.PathLike, beta: float | None = None) -> Path:
    """Write :func:`fbeta_figure` of ``evaluation`` as a PNG at ``path``; returns the path."""
    return _save(fbeta_figure(evaluation, beta), path)


def fbeta_figure(evaluation: Evaluation, beta: float | None = None):
    """F-beta, precision and recall against the score threshold.

    ``beta`` defaults to the evaluation's. The threshold in use (``evaluation.threshold``, the model's,
    chosen on held-out micrographs) is marked; so is the optimum on these micrographs, which is what they
    would prefer, not a threshold to choose on them.
    """
    beta = evaluation.beta if beta is None else float(beta)
    thresholds, precision, recall = evaluation.curve()
    f = np.atleast_1d(fbeta_score(precision, recall, beta)) if len(recall) else np.empty(0)
    fig = _figure()
    ax = fig.add_subplot()
    if len(f):
        ax.plot(thresholds, f, color="C3", label=f"F{beta:g}")
        ax.plot(thresholds, precision, color="C0", lw=0.8, label="precision")
        ax.plot(thresholds, recall, color="C2", lw=0.8, label="recall")
        k = int(np.argmax(f))
        if f[k] > 0:
            ax.plot(thresholds[k], f[k], "o", color="C3", label=f"best here: {f[k]:.3f} at {thresholds[k]:.3g}")
        if evaluation.threshold is not None:
            ax.axvline(evaluation.threshold, color="0.2", ls="--", lw=1.0,
                       label=f"threshold in use {evaluation.threshold:.3g}: F{beta:g} "
                             f"{fbeta_score(evaluation.precision, evaluation.recall, beta):.3f}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("score threshold (keep score ≥ threshold)")
    ax.set_ylabel("value")
    ax.set_title(f"F{beta:g}, precision and recall against the threshold ({evaluation.n_micrographs} micrographs)",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    if len(f):
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no picks", ha="center", va="center", transform=ax.transAxes)
    return fig


def write_report(evaluation: Evaluation, folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Write ``<prefix>pr_curve.png``, ``<prefix>fbeta_threshold.png`` and ``<prefix>evaluation.json``.

    The JSON holds :meth:`Evaluation.to_dict` (NaN and inf as null). Returns the written paths.
    """
    folder = Path(folder)
    pr = plot_pr_curve(evaluation, folder / f"{prefix}pr_curve.png")
    fb = plot_fbeta_vs_threshold(evaluation, folder / f"{prefix}fbeta_threshold.png")
    js = folder / f"{prefix}evaluation.json"
    atomic_write_text(js, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    return [pr, fb, js]


# --------------------------------------------------------------------------------------------------
# the HTML report of a picks folder

GALLERY_SIZE = 12  # micrographs shown by default: the fewest and the most picks among them


@dataclass
class Report:
    """A built report: the page, and the problems met on the way, one clear line each (the page lists
    them too)."""

    html: str
    problems: list[str]
    n_micrographs: int
    n_picks: int


def build_report(picks_path: str | os.PathLike, micrographs, *, references=None, model=None,
                 box_px: float | None = None, threshold: float | None = None, picks_fmt: str | None = None,
                 gallery: int | None = GALLERY_SIZE, match_px: float | None = None, title: str | None = None,
                 seed: int = 0) -> Report:
    """The HTML report of the picks in ``picks_path`` (a folder, file or RELION list) on ``micrographs``.

    Parameters
    ----------
    picks_path, picks_fmt
        The picks, read as :func:`~deeppick.io.read_picks` reads them.
    micrographs
        The micrographs (folder, file or list): the gallery draws on them.
    references
        Optional reference coordinates (a path, or a picks table): true / false positives and misses.
    model
        Optional :class:`~deeppick.model.PickerModel`: its box, threshold and how it was chosen, and the
        score map of one micrograph.
    box_px, threshold
        Override the model's (``box_px`` is needed without a model).
    gallery
        How many micrographs to draw (the fewest and the most picks among them); None draws every one.
    match_px
        Match distance against references (default 0.2 box).
    """
    from .io import (covered_micrographs, list_micrographs, micrograph_stem, picks_cut_at, read_picks,
                     read_micrograph)
    from .metrics import evaluate_picks

    problems: list[str] = []
    picks = read_picks(picks_path, picks_fmt)
    covered = sorted(covered_micrographs(picks_path, picks_fmt))
    if model is not None:
        from .pipeline import effective_threshold

        box_px = box_px or model.box_px
        threshold = threshold if threshold is not None else effective_threshold(model)
    if not box_px:
        from .errors import ConfigError

        raise ConfigError("the box size is unknown: give --box-px or --model, so picks are drawn at their size")
    cut = picks_cut_at(picks_path, picks_fmt) if Path(picks_path).exists() else None
    if threshold is None and cut:
        threshold = cut
    paths = {micrograph_stem(p): p for p in list_micrographs(micrographs)}
    without_image = [name for name in covered if name not in paths]
    if without_image:
        problems.append(f"{len(without_image)} micrograph(s) have picks but are not among the micrographs given "
                        f"(e.g. {', '.join(without_image[:3])}): counted, not drawn")
    if not len(picks):
        problems.append(f"{picks_path}: no picks at all in these coordinate files")
    kept = picks if threshold is None else picks[picks["score"].fillna(1.0) >= threshold]
    counts = kept.groupby("micrograph").size().reindex(covered, fill_value=0) if covered else pd.Series(dtype=int)
    refs = None
    evaluation = None
    per_micrograph = {}
    if references is not None:
        from .metrics import SharedNames

        refs = references if isinstance(references, pd.DataFrame) else read_picks(references)
        named = set(refs["micrograph"])
        shared = sorted(set(covered) & named)
        names = SharedNames(shared, sorted(set(covered) - named), sorted(named - set(covered)))
        if names.references_only:
            problems.append(f"{len(names.references_only)} micrograph(s) have references but no picks file "
                            f"(e.g. {', '.join(names.references_only[:3])}): left out of the figures")
        if shared:
            evaluation = evaluate_picks(picks, refs, box_px, match_px=match_px, threshold=threshold,
                                        micrographs=shared)
            per_micrograph = _per_micrograph(kept, refs, shared, evaluation.max_dist_px)
        else:
            problems.append("no micrograph name is in both the picks and the references: nothing to compare")
    failures = _recorded_failures(picks_path)
    chosen = _gallery_choice(counts, [n for n in covered if n in paths], gallery, seed)
    views = []
    for name in chosen:
        image = read_micrograph(paths[name])
        views.append((name, _view_png(image, picks[picks["micrograph"] == name], box_px, refs, name, match_px,
                                      threshold)))
    score_map = None
    if model is not None and chosen:
        name = max(chosen, key=lambda n: counts.get(n, 0))
        score_map = (name, _score_map_png(model, read_micrograph(paths[name])))
    html = _html(title or f"deeppick picks: {picks_path}", picks=picks, kept=kept, counts=counts,
                 threshold=threshold, cut=cut, box_px=box_px, model=model, evaluation=evaluation,
                 per_micrograph=per_micrograph, failures=failures, views=views, score_map=score_map,
                 problems=problems, with_references=refs is not None, n_shown=len(chosen))
    return Report(html=html, problems=problems, n_micrographs=len(covered), n_picks=int(len(kept)))


def write_html_report(report: Report, path: str | os.PathLike) -> Path:
    """Write a built report atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, report.html)
    return path


def _per_micrograph(kept: pd.DataFrame, refs: pd.DataFrame, names: list[str], match_px: float) -> dict:
    """Precision and recall of the kept picks on each micrograph."""
    from .metrics import match_picks

    out = {}
    for name in names:
        mine, theirs = kept[kept["micrograph"] == name], refs[refs["micrograph"] == name]
        match = match_picks(mine[["x", "y"]].to_numpy(float), mine["score"].fillna(1.0).to_numpy(),
                            theirs[["x", "y"]].to_numpy(float), match_px)
        out[name] = (match.n_tp / len(mine) if len(mine) else float("nan"),
                     match.n_tp / len(theirs) if len(theirs) else float("nan"), len(mine), len(theirs))
    return out


def _recorded_failures(picks_path) -> dict:
    from .batch import read_pick_record

    folder = Path(picks_path)
    return read_pick_record(folder if folder.is_dir() else folder.parent).get("failed", {})


def _gallery_choice(counts: pd.Series, drawable: list[str], size: int | None, seed: int) -> list[str]:
    """The micrographs to draw: all when ``size`` is None, else the fewest and the most picks first and then
    a seeded random sample of the rest, in name order."""
    if size is None or len(drawable) <= size:
        return sorted(drawable)
    by_count = sorted(drawable, key=lambda n: (counts.get(n, 0), n))
    chosen = {by_count[0], by_count[-1]}
    rest = [n for n in drawable if n not in chosen]
    rng = np.random.default_rng(seed)
    chosen.update(rng.choice(rest, size=max(size - len(chosen), 0), replace=False).tolist())
    return sorted(chosen)


def _view_png(image, picks, box_px, refs, name, match_px, threshold) -> bytes:
    from .views import draw_picks, micrograph_view, png_bytes

    view = micrograph_view(image, box_px=box_px)
    mine = None if refs is None else refs[refs["micrograph"] == name]
    rgb = draw_picks(view, picks, box_px=box_px, references=mine, match_px=match_px, threshold=threshold)
    return png_bytes(rgb, colours=64)


def _score_map_png(model, image) -> bytes:
    """The model's score map of ``image`` as the network sees it: probability 0 (dark) to 1 (yellow)."""
    from .pipeline import score_micrograph
    from .views import VIEW_WIDTH_PX, png_bytes, score_colours

    scores = score_micrograph(model, image).scores
    rgb = score_colours(scores.ravel()).reshape(*scores.shape, 3)
    factor = max(1, int(VIEW_WIDTH_PX // max(scores.shape[1], 1) // 2))
    return png_bytes(np.kron(rgb, np.ones((factor, factor, 1), dtype=np.uint8)))


def _data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _histogram_png(values, *, bins, xlabel: str, title: str, mark: float | None = None, mark_label: str = "") -> bytes:
    fig = _figure(5.0, 2.8)
    ax = fig.add_subplot()
    ax.hist(values, bins=bins, color="C0")
    if mark is not None:
        ax.axvline(mark, color="0.2", ls="--", lw=1.0, label=mark_label)
        ax.legend(fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    return _png(fig)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right}
th{text-align:left}td:first-child{text-align:left}table.facts td{text-align:left}
.figures{display:flex;flex-wrap:wrap;gap:1em}.figures img{max-width:calc(50% - .5em);min-width:300px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:.8em}
.gallery figure{margin:0}.gallery img{width:100%;cursor:zoom-in;border:1px solid #ccc}
figcaption{font-size:.85em}
.key span{display:inline-block;width:1em;height:1em;border-radius:50%;border:3px solid;margin:0 .3em 0 1em;
vertical-align:middle}
.problem{color:#8a4b00}
#overlay{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);padding:1em;box-sizing:border-box;
cursor:zoom-out;text-align:center}
#overlay img{max-width:100%;max-height:92vh}#overlay p{color:#eee;margin:.3em}
.pair{display:flex;gap:1em;flex-wrap:wrap}.pair figure{margin:0;flex:1;min-width:300px}.pair img{width:100%}
"""

_SCRIPT = """
function show(img){var o=document.getElementById('overlay');o.querySelector('img').src=img.src;
o.querySelector('p').textContent=img.alt;o.style.display='block';}
function hide(){document.getElementById('overlay').style.display='none';}
"""


def _html(title, *, picks, kept, counts, threshold, cut, box_px, model, evaluation, per_micrograph, failures,
          views, score_map, problems, with_references, n_shown) -> str:
    from html import escape

    from .views import FALSE_POSITIVE, MISSED, TRUE_POSITIVE

    def colour(rgb):
        return "#%02x%02x%02x" % tuple(rgb)

    n_mics, n_kept = len(counts), int(len(kept))
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>",
           f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style>",
           f"<script>{_SCRIPT}</script></head><body>", f"<h1>{escape(title)}</h1>"]
    cut_text = ("every pick" if threshold is None else f"picks scoring ≥ {threshold:.3g}"
                + (" (the files hold every candidate; the threshold is the model's)" if cut == 0 else ""))
    out.append(f"<p><b>{n_kept:,}</b> picks ({cut_text}) on <b>{n_mics:,}</b> micrographs: "
               f"{n_kept / max(n_mics, 1):.1f} per micrograph; box {box_px:g} px.</p>")
    for problem in problems:
        out.append(f"<p class='problem'>⚠ {escape(problem)}</p>")
    out.append("<h2>Summary</h2><table class='facts'>")
    if n_mics:
        fewest = counts.sort_values(kind="mergesort").head(3)
        most = counts.sort_values(ascending=False, kind="mergesort").head(3)
        out.append("<tr><th>fewest picks</th><td>" + ", ".join(f"{escape(n)} ({c})" for n, c in fewest.items())
                   + "</td></tr>")
        out.append("<tr><th>most picks</th><td>" + ", ".join(f"{escape(n)} ({c})" for n, c in most.items())
                   + "</td></tr>")
    if model is not None:
        out.append(f"<tr><th>model</th><td>{escape(str(model.info.get('name') or model.arch))}, box "
                   f"{model.box_px:g} px, threshold {_fmt(model.threshold)} ({escape(_threshold_origin(model))})"
                   "</td></tr>")
    out.append(f"<tr><th>failed micrographs</th><td>{len(failures)}</td></tr></table>")
    if failures:
        out.append("<table>" + "".join(f"<tr><td>{escape(Path(p).name)}</td><td style='text-align:left'>"
                                       f"{escape(reason)}</td></tr>" for p, reason in sorted(failures.items()))
                   + "</table>")
    figures = []
    if n_mics:
        figures.append(_histogram_png(counts.to_numpy(), bins=min(40, max(5, n_mics)), xlabel="picks per micrograph",
                                      title=f"Picks per micrograph ({n_mics:,} micrographs)"))
    if len(picks) and picks["score"].notna().any():
        figures.append(_histogram_png(picks["score"].dropna().to_numpy(), bins=40, xlabel="score",
                                      title="Scores of the picks in the files", mark=threshold,
                                      mark_label=None if threshold is None else f"threshold {threshold:.3g}"))
    out.append("<div class='figures'>" + "".join(f"<img alt='histogram' src='{_data_uri(f)}'>" for f in figures)
               + "</div>")
    if evaluation is not None:
        out.append("<h2>Against the references</h2>")
        out.append(f"<p>AP <b>{evaluation.ap:.3f}</b> over {evaluation.n_micrographs} micrographs and "
                   f"{evaluation.n_refs:,} references; at the threshold precision {evaluation.precision:.3f}, recall "
                   f"{evaluation.recall:.3f}, F2 {evaluation.f2:.3f}; centre error {evaluation.centre_error_box:.3f} "
                   f"box (matched within {evaluation.max_dist_px:.1f} px).</p>")
        out.append("<div class='figures'>" + "".join(f"<img alt='curve' src='{_data_uri(_png(fig))}'>"
                                                    for fig in (pr_figure(evaluation), fbeta_figure(evaluation)))
                   + "</div>")
        out.append("<table><tr><th>micrograph</th><th>picks</th><th>references</th><th>precision</th>"
                   "<th>recall</th></tr>" + "".join(
                       f"<tr><td>{escape(n)}</td><td>{k}</td><td>{r}</td><td>{_fmt(p)}</td><td>{_fmt(q)}</td></tr>"
                       for n, (p, q, k, r) in sorted(per_micrograph.items())) + "</table>")
    out.append(f"<h2 id='gallery'>Micrographs ({n_shown} of {n_mics:,}; click one to enlarge)</h2>")
    if with_references:
        out.append("<p class='key'>"
                   + "".join(f"<span style='border-color:{colour(c)}'></span>{label}" for c, label in
                             ((TRUE_POSITIVE, "true positive"), (FALSE_POSITIVE, "false positive"),
                              (MISSED, "missed reference")))
                   + f"; circles of the box's diameter ({box_px:g} px)</p>")
    else:
        out.append("<p class='key'>Each pick is a circle of the box's diameter coloured by its score: dark blue "
                   "(low) to yellow (high). Micrographs low-pass filtered, contrast stretched.</p>")
    out.append("<div class='gallery'>")
    for name, png in views:
        caption = f"{name}: {counts.get(name, 0)} picks"
        out.append(f"<figure><img alt='{escape(caption)}' src='{_data_uri(png)}' onclick='show(this)'>"
                   f"<figcaption>{escape(caption)}</figcaption></figure>")
    out.append("</div>")
    if score_map is not None:
        name, png = score_map
        picked = next(p for n, p in views if n == name)
        out.append(f"<h2>What the network sees: {escape(name)}</h2><div class='pair'>"
                   f"<figure><img alt='score map of {escape(name)}' src='{_data_uri(png)}' onclick='show(this)'>"
                   "<figcaption>score map: the particle probability of the box centred at each scan position "
                   "(dark 0, yellow 1)</figcaption></figure>"
                   f"<figure><img alt='picks on {escape(name)}' src='{_data_uri(picked)}' onclick='show(this)'>"
                   "<figcaption>its picks</figcaption></figure></div>")
    out.append("<div id='overlay' onclick='hide()'><img alt=''><p></p></div>")
    out.append("<p style='font-size:.8em;color:#666'>Written by deeppick. Every image is embedded in this file.</p>"
               "</body></html>")
    return "\n".join(out)


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _threshold_origin(model) -> str:
    info = model.info.get("threshold", {})
    if "rule" in info:
        return info["rule"]
    if "micrographs" in info:
        return (f"F{info.get('beta', 2):g}-optimal on {len(info['micrographs'])} held-out micrograph(s), "
                f"AP {info.get('ap', float('nan')):.3f} there")
    return "none chosen: picks cut at 0.5" if model.threshold is None else "stored in the model"
