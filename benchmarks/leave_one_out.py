"""Leave one molecule out: pretrain on the others, autopick the held-out pack with no labels, at several boxes.

    python benchmarks/leave_one_out.py [--packs ribosome80s-10028 ...] [--boxes 0.9 1.1 1.3 1.5] [--reduced]

For each annotated real pack (``deeppick.benchmark.realdata.leave_one_out``): a general model is
pretrained on the *other* packs' train splits plus the simulated molecule zoo (and particle-free
micrographs with ``--empty-share``); it autopicks the held-out pack's test split with no labels (one
self-training round) at each box of ``--boxes`` (× the pack's diameter) and at the box it estimates
itself, and the candidates are evaluated against the references at 0.25 × diameter. Printed per pack and
box: AP of the general model and after self-training, beside two label-free peers on the same
micrographs: RELION's Laplacian-of-Gaussian picker (where RELION is installed) and a dark-disc filter.
Topaz's general model's figures are quoted. Then the particle-free check.

Models and figures are cached in ``--out`` (rerun to resume). ``--reduced`` is the quick recipe for trying
ideas (``LeaveOneOutRecipe.reduced``); the reported figures use the full recipe (the default).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from deeppick.benchmark import PACKS, default_realdata, write_figures  # noqa: E402
from deeppick.benchmark.realdata import LeaveOneOutRecipe, leave_one_out, leave_one_out_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS), help="held-out packs to run")
    parser.add_argument("--realdata", type=Path, default=default_realdata())
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppick-leave-one-out"))
    parser.add_argument("--boxes", nargs="*", type=float, default=None,
                        help="boxes to autopick at, × the pack's diameter (and the estimated one) [0.9 1.1 1.3 1.5]")
    parser.add_argument("--reduced", action="store_true", help="the quick recipe for trying ideas (see above)")
    parser.add_argument("--positives", type=int, default=None, help="particles in the pretraining mix [10,000]")
    parser.add_argument("--arch", default=None, choices=["deeppicker", "deepem", "wide"],
                        help="the general model's network [deeppicker]")
    parser.add_argument("--source-heads", action="store_true",
                        help="HydraPicker: a head per source while pretraining (TrainConfig.source_heads)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs [default: PRETRAIN_TRAINING's]")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="most fine-tuning epochs")
    parser.add_argument("--max-train", type=int, default=None, help="train micrographs per source [all]")
    parser.add_argument("--zoo-micrographs", type=int, default=None,
                        help="micrographs per simulated molecule [default: enough for each molecule's quota]")
    parser.add_argument("--max-valid", type=int, default=None, help="threshold micrographs per source [1]")
    parser.add_argument("--max-test", type=int, default=None, help="autopick the first N test micrographs")
    parser.add_argument("--no-zoo", action="store_true", help="pretrain on the real packs only")
    parser.add_argument("--box-factors", nargs="+", type=float, default=None,
                        help="pretraining boxes × each source's diameter [default: PretrainConfig's]")
    parser.add_argument("--junk-share", type=float, default=None, help="PretrainConfig.junk_share")
    parser.add_argument("--empty-share", type=float, default=None,
                        help="PretrainConfig.empty_share: background from particle-free simulated micrographs")
    parser.add_argument("--max-growth", type=float, default=None,
                        help="the drift guard's limit (AutopickConfig.max_growth; 0: no guard) [default: its]")
    parser.add_argument("--off-centre", type=float, default=None, help="off-centre views per self-training particle")
    parser.add_argument("--zoo-density", type=float, default=None, help="area fraction the zoo's particles cover")
    parser.add_argument("--procedural", type=int, default=None,
                        help="procedural molecules added to the zoo (simulate.procedural_zoo) [0]")
    parser.add_argument("--zoo-ice-gradient", type=float, default=None,
                        help="the zoo's uneven ice: a ramp of up to this many noise SDs (SimConfig.ice_gradient) "
                             "[simulate.ZOO_ICE_GRADIENT]")
    parser.add_argument("--zoo-detector-blur", type=float, default=None,
                        help="the zoo's detector blur, σ px (SimConfig.detector_blur_px) "
                             "[simulate.ZOO_DETECTOR_BLUR_PX]")
    parser.add_argument("--zoo-defocus-spread", type=float, default=None,
                        help="the zoo's per-particle defocus: the ice's thickness, µm (SimConfig.defocus_spread_um) "
                             "[simulate.ZOO_DEFOCUS_SPREAD_UM]")
    parser.add_argument("--fast", action="store_true", help="scan without rotations (4× faster)")
    parser.add_argument("--no-log", action="store_true", help="leave RELION's LoG picker out")
    parser.add_argument("--seed", type=int, default=None, help="seed of pretraining, fine-tuning and autopick's draws")
    parser.add_argument("--highpass", type=float, default=None, metavar="SIGMA",
                        help="background subtraction, σ in model px [default: 0, off]")
    args = parser.parse_args(argv)
    changes = {"positives": args.positives, "arch": args.arch, "epochs": args.epochs,
               "finetune_epochs": args.finetune_epochs,
               "max_train": args.max_train, "zoo_micrographs": args.zoo_micrographs, "max_valid": args.max_valid,
               "max_test": args.max_test, "box_factors": tuple(args.box_factors) if args.box_factors else None,
               "junk_share": args.junk_share, "empty_share": args.empty_share, "max_growth": args.max_growth,
               "off_centre": args.off_centre, "zoo_density": args.zoo_density, "highpass": args.highpass,
               "zoo_ice_gradient": args.zoo_ice_gradient, "zoo_detector_blur_px": args.zoo_detector_blur,
               "zoo_defocus_spread_um": args.zoo_defocus_spread,
               "procedural": args.procedural,
               "seed": args.seed, "boxes": tuple(args.boxes) if args.boxes is not None else None}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.no_zoo:
        changes["zoo"] = False
    if args.source_heads:
        changes["source_heads"] = True
    if args.fast:
        changes["rotations"] = False
    if args.no_log:
        changes["relion_log"] = False
    recipe = LeaveOneOutRecipe.reduced(**changes) if args.reduced else LeaveOneOutRecipe(**changes)
    rows = [leave_one_out(args.realdata, pack, args.out, recipe) for pack in args.packs]
    print()
    print(leave_one_out_table(rows, recipe))
    print(f"wrote {write_figures(args.out, 'leave_one_out', {'recipe': recipe.__dict__, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
