"""Picks on junk: general models autopick simulated micrographs crossed by a carbon edge, with ice crystals.

    python benchmarks/junk_check.py [--models general-a.pt general-b.pt] [--micrographs 4] [--disc-rank MODE]

For each general model (default: the shipped one; e.g. the leave-one-out models of two pretraining
recipes): the share of picks above the threshold within half a box of a contaminant, for the general
model and after one self-training round, beside the share of the area that near a contaminant (what
random picks would give) and the recall of the simulated particles (``deeppick.benchmark.junk``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from deeppick.autopick import DISC_RANKS, AutopickConfig  # noqa: E402
from deeppick.benchmark import write_figures  # noqa: E402
from deeppick.benchmark.junk import junk_check  # noqa: E402
from deeppick.pretrain import load_general_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, default=[None], help="general models [the shipped one]")
    parser.add_argument("--micrographs", type=int, default=4)
    parser.add_argument("--disc-rank", choices=DISC_RANKS, default=AutopickConfig.disc_rank,
                        help="where autopick ranks candidates with their dark-disc depth too "
                             "(AutopickConfig.disc_rank)")
    parser.add_argument("--json", type=Path, help="also write the figures to JSON/junk_check.json")
    args = parser.parse_args(argv)
    config = AutopickConfig(disc_rank=args.disc_rank)
    rows = []
    print(f"{'model':<48} {'picks':>6} {'near junk':>10} {'recall':>7} {'→ picks':>8} {'near junk':>10} "
          f"{'recall':>7} {'area near':>10}")
    for path in args.models:
        with tempfile.TemporaryDirectory(prefix="deeppick-junk-") as work:
            figures = junk_check(load_general_model(path), work, n_micrographs=args.micrographs, config=config)
        rows.append({"model": str(path or "shipped"), **figures})
        g, s = figures["general"], figures["self_trained"]
        print(f"{str(path or 'shipped')[-48:]:<48} {g['picks']:>6} {g['near_junk']:>10.1%} {g['recall']:>7.3f} "
              f"{s['picks']:>8} {s['near_junk']:>10.1%} {s['recall']:>7.3f} {figures['area_near_junk']:>10.1%}"
              f"{'  (rolled back)' if figures['rolled_back'] else ''}", flush=True)
    if args.json:
        print(f"wrote {write_figures(args.json, 'junk_check', {'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
