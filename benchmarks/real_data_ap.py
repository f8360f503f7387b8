"""Semi-automated picking on the real annotated packs (issue 5 targets), measured in one run.

For each pack: train on its train split and choose the F2 threshold on its valid split (or held-out
train micrographs) with :func:`deeppick.tuning.fit_dataset`, pick its test split keeping every
candidate, and evaluate at 0.25 × diameter_px. Prints AP next to the target and to Topaz's pretrained
general model on the same test splits, and two figures on the false positives that tell missing labels
from picking errors: the precision of the top-ranked picks (as many as half the references), and the
share of false positives above the threshold that lie ≥ 0.7 diameter from every reference (not a
misplaced or second pick of a labelled particle: an unlabelled particle, or junk).

Usage: ``python benchmarks/real_data_ap.py [--packs ribosome80s-10028 ...] [--epochs 100] [--patience 10]
[--max-micrographs N] [--near-negatives R] [--off-centre R] [--out DIR | --models DIR]``
Needs ../shared/realdata (the real packs); takes several minutes per pack on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deeppick.datasets import load_dataset
from deeppick.io import micrograph_stem
from deeppick.metrics import match_picks
from deeppick.model import load_model, save_model
from deeppick.patches import PatchConfig
from deeppick.pipeline import PickConfig, evaluate_model
from deeppick.tuning import fit_dataset
from deeppick.preprocess import PreprocessConfig
from deeppick.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere: realdata.py is beside us
from realdata import (MATCH_FRACTION_OF_DIAMETER, PACKS, REALDATA, SEMI_AUTOMATED_TARGET_AP,  # noqa: E402
                      TOPAZ_GENERAL_AP, add_highpass_option, require_realdata)


def false_positive_figures(candidates, references, test_paths, diameter_px: float, threshold: float) -> dict:
    """Precision of the top-ranked half-reference-count picks, and the share of false positives above
    ``threshold`` lying ≥ 0.7 diameter from every reference (matched at 0.25 × diameter, as the AP)."""
    ranked, far, n_fp, n_refs = [], 0, 0, 0
    for path in test_paths:
        stem = micrograph_stem(path)
        picks = candidates[candidates["micrograph"] == stem]
        refs = references.loc[references["micrograph"] == stem, ["x", "y"]].to_numpy(float)
        xy = picks[["x", "y"]].to_numpy(float)
        result = match_picks(xy, picks["score"].to_numpy(float), refs, MATCH_FRACTION_OF_DIAMETER * diameter_px)
        ranked += list(zip(result.scores, result.tp))
        n_refs += len(refs)
        fp = ~result.tp & (result.scores >= threshold)
        if fp.any():
            n_fp += int(fp.sum())
            if len(refs) == 0:
                far += int(fp.sum())
            else:
                nearest = np.hypot(*(xy[result.order[fp]][:, None] - refs[None]).transpose(2, 0, 1)).min(axis=1)
                far += int((nearest >= 0.7 * diameter_px).sum())
    ranked.sort(key=lambda t: -t[0])
    top = ranked[:max(n_refs // 2, 1)]
    return {"precision_top_half": sum(tp for _, tp in top) / max(len(top), 1),
            "fp_far_fraction": far / n_fp if n_fp else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
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
    add_highpass_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="also save each model here")
    parser.add_argument("--models", type=Path, default=None,
                        help="evaluate the models saved by an earlier --out DIR run instead of training (train s: 0)")
    args = parser.parse_args()
    require_realdata()

    rows = []
    for pack in args.packs:
        ds = load_dataset(REALDATA / pack)
        start = time.perf_counter()
        if args.models:
            model = load_model(args.models / f"{pack}.pt")
        else:
            model = fit_dataset(ds, train_config=TrainConfig(epochs=args.epochs, patience=args.patience,
                                                             hold_out_particles=not args.hold_out_patches),
                                max_micrographs=args.max_micrographs,
                                patch_config=PatchConfig(near_negative_ratio=args.near_negatives,
                                                         off_centre_ratio=args.off_centre),
                                preprocess=PreprocessConfig(highpass_sigma_model_px=args.highpass))
        trained = 0.0 if args.models else time.perf_counter() - start
        if args.out:
            save_model(model, args.out / f"{pack}.pt")
        test = ds.paths("test")
        start = time.perf_counter()
        ev, candidates = evaluate_model(model, test, ds.picks, config=PickConfig(),
                                        match_px=MATCH_FRACTION_OF_DIAMETER * ds.diameter_px)
        picked = time.perf_counter() - start
        post = model.postprocess
        row = {"pack": pack, "box_px": model.box_px, "val_patch_acc": model.info["val_accuracy"],
               "peak_window_box": post.peak_window_box, "cleaning": post.max_area_factor != float("inf"),
               "valid_AP": model.info["threshold"]["ap"],
               "threshold": model.threshold, "AP": ev.ap,
               "target": SEMI_AUTOMATED_TARGET_AP.get(pack), "topaz": TOPAZ_GENERAL_AP.get(pack),
               "precision": ev.precision, "recall": ev.recall, "F2": ev.f2, "centre_err_box": ev.centre_error_box,
               "train_s": trained, "pick_s_per_mic": picked / len(test),
               **false_positive_figures(candidates, ds.picks, test, ds.diameter_px, model.threshold)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(f"{'pack':<20}{'box':>5}{'AP':>7}{'target':>8}{'Topaz':>7}{'P':>7}{'R':>7}{'F2':>7}{'thr':>7}"
          f"{'train s':>9}{'s/mic':>7}{'P top':>7}{'FP far':>8}")
    for r in rows:
        met = "ok" if r["AP"] >= r["target"] else "MISSED"
        print(f"{r['pack']:<20}{r['box_px']:>5.0f}{r['AP']:>7.3f}{r['target']:>8.2f}{r['topaz']:>7.2f}"
              f"{r['precision']:>7.3f}{r['recall']:>7.3f}{r['F2']:>7.3f}{r['threshold']:>7.3f}"
              f"{r['train_s']:>9.0f}{r['pick_s_per_mic']:>7.1f}{r['precision_top_half']:>7.3f}"
              f"{r['fp_far_fraction']:>8.2f}  {met}")


if __name__ == "__main__":
    main()
