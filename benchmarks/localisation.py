"""Where a trained model's picks sit: against the references, and against an independent detector.

For each pack, the test split is picked with a trained model (every candidate kept) and, independently,
with a matched filter: the rotation- and reflection-averaged mean of the train split's particles (radius
0.67 diameter, mean removed inside), correlated with the micrograph, one peak per 0.4 diameter, as many
peaks as 1.5 × the references. For every reference with a model pick and a filter peak within half a
diameter it prints the robust SD (1.4826 × MAD, mean of x and y) of the three differences (model −
reference, filter − reference, model − filter), the share of references whose model pick lies beyond the
match distance (0.25 diameter) and, of those, how often the filter's peak sits within 3 px of the model's
pick (both detectors agree, away from the reference) or within the match distance of the reference.
Over all references it also prints the share with no candidate of any score within the match distance
while one 0.25–0.6 diameter away scores above the threshold, and with one within that scores lower than
such a rim candidate. Two detectors that agree with each other far better than with the references point
at what the images show at the references, not at the picker.

Usage: ``python benchmarks/localisation.py --models DIR [--packs cryoppp-10059 ...]``, DIR holding
``<pack>.pt`` as written by ``python benchmarks/real_data_ap.py --out DIR``. Needs ../shared/realdata;
about a minute per pack on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter
from scipy.signal import fftconvolve

from deeppick.datasets import load_dataset
from deeppick.io import micrograph_stem, read_micrograph
from deeppick.model import load_model
from deeppick.pipeline import PickConfig, evaluate_model

from deeppick.benchmark import MATCH_FRACTION_OF_DIAMETER, PACKS, default_realdata, require_realdata  # noqa: E402
REALDATA = default_realdata()

AGREE_PX = 3.0  # two detectors "agree" within this distance


def _normalised(path) -> np.ndarray:
    image = read_micrograph(path).astype(np.float64)
    return (image - image.mean()) / image.std()


def matched_filter_template(dataset, radius_px: int) -> np.ndarray:
    """Mean of the train split's particle crops over the 8 rotations and reflections, zero-mean in a disk."""
    half = int(round(1.1 * radius_px))
    total = np.zeros((2 * half + 1, 2 * half + 1))
    for path in dataset.paths("train"):
        image = _normalised(path)
        rows, cols = image.shape
        xy = dataset.picks.loc[dataset.picks["micrograph"] == micrograph_stem(path), ["x", "y"]].to_numpy()
        for x, y in np.round(xy).astype(int):
            if half <= x < cols - half and half <= y < rows - half:
                crop = image[y - half:y + half + 1, x - half:x + half + 1]
                for k in range(4):
                    total += np.rot90(crop, k) + np.rot90(crop, k).T
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    inside = np.hypot(xx, yy) <= radius_px
    template = np.where(inside, total - total[inside].mean(), 0.0)
    return template


def matched_filter_peaks(image: np.ndarray, template: np.ndarray, window_px: int, n: int,
                         edge_px: int) -> np.ndarray:
    """The ``n`` highest local maxima of the correlation (one per ``window_px`` square), ``x, y``."""
    score = fftconvolve(image, template[::-1, ::-1], mode="same")
    peak = score == maximum_filter(score, size=window_px | 1)
    peak[:edge_px], peak[-edge_px:], peak[:, :edge_px], peak[:, -edge_px:] = False, False, False, False
    rows, cols = np.nonzero(peak)
    order = np.argsort(-score[rows, cols])[:n]
    return np.column_stack([cols[order], rows[order]]).astype(float)


def _nearest(a: np.ndarray, b: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest row of ``b`` for each row of ``a``, and whether it lies within ``limit``."""
    if not len(b):
        return np.zeros(len(a), int), np.zeros(len(a), bool)
    d = np.hypot(*(a[:, None] - b[None]).transpose(2, 0, 1))
    j = d.argmin(axis=1)
    return j, d[np.arange(len(a)), j] <= limit


def _robust_sd(v: np.ndarray) -> float:
    return float(np.mean(1.4826 * np.median(np.abs(v - np.median(v, axis=0)), axis=0)))


def measure(pack: str, model_path: Path) -> dict:
    dataset = load_dataset(REALDATA / pack)
    diameter = dataset.diameter_px
    match_px = MATCH_FRACTION_OF_DIAMETER * diameter
    model = load_model(model_path)
    _, candidates = evaluate_model(model, dataset.paths("test"), dataset.picks, config=PickConfig(), match_px=match_px)
    template = matched_filter_template(dataset, int(round(0.67 * diameter)))
    model_ref, filter_ref, model_filter = [], [], []
    no_near, near_below = 0, 0
    n_refs = 0
    for path in dataset.paths("test"):
        stem = micrograph_stem(path)
        refs = dataset.picks.loc[dataset.picks["micrograph"] == stem, ["x", "y"]].to_numpy(float)
        mine = candidates[candidates["micrograph"] == stem]
        all_xy, all_score = mine[["x", "y"]].to_numpy(float), mine["score"].to_numpy(float)
        above = all_xy[all_score >= model.threshold]
        peaks = matched_filter_peaks(_normalised(path), template, int(round(0.4 * diameter)),
                                     int(1.5 * len(refs)), int(diameter))
        j_model, ok_model = _nearest(refs, above, 0.5 * diameter)
        j_filter, ok_filter = _nearest(refs, peaks, 0.5 * diameter)
        both = ok_model & ok_filter
        model_ref.append(above[j_model[both]] - refs[both])
        filter_ref.append(peaks[j_filter[both]] - refs[both])
        model_filter.append(above[j_model[both]] - peaks[j_filter[both]])
        n_refs += len(refs)
        if len(all_xy):
            d = np.hypot(*(refs[:, None] - all_xy[None]).transpose(2, 0, 1))
            near = d <= match_px
            rim = (d > match_px) & (d <= 0.6 * diameter)
            best_near = np.where(near, all_score, -1).max(axis=1)
            best_rim = np.where(rim, all_score, -1).max(axis=1)
            rim_above = best_rim >= model.threshold
            no_near += int((~near.any(axis=1) & rim_above).sum())
            near_below += int((near.any(axis=1) & (best_near < best_rim) & rim_above).sum())
    model_ref, filter_ref, model_filter = (np.concatenate(v) for v in (model_ref, filter_ref, model_filter))
    far = np.hypot(*model_ref.T) > match_px
    return {
        "refs": n_refs, "both": len(model_ref),
        "sd_model_ref": _robust_sd(model_ref), "sd_filter_ref": _robust_sd(filter_ref),
        "sd_model_filter": _robust_sd(model_filter),
        "model_far": float(far.mean()),
        "filter_agrees": float((np.hypot(*model_filter[far].T) <= AGREE_PX).mean()) if far.any() else float("nan"),
        "filter_at_ref": float((np.hypot(*filter_ref[far].T) <= match_px).mean()) if far.any() else float("nan"),
        "no_near": no_near / n_refs, "near_below_rim": near_below / n_refs, "diameter": diameter,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, required=True,
                        help="folder of <pack>.pt models (benchmarks/real_data_ap.py --out DIR)")
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    args = parser.parse_args()
    require_realdata(REALDATA)
    missing = [p for p in args.packs if not (args.models / f"{p}.pt").is_file()]
    if missing:
        raise SystemExit(f"{args.models}: no model for {', '.join(missing)}; make them with "
                         f"python benchmarks/real_data_ap.py --out {args.models}")
    print("robust SD px per axis | model beyond 0.25 D: of those, filter within 3 px of model / within 0.25 D "
          "of reference | references with no candidate within 0.25 D, a rim one above threshold | with one "
          "within, scored below a rim one")
    print(f"{'pack':20s} {'D px':>5s} {'refs':>5s} {'both':>5s} {'mod-ref':>8s} {'filt-ref':>8s} {'mod-filt':>8s}"
          f" {'mod far':>8s} {'agree':>6s} {'at ref':>6s} {'no near':>8s} {'below rim':>9s}")
    for pack in args.packs:
        r = measure(pack, args.models / f"{pack}.pt")
        print(f"{pack:20s} {r['diameter']:5.0f} {r['refs']:5d} {r['both']:5d} {r['sd_model_ref']:8.2f} "
              f"{r['sd_filter_ref']:8.2f} {r['sd_model_filter']:8.2f} {r['model_far']:8.3f} "
              f"{r['filter_agrees']:6.3f} {r['filter_at_ref']:6.3f} {r['no_near']:8.3f} {r['near_below_rim']:9.3f}",
              flush=True)


if __name__ == "__main__":
    main()
