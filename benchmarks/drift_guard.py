"""How autopick's drift guard decides: picks and stand-out of the general and the fine-tuned model.

    python benchmarks/drift_guard.py --general DIR [--packs ...] [--split train] [--boxes 0.9 1.1 1.3 1.5]
        [--micrographs 2] [--particle-free 3] [--seed 3000]

For each held-out pack, its leave-one-out general model (``DIR/general-without-<pack>.pt``, as
``leave_one_out.py --out DIR`` makes it, which never saw the pack) self-trains on the first
``--micrographs`` micrographs of ``--split`` at each box (× the diameter) with the guard off, and on
``--particle-free`` simulated particle-free micrographs (contaminants, no particle; ``--seed``) at box 56.
Printed per case: the picks above the threshold on the guard's micrographs, general → fine-tuned, their
growth, how much each model's picks stand out from the ice (``deeppick.autopick.stand_out``) and what the
guard decides (``deeppick.autopick.drifted``: the count rule alone, the default, and with the stand-out
rule at ``--min-stand-out`` on all the fine-tuned model's picks and on its new ones alone, those with no
general pick within half a box: ``deeppick.io.picks_away_from``). Wanted: real micrographs kept
(self-training helps on every pack, *Fully automated picking*), particle-free ones rolled back.
Design on the train split; the test splits are for ``leave_one_out.py``. Needs ../shared/realdata; about 2
minutes a case on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from deeppick.autopick import AutopickConfig, autopick, drifted  # noqa: E402
from deeppick.benchmark import PACKS, default_realdata, require_realdata  # noqa: E402
from deeppick.datasets import load_dataset  # noqa: E402
from deeppick.io import list_micrographs  # noqa: E402
from deeppick.model import load_model  # noqa: E402
from deeppick.pipeline import PickConfig  # noqa: E402
from deeppick.pretrain import PRETRAIN_TRAINING  # noqa: E402
from deeppick.scan import ScanConfig  # noqa: E402
from deeppick.simulate import simulate_empty_zoo  # noqa: E402


def guard_case(general, paths, box_px: float, seed: int, min_stand_out: float) -> dict:
    """Self-train ``general`` on ``paths`` at ``box_px`` with the guard off (as leave_one_out.py's reduced
    recipe does: 10 fine-tuning epochs, scans without rotations) and say what the guard would decide."""
    result = autopick(general, paths, box_px=box_px, config=AutopickConfig(seed=seed, max_growth=None),
                      train_config=replace(PRETRAIN_TRAINING, seed=seed, epochs=10),
                      pick_config=PickConfig(scan=ScanConfig(rotations=False)))
    if not result.drift:
        return {"skipped": result.skipped}
    (drift,) = result.drift
    looking = AutopickConfig(min_stand_out=min_stand_out)
    return {**drift, "rolled_back_by_count": drifted(drift, AutopickConfig(min_stand_out=None)),
            "rolled_back": drifted(drift, looking),
            "rolled_back_by_new": drifted({**drift, "stand_out_tuned": drift["stand_out_new"]}, looking)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--general", type=Path, required=True, help="leave_one_out.py --out DIR")
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--split", default="train")
    parser.add_argument("--boxes", nargs="+", type=float, default=[0.9, 1.1, 1.3, 1.5])
    parser.add_argument("--micrographs", type=int, default=2)
    parser.add_argument("--particle-free", type=int, default=3, help="simulated particle-free micrographs")
    parser.add_argument("--seed", type=int, default=3000, help="of the particle-free micrographs")
    parser.add_argument("--min-stand-out", type=float, default=0.4,
                        help="the stand-out rule to decide with (AutopickConfig.min_stand_out) [%(default)s]")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    root = require_realdata(default_realdata())
    rows = []
    print(f"{'general model without':<22} {'micrographs':<14} {'box':>4} {'picks':>11} {'growth':>6} "
          f"{'stand-out':>11} {'new':>4} {'of new':>6} {'count rule':>10} {'with stand-out':>14} {'of new':>9}")
    with tempfile.TemporaryDirectory(prefix="deeppick-guard-") as work:
        free = list_micrographs(simulate_empty_zoo(Path(work) / "free", n_micrographs=args.particle_free,
                                                   size_px=1024, seed=args.seed) / "micrographs")
        for pack in args.packs:
            general = load_model(args.general / f"general-without-{pack}.pt")
            dataset = load_dataset(root / pack)
            cases = [(args.split, dataset.paths(args.split)[:args.micrographs], round(f * dataset.diameter_px))
                     for f in args.boxes] + [("particle-free", free, 56)]
            for name, paths, box in cases:
                row = {"without": pack, "micrographs": name, "box_px": box,
                       **guard_case(general, paths, box, 0, args.min_stand_out)}
                rows.append(row)
                if "growth" not in row:
                    print(f"{pack:<22} {name[:14]:<14} {box:>4} {row['skipped']}", flush=True)
                    continue
                outs, new = [row["stand_out_before"], row["stand_out_tuned"]], row["stand_out_new"]
                print(f"{pack:<22} {name[:14]:<14} {box:>4} {row['before']:>5} → {row['tuned']:<4} "
                      f"{row['growth']:>5.1f}× {' → '.join('–' if v is None else f'{v:.2f}' for v in outs):>11} "
                      f"{row['new']:>4} {'–' if new is None else format(new, '.2f'):>6} "
                      f"{'roll back' if row['rolled_back_by_count'] else 'keep':>10} "
                      f"{'roll back' if row['rolled_back'] else 'keep':>14} "
                      f"{'roll back' if row['rolled_back_by_new'] else 'keep':>9}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
