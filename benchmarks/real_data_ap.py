"""Semi-automated picking on the real annotated packs (issue 5 targets), measured in one run.

For each pack: train on its train split and choose the F2 threshold on its valid split (or held-out
train micrographs) with :func:`deeppick.pipeline.fit_dataset`, pick its test split keeping every
candidate, and evaluate at 0.25 × diameter_px. Prints AP next to the target and to Topaz's pretrained
general model on the same test splits.

Usage: ``python benchmarks/real_data_ap.py [--packs ribosome80s-10028 ...] [--epochs 30] [--patience 6]
[--max-micrographs N] [--near-negatives R] [--out DIR]``
Needs ../shared/realdata (the real packs); takes several minutes per pack on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import json
import time
from pathlib import Path

from deeppick.datasets import load_dataset
from deeppick.model import save_model
from deeppick.patches import PatchConfig
from deeppick.pipeline import PickConfig, evaluate_model, fit_dataset
from deeppick.train import TrainConfig

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
TARGET_AP = {"ribosome80s-10028": 0.85, "betagal-10017": 0.85, "cryoppp-10059": 0.70}
TOPAZ_AP = {"ribosome80s-10028": 0.74, "betagal-10017": 0.41, "cryoppp-10059": 0.46}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(TARGET_AP))
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--patience", type=int, default=TrainConfig().patience)
    parser.add_argument("--max-micrographs", type=int, default=None,
                        help="train micrographs per pack [default: the whole train split, as issue 5 asks]")
    parser.add_argument("--near-negatives", type=float, default=PatchConfig().near_negative_ratio,
                        help="near-miss background patches per particle (PatchConfig.near_negative_ratio)")
    parser.add_argument("--out", type=Path, default=None, help="also save each model here")
    args = parser.parse_args()

    rows = []
    for pack in args.packs:
        ds = load_dataset(REALDATA / pack)
        start = time.perf_counter()
        model = fit_dataset(ds, train_config=TrainConfig(epochs=args.epochs, patience=args.patience),
                            max_micrographs=args.max_micrographs,
                            patch_config=PatchConfig(near_negative_ratio=args.near_negatives))
        trained = time.perf_counter() - start
        if args.out:
            save_model(model, args.out / f"{pack}.pt")
        test = ds.paths("test")
        start = time.perf_counter()
        ev, _ = evaluate_model(model, test, ds.picks, PickConfig(), match_px=0.25 * ds.diameter_px)
        picked = time.perf_counter() - start
        post = model.info["postprocess"]
        row = {"pack": pack, "box_px": model.box_px, "val_patch_acc": model.info["val_accuracy"],
               "peak_window_box": post["peak_window_box"], "cleaning": post["max_area_factor"] != float("inf"),
               "valid_AP": model.info["threshold"]["ap"],
               "threshold": model.threshold, "AP": ev.ap, "target": TARGET_AP.get(pack), "topaz": TOPAZ_AP.get(pack),
               "precision": ev.precision, "recall": ev.recall, "F2": ev.f2, "centre_err_box": ev.centre_error_box,
               "train_s": trained, "pick_s_per_mic": picked / len(test)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(f"{'pack':<20}{'box':>5}{'AP':>7}{'target':>8}{'Topaz':>7}{'P':>7}{'R':>7}{'F2':>7}{'thr':>7}"
          f"{'train s':>9}{'s/mic':>7}")
    for r in rows:
        met = "ok" if r["AP"] >= r["target"] else "MISSED"
        print(f"{r['pack']:<20}{r['box_px']:>5.0f}{r['AP']:>7.3f}{r['target']:>8.2f}{r['topaz']:>7.2f}"
              f"{r['precision']:>7.3f}{r['recall']:>7.3f}{r['F2']:>7.3f}{r['threshold']:>7.3f}"
              f"{r['train_s']:>9.0f}{r['pick_s_per_mic']:>7.1f}  {met}")


if __name__ == "__main__":
    main()
