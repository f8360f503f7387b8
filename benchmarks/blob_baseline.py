"""A label-free baseline for fully automated picking: a dark-disc filter that knows only the diameter.

The filter is ``deeppick.benchmark.baselines.disc_filter_picks``: the deepest minima of a disc average
(radius ``diameter/3``) against a Gaussian background, one per 0.8-box peak window, ranked by depth. No
network, no labels, no training: what a model must beat before its picks say more than "there is a dark
blob of this size". The radius (of 0.25 / 0.33 / 0.4 / 0.5 diameter), the background (1 or 3 diameters)
and the window (0.6 or 0.8 box) were looked at on cryoppp-10059's train split only; the figures printed
are on the test splits, at 0.25 × diameter, beside Topaz's general model on the same splits.

Usage: ``python benchmarks/blob_baseline.py [--packs ...]``. Needs ../shared/realdata; 1.5 minutes
for the three packs' test splits on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deeppick.benchmark import (MATCH_FRACTION_OF_DIAMETER, PACKS, TOPAZ_GENERAL_AP, default_realdata,
                                require_realdata)
from deeppick.benchmark.baselines import disc_filter_picks
from deeppick.datasets import load_dataset
from deeppick.io import concat_picks, micrograph_stem
from deeppick.metrics import evaluate_picks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--realdata", type=Path, default=default_realdata())
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    root = require_realdata(args.realdata)
    print(f"{'pack':<20} {'micrographs':>11} {'references':>10} {'candidates':>10} {'max recall':>10} "
          f"{'AP disc':>8} {'AP Topaz':>8}")
    for pack in args.packs:
        dataset = load_dataset(root / pack)
        paths = dataset.paths(args.split)
        box_px = dataset.default_box_px()
        picks = concat_picks([disc_filter_picks(p, dataset.diameter_px, box_px) for p in paths])
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
