"""Semi-automated picking on the real annotated packs (issue 5 targets), measured in one run.

For each pack (``deeppick.benchmark.realdata.semi_automated``): train on its train split and choose the
F2 threshold on its valid split (or held-out train micrographs), pick its test split keeping every
candidate, and evaluate at 0.25 × diameter_px. Prints AP next to the target and to Topaz's pretrained
general model on the same test splits, and two figures on the false positives that tell missing labels
from picking errors: the precision of the top-ranked picks (as many as half the references), and the
share of false positives above the threshold that lie ≥ 0.7 diameter from every reference.

Usage: ``python benchmarks/real_data_ap.py [--packs ribosome80s-10028 ...] [--epochs 100] [--patience 10]
[--max-micrographs N] [--near-negatives R] [--off-centre R] [--out DIR | --models DIR] [--json OUT]``
Needs ../shared/realdata (the real packs); takes several minutes per pack on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from deeppick.benchmark import PACKS, default_realdata, require_realdata, write_figures  # noqa: E402
from deeppick.benchmark.realdata import semi_automated, semi_automated_table  # noqa: E402
from deeppick.patches import PatchConfig  # noqa: E402
from deeppick.preprocess import PreprocessConfig  # noqa: E402
from deeppick.train import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--realdata", type=Path, default=default_realdata())
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--patience", type=int, default=TrainConfig().patience)
    parser.add_argument("--max-micrographs", type=int, default=None,
                        help="train micrographs per pack [default: the whole train split, as issue 5 asks]")
    parser.add_argument("--near-negatives", type=float, default=PatchConfig().near_negative_ratio,
                        help="near-miss background patches per particle (PatchConfig.near_negative_ratio)")
    parser.add_argument("--off-centre", type=float, default=PatchConfig().off_centre_ratio,
                        help="off-centre views with soft targets per particle (PatchConfig.off_centre_ratio)")
    parser.add_argument("--hold-out-patches", action="store_true",
                        help="early stopping validates on patches drawn one by one, not on whole particles "
                             "(TrainConfig.hold_out_particles False)")
    parser.add_argument("--highpass", type=float, default=0.0, metavar="SIGMA",
                        help="background subtraction, σ in model px (PreprocessConfig.highpass_sigma_model_px) "
                             "[default: 0, off]")
    parser.add_argument("--out", type=Path, default=None, help="also save each model here")
    parser.add_argument("--models", type=Path, default=None,
                        help="evaluate the models saved by an earlier --out DIR run instead of training (train s: 0)")
    parser.add_argument("--json", type=Path, help="also write the figures to JSON/real_data_ap.json")
    args = parser.parse_args()
    root = require_realdata(args.realdata)
    train_config = TrainConfig(epochs=args.epochs, patience=args.patience,
                               hold_out_particles=not args.hold_out_patches)
    patch_config = PatchConfig(near_negative_ratio=args.near_negatives, off_centre_ratio=args.off_centre)
    rows = []
    for pack in args.packs:
        row = semi_automated(root / pack, train_config=train_config, patch_config=patch_config,
                             preprocess=PreprocessConfig(highpass_sigma_model_px=args.highpass),
                             max_micrographs=args.max_micrographs,
                             model_path=args.models / f"{pack}.pt" if args.models else None, save_to=args.out)
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    print()
    print(semi_automated_table(rows))
    if args.json:
        print(f"wrote {write_figures(args.json, 'real_data_ap', {'rows': rows})}")


if __name__ == "__main__":
    main()
