"""Plots and a JSON summary of an evaluation: precision–recall and F-beta against threshold.

Figures are drawn with Matplotlib's object API on the Agg canvas (no pyplot state, no display needed)
and written atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

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


def plot_pr_curve(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Write the precision–recall curve of ``evaluation`` as a PNG at ``path``; returns the path.

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
    return _save(fig, path)


def plot_fbeta_vs_threshold(evaluation: Evaluation, path: str | os.PathLike, beta: float | None = None) -> Path:
    """Write F-beta, precision and recall against the score threshold as a PNG at ``path``.

    ``beta`` defaults to the evaluation's. The threshold in use (``evaluation.threshold``, the model's,
    chosen on held-out micrographs) is marked; so is the optimum on these micrographs, which is what they
    would prefer, not a threshold to choose on them. Returns the path.
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
    return _save(fig, path)


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
