"""How much is lost when only some particles of each micrograph are labelled?

    python benchmarks/partial_labels.py [--packs ribosome80s-10028 ...] [--fractions 1 0.3 0.1]
        [--labels full|partial|complete|known-background] [--general DIR]
        [--negative-ratio R] [--noise SD] [--contrast J]

For each pack and each fraction: a model trained as ``deeppick train --dataset`` (box = diameter, default
patches and preparation) on the train split with only that fraction of its labels kept (at random, seeded,
every micrograph alike), cleaning, peak window and F2 threshold chosen on the fully labelled held-out
micrographs, the test split picked and matched at 0.25 × diameter. Background patches are drawn ≥ 0.6 box
from the *kept* labels, so unlabelled particles can be drawn as background: what partial labelling costs.
``--labels partial`` trains with positive-unlabelled learning instead (``TrainConfig.unlabelled_prior``:
background patches as unlabelled, the share of particles among them estimated from the labels kept);
``--labels complete`` trains once, adds that model's picks above its threshold on the train micrographs that
lie away from every kept label, and trains again on the completed labels
(``deeppick.tuning.train_on_partial_labels``). ``--labels known-background`` is the control that splits the
cost in two: the kept labels' particle patches, with background drawn as far from *every* particle as with
all labels (as many patches as the kept labels give), so no unlabelled particle is taught as background and
what is lost is the smaller number of particles alone. ``--general DIR`` starts training from the general
model that never saw the molecule (``DIR/general-without-<pack>.pt``, as ``leave_one_out.py --out DIR`` makes
it) rather than from scratch: what a prior over many molecules adds when particles are few.
``--negative-ratio``, ``--noise`` and ``--contrast`` change the background count and the training
augmentation (as ``deeppick train``'s options of the same names): do more background or stronger
augmentation make up for few particles?
Needs ../shared/realdata. Minutes per row on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from deeppick.datasets import load_dataset
from deeppick.metrics import MATCH_FRACTION
from deeppick.model import load_model
from deeppick.patches import PatchConfig, concat_patch_sets, extract_patches
from deeppick.pipeline import PickConfig, evaluate_model
from deeppick.preprocess import PreprocessConfig
from deeppick.pretrain import with_box
from deeppick.train import TrainConfig, unlabelled_prior
from deeppick.tuning import split_for_threshold, train_on_partial_labels, train_picker

from deeppick.benchmark import MATCH_FRACTION_OF_DIAMETER, PACKS, default_realdata, require_realdata  # noqa: E402
REALDATA = default_realdata()


def keep_fraction(picks, fraction: float, seed: int):
    """``fraction`` of the labels of every micrograph, drawn at random (at least one per labelled micrograph)."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(picks), dtype=bool)
    for _, rows in picks.groupby("micrograph").indices.items():
        n = max(1, int(round(fraction * len(rows))))
        keep[rng.choice(rows, n, replace=False)] = True
    return picks[keep].reset_index(drop=True)


def with_background_of(patches, *, all_labels, micrographs, box_px: float, seed: int, dataset: str,
                       preprocess: PreprocessConfig = PreprocessConfig()):
    """``patches`` with its background patches swapped for as many drawn ≥ 0.6 box from every particle of
    ``all_labels`` (the control of ``--labels known-background``)."""
    background = ~patches.labels.astype(bool) & patches.hard
    known = extract_patches(micrographs, all_labels, box_px, config=PatchConfig(off_centre_ratio=0),
                            preprocess=preprocess, seed=seed, dataset=dataset)
    far = np.flatnonzero(known.labels == 0)
    if len(far) < background.sum():
        raise SystemExit(f"{dataset}: {len(far)} background patches away from every particle, "
                         f"{int(background.sum())} needed")
    far = np.random.default_rng(seed).choice(far, int(background.sum()), replace=False)
    return concat_patch_sets([patches.subset(np.flatnonzero(~background)), known.subset(far)])


def partial_row(dataset, fraction: float, labels: str, seed: int, completion_beta=None, init=None,
                patch_config: PatchConfig = PatchConfig(), train_config: TrainConfig = TrainConfig()) -> dict:
    """One row: train on ``fraction`` of the train labels (from ``init``'s weights when given), test AP."""
    train, held_out = split_for_threshold(dataset)
    box_px = dataset.default_box_px()
    train_picks = dataset.picks[dataset.picks["micrograph"].isin([p.stem for p in train])]
    kept = keep_fraction(train_picks, fraction, seed)
    start = time.perf_counter()
    config = replace(train_config, seed=seed)
    match_px = MATCH_FRACTION * dataset.diameter_px
    added = 0
    if labels == "complete":
        model = train_on_partial_labels(train, kept, box_px, held_out=(held_out, dataset.picks), train_config=config,
                                        patch_config=patch_config, match_px=match_px, dataset=dataset.name,
                                        completion_beta=completion_beta)
        added = model.info["partial_labels"]["added"]
    else:
        preprocess = init.preprocess if init is not None else PreprocessConfig()
        patches = extract_patches(train, kept, box_px, config=patch_config, preprocess=preprocess, seed=seed,
                                  dataset=dataset.name)
        if labels == "known-background":
            patches = with_background_of(patches, all_labels=train_picks, micrographs=train, box_px=box_px,
                                         seed=seed, dataset=dataset.name, preprocess=preprocess)
        if labels == "partial":
            config = replace(config, unlabelled_prior=unlabelled_prior(patches, fraction_labelled=fraction))
        model = train_picker(patches, held_out=(held_out, dataset.picks), train_config=config, init=init,
                             match_px=match_px)
    seconds = time.perf_counter() - start
    evaluation, _ = evaluate_model(model, dataset.paths("test"), dataset.picks, config=PickConfig(),
                                   match_px=MATCH_FRACTION_OF_DIAMETER * dataset.diameter_px)
    return {"pack": dataset.name, "fraction": fraction, "labels": labels, "particles": int(len(kept)), "added": added,
            "ap": evaluation.ap, "held_out_ap": model.info.get("threshold", {}).get("ap"),
            "epochs": model.info["epochs_run"], "seconds": round(seconds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.3, 0.1])
    parser.add_argument("--labels", choices=["full", "partial", "complete", "known-background"], default="full",
                        help="how background is treated: as background (full), as unlabelled (partial), "
                             "background after completing the labels with a first model's picks (complete), or "
                             "drawn away from every particle, the control (known-background)")
    parser.add_argument("--completion-beta", type=float, default=None,
                        help="with --labels complete: complete at the first model's F-beta threshold [its F2 one]")
    parser.add_argument("--general", type=Path, default=None,
                        help="fine-tune from DIR/general-without-<pack>.pt (leave_one_out.py --out DIR), the general "
                             "model that never saw the molecule, instead of training from scratch")
    parser.add_argument("--negative-ratio", type=float, default=PatchConfig.negative_ratio,
                        help="background patches per particle [%(default)s]")
    parser.add_argument("--noise", type=float, default=TrainConfig.noise_sd,
                        help="training noise added to the normalised patches, as deeppick train --noise [%(default)s]")
    parser.add_argument("--contrast", type=float, default=TrainConfig.contrast_jitter,
                        help="training contrast jitter, as deeppick train --contrast [%(default)s]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    require_realdata(REALDATA)
    if args.general is not None and args.labels == "complete":
        raise SystemExit("--general fine-tunes one model; --labels complete trains two from scratch")
    rows = []
    print(f"{'pack':<20} {'labels':<8} {'kept':>5} {'particles':>9} {'added':>5} {'test AP':>7} {'held-out AP':>11} "
          f"{'epochs':>6} {'train s':>7}")
    for pack in args.packs:
        dataset = load_dataset(REALDATA / pack)
        init = None
        if args.general is not None:
            init = with_box(load_model(args.general / f"general-without-{pack}.pt"), dataset.default_box_px())
        for fraction in args.fractions:
            row = partial_row(dataset, fraction, args.labels, args.seed, args.completion_beta, init,
                              patch_config=PatchConfig(negative_ratio=args.negative_ratio),
                              train_config=TrainConfig(noise_sd=args.noise, contrast_jitter=args.contrast))
            rows.append(row)
            print(f"{pack:<20} {args.labels:<8} {fraction:>5.0%} {row['particles']:>9} {row['added']:>5} "
                  f"{row['ap']:>7.3f} {row['held_out_ap'] or float('nan'):>11.3f} {row['epochs']:>6} "
                  f"{row['seconds']:>7}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
