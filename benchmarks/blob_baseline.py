"""A label-free baseline for fully automated picking: a dark-disc filter that knows only the diameter.

Each test micrograph (normalised to zero mean, unit SD) is averaged over a disc of radius ``diameter/3``,
minus a Gaussian background (σ = one diameter); candidates are the deepest minima, one per 0.8-box peak
window, at least half a box from the edge (as ``pick``), ranked by depth. No network, no labels, no
training: what a model must beat before its picks say more than "there is a dark blob of this size".
The radius (of 0.25 / 0.33 / 0.4 / 0.5 diameter), the background (1 or 3 diameters) and the window (0.6
or 0.8 box) were looked at on cryoppp-10059's train split only; the figures printed are on the test
splits, at the issue's match distance of 0.25 × diameter, beside Topaz's general model on the same splits.

Usage: ``python benchmarks/blob_baseline.py [--packs ...]``. Needs ../shared/realdata; 1.5 minutes
for the three packs' test splits on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from deeppick.datasets import load_dataset
from deeppick.io import concat_picks, make_picks, micrograph_stem, read_micrograph
from deeppick.metrics import evaluate_picks
from deeppick.postprocess import PostprocessConfig, edge_mask, find_peaks, sort_picks

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere: realdata.py is beside us
from realdata import MATCH_FRACTION_OF_DIAMETER, PACKS, REALDATA, TOPAZ_GENERAL_AP, require_realdata  # noqa: E402

# looked at on cryoppp-10059 train: radius 0.25 / 0.33 / 0.4 / 0.5 diameter gave AP 0.23 / 0.32 / 0.29 / 0.14
DISC_RADIUS_DIAMETER = 1 / 3
BACKGROUND_SIGMA_DIAMETER = 1.0  # 3 diameters: AP 0.01–0.02 lower there


def disc_depth(image: np.ndarray, diameter_px: float) -> np.ndarray:
    """How dark the disc of radius ``diameter/3`` around each pixel is against its surroundings (in SD)."""
    z = (image - image.mean()) / image.std()
    radius = DISC_RADIUS_DIAMETER * diameter_px
    half = int(radius)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    disc = (np.hypot(xx, yy) <= radius).astype(np.float64)
    local = fftconvolve(z, disc / disc.sum(), mode="same")
    return gaussian_filter(z, BACKGROUND_SIGMA_DIAMETER * diameter_px) - local


def blob_picks(path, diameter_px: float, box_px: float, post: PostprocessConfig = PostprocessConfig()):
    """Every disc-filter candidate of one micrograph, deepest first (picks table, score = depth in SD)."""
    image = read_micrograph(path).astype(np.float64)
    depth = disc_depth(image, diameter_px)
    rows, cols, values = find_peaks(depth, post.peak_window_box * box_px, min_score=-np.inf)
    keep = edge_mask(image.shape, cols, rows, post.edge_margin_box * box_px)
    return sort_picks(make_picks(micrograph_stem(path), cols[keep], rows[keep], values[keep]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    require_realdata(args.realdata)
    print(f"{'pack':<20} {'micrographs':>11} {'references':>10} {'candidates':>10} {'max recall':>10} "
          f"{'AP disc':>8} {'AP Topaz':>8}")
    for pack in args.packs:
        dataset = load_dataset(args.realdata / pack)
        paths = dataset.paths(args.split)
        box_px = dataset.default_box_px()
        picks = concat_picks([blob_picks(p, dataset.diameter_px, box_px) for p in paths])
        match_px = MATCH_FRACTION_OF_DIAMETER * dataset.diameter_px
        result = evaluate_picks(picks, dataset.picks, box_px, match_px=match_px,
                                micrographs=[micrograph_stem(p) for p in paths])
        topaz = TOPAZ_GENERAL_AP.get(pack) if args.split == "test" else None
        print(f"{pack:<20} {len(paths):>11} {result.n_refs:>10} {len(picks):>10} "
              f"{result.tp.sum() / result.n_refs:>10.3f} {result.ap:>8.3f} "
              f"{'' if topaz is None else f'{topaz:.2f}':>8}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
