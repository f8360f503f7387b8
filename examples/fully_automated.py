"""Fully automated picking, end to end: no labels of the molecule are used until the final evaluation.

    python examples/fully_automated.py [--pack ribosome80s-10028] [--out demo-output] [--fast]

1. Pick the pack's ``test`` micrographs with the general model shipped with deeppick (trained on other
   molecules), at the box it finds its picks strongest at.
2. Self-train: its top picks become particles, background is drawn ≥ 0.6 of that box from every candidate,
   the model is fine-tuned at the pack's box size and picks again (``deeppick autopick``). The threshold is
   the general model's.
3. Only now read the reference coordinates and evaluate, before and after self-training, at
   0.25 × particle diameter.

It uses the real annotated packs in ``../shared/realdata`` when they are there. Without them (a fresh
clone) it simulates a small data set first, so it runs from the project alone and downloads nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from example_data import example_parser, find_dataset

from deeppick.cli import user_errors


def main(argv=None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--model", type=Path, default=None, help="general model [default: the shipped one]")
    parser.add_argument("--max-micrographs", type=int, default=None, help="autopick at most N test micrographs")
    parser.add_argument("--fast", action="store_true", help="scan without rotations (4× faster)")
    args = parser.parse_args(argv)

    from deeppick.datasets import load_dataset
    from deeppick.io import list_micrographs, read_picks
    from deeppick.metrics import evaluate_picks
    from deeppick.pipeline import PickConfig
    from deeppick.autopick import autopick
    from deeppick.pretrain import load_general_model
    from deeppick.scan import ScanConfig

    root = find_dataset(args.pack, args.out)
    # Autopick gets image paths and a box size only; dataset.json is read for the split and the diameter.
    meta = json.loads((root / "dataset.json").read_text())
    split = {m["micrograph"]: m.get("split") for m in meta["micrographs"]}
    test = [p for p in list_micrographs(root / "micrographs") if split.get(p.name) == "test"][:args.max_micrographs]
    start = time.perf_counter()
    box_px = round(meta["diameter_px"])  # the one thing a user must know: the particle size
    model = load_general_model(args.model)
    out = args.out / f"autopick-{root.name}"
    print(f"1-2. autopicking {len(test)} micrographs at box {box_px} px with {model.info.get('name', args.model)}")
    pick_config = PickConfig(scan=ScanConfig(rotations=False)) if args.fast else PickConfig()
    result = autopick(model, test, box_px=box_px, out_dir=out, pick_config=pick_config, progress=sys.stderr.isatty())
    trained = (f"not self-trained: {result.skipped}" if result.skipped
               else f"self-trained on the top {result.n_top[0]} picks")
    print(f"     the general model picked at box {result.general_box_px:g} px")
    print(f"     {trained}; wrote {sum(result.batch.counts.values())} picks "
          f"(threshold {result.model.threshold:.3f}) to {out}; {time.perf_counter() - start:.0f} s")

    print("3. evaluating against the references (read only now)")
    dataset = load_dataset(root)
    stems = [p.stem for p in test]
    match_px = 0.25 * dataset.diameter_px
    figures = {}
    for label, candidates in (("general model", result.candidates[0]), ("self-trained", result.candidates[-1])):
        ev = evaluate_picks(candidates, dataset.picks, box_px, match_px=match_px, threshold=result.model.threshold,
                            micrographs=stems)
        figures[label] = ev.to_dict()
        print(f"   {label:>13}: AP {ev.ap:.3f}; at the threshold precision {ev.precision:.3f}, recall "
              f"{ev.recall:.3f}, F2 {ev.f2:.3f}")
    written = read_picks(out)
    print(f"   the STAR files in {out} hold {len(written)} picks")
    (out / "summary.json").write_text(json.dumps({"dataset": dataset.name, **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())  # deeppick's user errors: one line and exit 2, as the commands do
