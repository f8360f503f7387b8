"""How little must a user label? Test AP against the number of fully labelled micrographs trained on.

For each pack and each count N: a model trained (as ``deeppick train --dataset``: box = diameter, default
patches and preparation, early stopping) on the first N micrographs of the train split only, its peak
window, cleaning and F2 threshold chosen on the held-out micrographs (as ``train`` does), the test split
picked and matched at 0.25 × diameter. With ``--general DIR`` (the ``general-without-<pack>.pt`` models
that ``python benchmarks/leave_one_out.py --out DIR`` writes: none of them has seen its pack) each row is
also trained as ``deeppick train --init``: fine-tuned from the general model that never saw the molecule.

Usage: ``python benchmarks/label_budget.py [--packs ribosome80s-10028 ...] [--micrographs 1 2 4]
[--general DIR]``. Needs ../shared/realdata. Minutes per row on 2 cores (ribosome ~1, cryoppp ~6–12,
betagal more: 4096² micrographs).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import time
from pathlib import Path

from deeppick.datasets import load_dataset
from deeppick.model import load_model
from deeppick.patches import PatchConfig, extract_patches
from deeppick.metrics import MATCH_FRACTION
from deeppick.pipeline import PickConfig, evaluate_model
from deeppick.preprocess import PreprocessConfig
from deeppick.pretrain import with_box
from deeppick.train import TrainConfig
from deeppick.tuning import split_for_threshold, train_picker

from deeppick.benchmark import MATCH_FRACTION_OF_DIAMETER, PACKS, default_realdata, require_realdata  # noqa: E402
REALDATA = default_realdata()


def budget_row(dataset, n_micrographs: int, init=None, seed: int = 0) -> dict:
    """Train on the first ``n_micrographs`` train micrographs (from ``init`` when given); test AP."""
    train, held_out = split_for_threshold(dataset)
    box_px = dataset.default_box_px()
    preprocess = init.preprocess if init is not None else PreprocessConfig()
    start = time.perf_counter()
    patches = extract_patches(train[:n_micrographs], dataset.picks, box_px, config=PatchConfig(),
                              preprocess=preprocess, seed=seed,
                              dataset=dataset.name)
    model = train_picker(patches, held_out=(held_out, dataset.picks), train_config=TrainConfig(seed=seed), init=init,
                         match_px=MATCH_FRACTION * dataset.diameter_px)
    seconds = time.perf_counter() - start
    evaluation, _ = evaluate_model(model, dataset.paths("test"), dataset.picks, config=PickConfig(),
                                   match_px=MATCH_FRACTION_OF_DIAMETER * dataset.diameter_px)
    return {"micrographs": len(train[:n_micrographs]), "particles": int((patches.labels == 1).sum()),
            "ap": evaluation.ap, "held_out_ap": model.info["threshold"]["ap"], "epochs": model.info["epochs_run"],
            "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--micrographs", nargs="+", type=int, default=[1, 2, 4],
                        help="counts of labelled train micrographs (a count above the split's uses all of it)")
    parser.add_argument("--general", type=Path, default=None,
                        help="folder of general-without-<pack>.pt (leave_one_out.py --out DIR): also fine-tune")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    require_realdata(REALDATA)
    if args.general is not None:
        missing = [p for p in args.packs if not (args.general / f"general-without-{p}.pt").is_file()]
        if missing:
            raise SystemExit(f"{args.general}: no general-without-<pack>.pt for {', '.join(missing)}; make them "
                             f"with python benchmarks/leave_one_out.py --out {args.general}")
    print(f"{'pack':<20} {'start':<8} {'mics':>4} {'particles':>9} {'test AP':>7} {'held-out AP':>11} "
          f"{'epochs':>6} {'train s':>7}")
    for pack in args.packs:
        dataset = load_dataset(REALDATA / pack)
        starts = [("scratch", None)]
        if args.general is not None:
            general = load_model(args.general / f"general-without-{pack}.pt")
            starts.append(("general", with_box(general, dataset.default_box_px())))
        for n in args.micrographs:
            for name, init in starts:
                r = budget_row(dataset, n, init, args.seed)
                print(f"{pack:<20} {name:<8} {r['micrographs']:>4} {r['particles']:>9} {r['ap']:>7.3f} "
                      f"{r['held_out_ap']:>11.3f} {r['epochs']:>6} {r['seconds']:>7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
