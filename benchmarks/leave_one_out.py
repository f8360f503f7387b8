"""Leave one molecule out: pretrain on the others, autopick the held-out pack with no labels, at several boxes.

    python benchmarks/leave_one_out.py [--packs ribosome80s-10028 ...] [--boxes 0.9 1.1 1.3 1.5] [--reduced]

For each annotated real pack: a general model is pretrained on the *other* packs' train splits plus the
simulated molecule zoo (:func:`deeppick.simulate.simulate_zoo_for_quota`, and particle-free micrographs
with ``--empty-share``); it autopicks the held-out pack's test split with no labels
(:func:`deeppick.autopick.autopick`, one self-training round) at each box of ``--boxes`` (× the pack's
diameter) and at the box it estimates itself, and the candidates are evaluated against the references at
0.25 × diameter (``--keep-all``). Printed per pack and box: AP of the general model and after
self-training, the drift guard's decision, beside two label-free peers on the same micrographs: RELION's
Laplacian-of-Gaussian picker (``relion_autopick --LoG``, diameters 0.8–1.2× the pack's,
``--LoG_adjust_threshold -1``; where RELION is installed) and a dark-disc filter
(``blob_baseline.py``). Topaz's general model's figures are quoted. Then the particle-free check: autopick on
simulated micrographs without particles, picks per micrograph of the general model and after
self-training, and the fraction of candidate scores below the threshold.

Models and figures are cached in ``--out`` (rerun to resume). ``--reduced`` is the quick recipe for trying
ideas (4,000 pretraining particles, 10 epochs, 4 train micrographs per pack, 8 zoo micrographs, 3 test
micrographs, scans without rotations); the reported figures use the full recipe (the default).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere: realdata.py is beside us
from realdata import (MATCH_FRACTION_OF_DIAMETER, PACKS, REALDATA, TOPAZ_GENERAL_AP,  # noqa: E402
                      add_highpass_option)

LOG_RELION_AP = {"ribosome80s-10028": 0.815, "betagal-10017": 0.552, "cryoppp-10059": 0.204}  # issue 25's


def relion_log_picks(paths, diameter_px: float):
    """RELION's Laplacian-of-Gaussian picks of ``paths`` (None where RELION is not installed)."""
    if shutil.which("relion_autopick") is None:
        return None
    from deeppick.io import concat_picks, read_micrograph, read_picks, write_micrograph

    work = Path(tempfile.mkdtemp(prefix="deeppick-log-"))
    try:
        (work / "Micrographs").mkdir()
        for path in paths:
            write_micrograph(work / "Micrographs" / f"{path.stem}.mrc", read_micrograph(path), pixel_size_a=1.0)
        lines = ["", "data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
                 "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
                 "_rlnAmplitudeContrast #6", "opticsGroup1 1 1.0 300 2.7 0.1", "", "data_micrographs", "", "loop_",
                 "_rlnMicrographName #1", "_rlnOpticsGroup #2", *(f"Micrographs/{p.stem}.mrc 1" for p in paths), ""]
        (work / "micrographs.star").write_text("\n".join(lines))
        subprocess.run(["relion_autopick", "--i", "micrographs.star", "--odir", "LoG/", "--pickname", "autopick",
                        "--LoG", "--LoG_diam_min", f"{0.8 * diameter_px:.0f}", "--LoG_diam_max",
                        f"{1.2 * diameter_px:.0f}", "--LoG_adjust_threshold", "-1", "--angpix", "1"],
                       cwd=work, check=True, capture_output=True, timeout=3600)
        tables = []
        for path in paths:
            found = list((work / "LoG").rglob(f"{path.stem}_autopick.star"))
            if found:
                picks = read_picks(found[0])
                tables.append(picks.assign(micrograph=path.stem))
        return concat_picks(tables)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def particle_free(model, work: Path, box_px: float, auto_config, tune_config, pick_config, n: int = 3) -> dict:
    """Autopick on particle-free simulated micrographs: picks per micrograph of the general model and after
    self-training (with the drift guard), and the share of candidate scores below the threshold."""
    import numpy as np

    from deeppick.autopick import autopick
    from deeppick.simulate import simulate_empty_zoo

    empty = simulate_empty_zoo(work / "particle-free", n_micrographs=n, size_px=1024, seed=1000)
    result = autopick(model, empty / "micrographs", box_px=box_px, config=auto_config, train_config=tune_config,
                      pick_config=pick_config)
    threshold = result.model.threshold
    general, final = result.candidates[0], result.candidates[-1]
    n_general = general["micrograph"].nunique() or 1
    return {"general_picks_per_micrograph": float((general["score"] >= threshold).sum() / n_general),
            "final_picks_per_micrograph": float((final["score"] >= threshold).sum() / n),
            "below_threshold": float(np.mean(final["score"] < threshold)) if len(final) else 1.0,
            "candidates": int(len(final)), "rolled_back": result.skipped is not None and not result.n_top,
            "drift": result.drift}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS), help="held-out packs to run")
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppick-leave-one-out"))
    parser.add_argument("--boxes", nargs="*", type=float, default=[0.9, 1.1, 1.3, 1.5],
                        help="boxes to autopick at, × the pack's diameter (and the estimated one)")
    parser.add_argument("--reduced", action="store_true", help="the quick recipe for trying ideas (see above)")
    parser.add_argument("--positives", type=int, default=None, help="particles in the pretraining mix [10,000]")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs [default: PRETRAIN_TRAINING's]")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="most fine-tuning epochs")
    parser.add_argument("--max-train", type=int, default=None, help="train micrographs per source [all]")
    parser.add_argument("--zoo-micrographs", type=int, default=None,
                        help="micrographs per simulated molecule [default: enough for each molecule's quota]")
    parser.add_argument("--max-valid", type=int, default=1, help="threshold micrographs per source")
    parser.add_argument("--max-test", type=int, default=None, help="autopick the first N test micrographs")
    parser.add_argument("--no-zoo", action="store_true", help="pretrain on the real packs only")
    parser.add_argument("--box-factors", nargs="+", type=float, default=None,
                        help="pretraining boxes × each source's diameter [default: PretrainConfig's]")
    parser.add_argument("--junk-share", type=float, default=None, help="PretrainConfig.junk_share")
    parser.add_argument("--empty-share", type=float, default=None,
                        help="PretrainConfig.empty_share: background from particle-free simulated micrographs")
    parser.add_argument("--max-growth", type=float, default=-1.0,
                        help="the drift guard's limit (AutopickConfig.max_growth; 0: no guard) [default: its]")
    parser.add_argument("--off-centre", type=float, default=None, help="off-centre views per self-training particle")
    parser.add_argument("--zoo-density", type=float, default=None, help="area fraction the zoo's particles cover")
    parser.add_argument("--fast", action="store_true", help="scan without rotations (4× faster)")
    parser.add_argument("--no-log", action="store_true", help="leave RELION's LoG picker out")
    parser.add_argument("--seed", type=int, default=0, help="seed of pretraining, fine-tuning and autopick's draws")
    add_highpass_option(parser)
    args = parser.parse_args(argv)
    if args.reduced:
        for name, value in (("positives", 4000), ("epochs", 10), ("finetune_epochs", 10), ("max_train", 4),
                            ("zoo_micrographs", 8), ("max_test", 3)):
            if getattr(args, name) is None:
                setattr(args, name, value)
        args.fast = True
    args.positives = args.positives or 10_000

    from blob_baseline import blob_picks  # this folder: the label-free baseline
    from deeppick.autopick import AutopickConfig, autopick, estimate_box
    from deeppick.datasets import load_dataset
    from deeppick.io import concat_picks
    from deeppick.metrics import evaluate_picks
    from deeppick.model import load_model, save_model
    from deeppick.pipeline import PickConfig
    from deeppick.preprocess import PreprocessConfig
    from deeppick.pretrain import PRETRAIN_TRAINING, PretrainConfig, positives_per_source, pretrain
    from deeppick.scan import ScanConfig
    from deeppick.simulate import (ZOO_DENSITY, ZOO_DIAMETERS_PX, simulate_empty_zoo, simulate_zoo,
                                   simulate_zoo_for_quota)

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
    config = PretrainConfig(total_positives=args.positives, max_train_micrographs=args.max_train,
                            max_valid_micrographs=args.max_valid, seed=args.seed)
    config = replace(config, **{k: v for k, v in (("box_factors", tuple(args.box_factors or ()) or None),
                                                  ("junk_share", args.junk_share),
                                                  ("empty_share", args.empty_share)) if v is not None})
    background = [simulate_empty_zoo(args.out / "empty", n_micrographs=8)] if config.empty_share else []
    # a general model cached in --out is reused only if made with these settings
    settings = {k: getattr(args, k) for k in ("positives", "epochs", "max_train", "zoo_micrographs", "max_valid",
                                              "no_zoo", "fast", "highpass")}
    settings.update(zoo_density=None if args.no_zoo else density, seed=args.seed,
                    pretrain={k: v for k, v in config.to_dict().items() if k in ("box_factors", "junk_share",
                                                                                 "empty_share")})
    auto_config = AutopickConfig(seed=args.seed)
    if args.off_centre is not None:
        auto_config = replace(auto_config, off_centre_ratio=args.off_centre)
    if args.max_growth >= 0:
        auto_config = replace(auto_config, max_growth=args.max_growth or None)
    rows = []
    for pack in args.packs:
        start = time.perf_counter()
        held = load_dataset(args.realdata / pack)
        others = [args.realdata / p for p in PACKS if p != pack]
        model_path = args.out / f"general-without-{pack}.pt"
        model = load_model(model_path) if model_path.is_file() else None
        if model is None or model.info.get("leave_one_out") != json.loads(json.dumps(settings)):
            model = pretrain([*others, *zoo], config=config, train_config=train_config, pick_config=pick_config,
                             preprocess=PreprocessConfig(highpass_sigma_model_px=args.highpass), background=background)
            model.info["leave_one_out"] = json.loads(json.dumps(settings))
            save_model(model, model_path)
        test = held.paths("test")[:args.max_test]
        stems = [p.stem for p in test]
        diameter = held.diameter_px
        match_px = MATCH_FRACTION_OF_DIAMETER * diameter
        estimate = estimate_box(model, test, seed=args.seed)
        boxes = [(f"{f:g}×", round(f * diameter)) for f in args.boxes] + [("auto", None)]
        per_box = {}
        for label, box in boxes:
            result = autopick(model, test, box_px=box, config=auto_config, train_config=tune_config,
                              pick_config=pick_config, estimate=estimate)
            used = result.box_px
            before, after = (evaluate_picks(c, held.picks, used, match_px=match_px, threshold=result.model.threshold,
                                            micrographs=stems) for c in (result.candidates[0], result.candidates[-1]))
            per_box[label] = {"box_px": used, "ap_general": before.ap, "ap_self_trained": after.ap,
                              "n_top": result.n_top, "skipped": result.skipped, "drift": result.drift,
                              "peak_window_box": result.pick_config.post.peak_window_box}
            print(json.dumps({"pack": pack, "box": label, **per_box[label]}, default=float), flush=True)
        disc = evaluate_picks(concat_picks([blob_picks(p, diameter, round(diameter)) for p in test]), held.picks,
                              diameter, match_px=match_px, micrographs=stems)
        log = None if args.no_log else relion_log_picks(test, diameter)
        log_ap = None if log is None else evaluate_picks(log, held.picks, diameter, match_px=match_px,
                                                         micrographs=stems).ap
        noise = particle_free(model, args.out, 56.0, auto_config, tune_config, pick_config)
        row = {"pack": pack, "diameter_px": diameter, "estimate_px": estimate.diameter_px,
               "estimate_box_px": estimate.box_px, "per_box": per_box, "topaz_ap": TOPAZ_GENERAL_AP[pack],
               "ap_disc_filter": disc.ap, "ap_relion_log": log_ap, "particle_free": noise, "n_test": len(test),
               "settings": settings, "seconds": round(time.perf_counter() - start)}
        rows.append(row)
        (args.out / f"result-{pack}.json").write_text(json.dumps(row, indent=1, default=float) + "\n")

    print()
    print(f"leave one molecule out ({'reduced' if args.reduced else 'full'} recipe, "
          f"{'no rotations' if args.fast else 'four rotations'}; pretraining boxes × diameter "
          f"{', '.join(f'{f:g}' for f in config.box_factors)}, junk share {config.junk_share:g}, particle-free "
          f"share {config.empty_share:g}; drift guard {auto_config.max_growth or 'off'}; seed {args.seed})")
    labels = [label for label, _ in boxes]
    print(f"{'held-out pack':<19} {'d px':>5} {'est.':>5} " + " ".join(f"{label:>12}" for label in labels)
          + f" {'spread':>6} {'LoG':>5} {'disc':>5} {'Topaz':>5}")
    for r in rows:
        cells = [f"{r['per_box'][label]['ap_general']:.2f}→{r['per_box'][label]['ap_self_trained']:.3f}"
                 for label in labels]
        fixed = [r["per_box"][label]["ap_self_trained"] for label in labels if label != "auto"]
        log = "–" if r["ap_relion_log"] is None else f"{r['ap_relion_log']:.3f}"
        print(f"{r['pack']:<19} {r['diameter_px']:>5.0f} {r['estimate_px']:>5.0f} " + " ".join(f"{c:>12}" for c in cells)
              + f" {max(fixed) - min(fixed):>6.3f} {log:>5} {r['ap_disc_filter']:>5.3f} {r['topaz_ap']:>5.2f}")
    print("particle-free micrographs (picks per micrograph: general model → after self-training; candidate scores "
          "below the threshold):")
    for r in rows:
        n = r["particle_free"]
        print(f"  general without {r['pack']}: {n['general_picks_per_micrograph']:.1f} → "
              f"{n['final_picks_per_micrograph']:.1f}{' (rolled back)' if n['rolled_back'] else ''}; "
              f"{n['below_threshold']:.1%} of {n['candidates']} below")
    return 0


if __name__ == "__main__":
    sys.exit(main())
