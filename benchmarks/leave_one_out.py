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

from deeppick.autopick import DISC_RANKS, GENERAL_BOXES  # noqa: E402
from deeppick.benchmark import PACKS, add_general_recipe_arguments, default_realdata, write_figures  # noqa: E402
from deeppick.benchmark.realdata import LeaveOneOutRecipe, leave_one_out, leave_one_out_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", nargs="+", default=list(PACKS), help="held-out packs to run")
    parser.add_argument("--realdata", type=Path, default=default_realdata())
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppick-leave-one-out"))
    parser.add_argument("--boxes", nargs="*", type=float, default=None,
                        help="boxes to autopick at, × the pack's diameter (and the estimated one) [0.9 1.1 1.3 1.5]")
    parser.add_argument("--reduced", action="store_true", help="the quick recipe for trying ideas (see above)")
    recipe_changes = add_general_recipe_arguments(parser)
    parser.add_argument("--finetune-epochs", type=int, default=None, help="most fine-tuning epochs")
    parser.add_argument("--max-test", type=int, default=None, help="autopick the first N test micrographs")
    parser.add_argument("--max-growth", type=float, default=None,
                        help="the drift guard's limit (AutopickConfig.max_growth; 0: no guard) [default: its]")
    parser.add_argument("--min-stand-out", type=float, default=None,
                        help="the stand-out that keeps a grown model (AutopickConfig.min_stand_out; 0: the count "
                             "alone) [default: its]")
    parser.add_argument("--off-centre", type=float, default=None, help="off-centre views per self-training particle")
    parser.add_argument("--general-box", choices=GENERAL_BOXES, default=None,
                        help="the box the general model's pass picks at (AutopickConfig.general_box) [default: its]")
    parser.add_argument("--disc-rank", choices=DISC_RANKS, default=None,
                        help="where candidates are ranked with their dark-disc depth too (AutopickConfig.disc_rank) "
                             "[default: its]")
    parser.add_argument("--disc-centre", type=float, default=None,
                        help="candidates move to the darkest disc within this × the estimated diameter "
                             "(AutopickConfig.disc_centre_diameters; 0: the network's centres) [default: its]")
    parser.add_argument("--min-box", type=float, default=None,
                        help="the fine-tuned model's box is at least this × the estimated diameter "
                             "(AutopickConfig.min_box_diameters; 0: the given box) [default: its]")
    parser.add_argument("--fast", action="store_true", help="scan without rotations (4× faster)")
    parser.add_argument("--no-log", action="store_true", help="leave RELION's LoG picker out")
    args = parser.parse_args(argv)
    changes = {**recipe_changes(args), "finetune_epochs": args.finetune_epochs, "max_test": args.max_test,
               "max_growth": args.max_growth, "min_stand_out": args.min_stand_out, "off_centre": args.off_centre,
               "general_box": args.general_box, "disc_rank": args.disc_rank, "disc_centre": args.disc_centre,
               "min_box": args.min_box, "boxes": tuple(args.boxes) if args.boxes is not None else None}
    changes = {k: v for k, v in changes.items() if v is not None}
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
