"""Leave one molecule out: pretrain on the others, autopick the held-out pack with no labels.

    python benchmarks/leave_one_out.py [--packs ribosome80s-10028 ...] [--max-test N] [--fast]

For each annotated real pack: a general model is pretrained on the *other* packs' train splits plus the
simulated molecule zoo (:func:`deeppick.simulate.simulate_zoo_for_quota`: enough micrographs for each
molecule's share of ``--positives``); it autopicks the held-out pack's test
split at the pack's box with no labels (:func:`deeppick.autopick.autopick`, one self-training round), and
the candidates are evaluated against the references at 0.25 × diameter. AP before (general model) and
after self-training are printed beside Topaz's general model (Bepler et al.) and beside a label-free
dark-disc filter on the same micrographs (``benchmarks/blob_baseline.py``: what a picker must beat before
its picks say more than "a dark blob of this size"). The Einstein-from-noise
check (DeepPicker §3) picks simulated particle-free micrographs with each general model and prints the
fraction of candidate scores below its pick threshold (goal ≥ 95 %).

Models and figures are cached in ``--out`` (rerun to resume); ``--fast`` scans without rotations.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere: realdata.py is beside us
from realdata import (MATCH_FRACTION_OF_DIAMETER, PACKS, REALDATA, TOPAZ_GENERAL_AP,  # noqa: E402
                      add_highpass_option)


def einstein_from_noise(model, n: int = 3, box_px: float = 56.0, pick_config=None) -> dict:
    """Fraction of candidate scores below the model's threshold on particle-free simulated micrographs,
    with the number of candidates (the fraction means little when they are few) and picks per micrograph."""
    import numpy as np

    from deeppick.pipeline import PickConfig, effective_threshold, pick_micrograph
    from deeppick.pretrain import with_box
    from deeppick.simulate import SimConfig, simulate_micrograph

    pick_config = replace(pick_config or PickConfig(), keep_all=True, threshold=None)
    local = with_box(model, box_px)
    scores = []
    for i in range(n):
        sim = simulate_micrograph(SimConfig(size_px=1024, empty=True, diameter_px=box_px), 1000 + i)
        scores.append(pick_micrograph(local, sim.image, name=f"empty{i}", config=pick_config)["score"].to_numpy())
    scores = np.concatenate(scores)
    threshold = effective_threshold(local, pick_config)
    return {"n_candidates": int(len(scores)), "threshold": threshold,
            "below": float(np.mean(scores < threshold)) if len(scores) else 1.0,
            "picks_per_micrograph": float(np.sum(scores >= threshold) / n)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS), help="held-out packs to run")
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppick-leave-one-out"))
    parser.add_argument("--positives", type=int, default=10_000, help="particles in the pretraining mix")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs [default: PRETRAIN_TRAINING's, 30]")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="most fine-tuning epochs")
    parser.add_argument("--max-train", type=int, default=None,
                        help="train micrographs per source [default: all; each source's quota spreads over them]")
    parser.add_argument("--zoo-micrographs", type=int, default=None,
                        help="micrographs per simulated molecule [default: enough for each molecule's quota]")
    parser.add_argument("--max-valid", type=int, default=1, help="threshold micrographs per source")
    parser.add_argument("--max-test", type=int, default=None, help="autopick the first N test micrographs")
    parser.add_argument("--no-zoo", action="store_true", help="pretrain on the real packs only")
    parser.add_argument("--off-centre", type=float, default=None,
                        help="off-centre views per self-training particle [default: AutopickConfig's]")
    parser.add_argument("--zoo-density", type=float, default=None,
                        help="area fraction the zoo's particles cover [default: deeppick.simulate.ZOO_DENSITY]")
    parser.add_argument("--fast", action="store_true", help="scan without rotations (4× faster)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of pretraining, fine-tuning and autopick's draws (the zoo keeps its own) "
                             "[default: 0]")
    add_highpass_option(parser)
    args = parser.parse_args(argv)

    from blob_baseline import blob_picks  # this folder: the label-free baseline
    from deeppick.datasets import load_dataset
    from deeppick.io import concat_picks
    from deeppick.metrics import evaluate_picks
    from deeppick.model import load_model, save_model
    from deeppick.pipeline import PickConfig
    from deeppick.preprocess import PreprocessConfig
    from deeppick.autopick import AutopickConfig, autopick
    from deeppick.pretrain import PRETRAIN_TRAINING, PretrainConfig, positives_per_source, pretrain
    from deeppick.simulate import ZOO_DENSITY, ZOO_DIAMETERS_PX, simulate_zoo, simulate_zoo_for_quota
    from deeppick.scan import ScanConfig

    if not (args.realdata / "README.md").is_file():
        print(f"needs the real annotated packs in {args.realdata}")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    pick_config = PickConfig(scan=ScanConfig(rotations=False)) if args.fast else PickConfig()
    seeded = replace(PRETRAIN_TRAINING, seed=args.seed)
    train_config = seeded if args.epochs is None else replace(seeded, epochs=args.epochs)
    tune_config = seeded if args.finetune_epochs is None else replace(seeded, epochs=args.finetune_epochs)
    quota = positives_per_source(args.positives, len(PACKS) - 1 + len(ZOO_DIAMETERS_PX))
    density = ZOO_DENSITY if args.zoo_density is None else args.zoo_density
    if args.no_zoo:
        zoo = []
    elif args.zoo_micrographs:
        zoo = simulate_zoo(args.out / "zoo", n_micrographs=args.zoo_micrographs, density=density)
    else:
        zoo = simulate_zoo_for_quota(args.out, quota, density=density)
    # a general model cached in --out is reused only if made with these settings
    settings = {k: getattr(args, k) for k in ("positives", "epochs", "max_train", "zoo_micrographs", "max_valid",
                                              "no_zoo", "fast", "highpass")}
    settings["zoo_density"] = None if args.no_zoo else density
    if args.seed:  # recorded only when set, so models cached before the option still count as seed 0
        settings["seed"] = args.seed
    config = PretrainConfig(total_positives=args.positives, max_train_micrographs=args.max_train,
                            max_valid_micrographs=args.max_valid, seed=args.seed)
    auto_config = AutopickConfig(seed=args.seed)
    if args.off_centre is not None:
        auto_config = replace(auto_config, off_centre_ratio=args.off_centre)
    rows = []
    for pack in args.packs:
        start = time.perf_counter()
        held = load_dataset(args.realdata / pack)
        others = [args.realdata / p for p in PACKS if p != pack]
        model_path = args.out / f"general-without-{pack}.pt"
        model = load_model(model_path) if model_path.is_file() else None
        if model is None or model.info.get("leave_one_out") != settings:
            model = pretrain([*others, *zoo], config=config, train_config=train_config, pick_config=pick_config,
                             preprocess=PreprocessConfig(highpass_sigma_model_px=args.highpass))
            model.info["leave_one_out"] = settings
            save_model(model, model_path)
        test = held.paths("test")[:args.max_test]
        box = held.default_box_px()
        result = autopick(model, test, box_px=box, out_dir=args.out / f"autopick-{pack}", config=auto_config,
                          train_config=tune_config, pick_config=pick_config)
        stems = [p.stem for p in test]
        match_px = MATCH_FRACTION_OF_DIAMETER * held.diameter_px
        before, after = (evaluate_picks(c, held.picks, box, match_px=match_px, threshold=model.threshold,
                                        micrographs=stems) for c in (result.candidates[0], result.candidates[-1]))
        disc = evaluate_picks(concat_picks([blob_picks(p, held.diameter_px, box) for p in test]), held.picks, box,
                              match_px=match_px, micrographs=stems)
        noise = einstein_from_noise(model, box_px=56.0, pick_config=pick_config)
        row = {"pack": pack, "topaz_ap": TOPAZ_GENERAL_AP[pack], "ap_disc_filter": disc.ap,
               "ap_general": before.ap, "ap_self_trained": after.ap,
               "f2_self_trained": after.f2, "precision": after.precision, "recall": after.recall,
               "threshold": model.threshold, "n_top": result.n_top, "n_test": len(test), "box_px": box,
               "self_training_off_centre": auto_config.off_centre_ratio, "seed": args.seed,
               "noise_below_threshold": noise["below"], "noise_candidates": noise["n_candidates"],
               "noise_picks_per_micrograph": noise["picks_per_micrograph"],
               "val_accuracy": model.info.get("val_accuracy"), "seconds": round(time.perf_counter() - start)}
        rows.append(row)
        (args.out / f"result-{pack}.json").write_text(json.dumps(row, indent=1, default=float) + "\n")
        print(json.dumps(row, default=float), flush=True)

    print()
    print(f"leave one molecule out ({'no rotations' if args.fast else 'default scan'}; "
          f"{args.positives} pretraining particles; zoo: {'no' if args.no_zoo else f'density {density:g}'}; "
          f"background subtraction σ {args.highpass:g} model px; "
          f"self-training off-centre views {auto_config.off_centre_ratio:g} per particle; seed {args.seed})")
    print(f"{'held-out pack':<20} {'test':>4} {'Topaz AP':>8} {'AP disc':>7} {'AP general':>10} "
          f"{'AP self-trained':>15} {'F2':>5} {'beats Topaz':>11} {'noise < thr':>11} {'of':>5} {'picks':>6}")
    for r in rows:
        print(f"{r['pack']:<20} {r['n_test']:>4} {r['topaz_ap']:>8.2f} {r['ap_disc_filter']:>7.3f} "
              f"{r['ap_general']:>10.3f} {r['ap_self_trained']:>15.3f} {r['f2_self_trained']:>5.2f} "
              f"{'yes' if r['ap_self_trained'] > r['topaz_ap'] else 'no':>11} {r['noise_below_threshold']:>10.1%} "
              f"{r['noise_candidates']:>5} {r['noise_picks_per_micrograph']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
