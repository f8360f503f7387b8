"""The general model's pooled F2 threshold chosen as picking uses it (rotation-averaged scores) and without rotations.

    python benchmarks/shipped_threshold.py [--model general.pt] [--work /tmp/deeppick-threshold] [--json F]

On the held-out micrographs of the shipped model's recipe (the threshold micrograph of each real pack's
train split and one of each simulated molecule, zoo of 8 micrographs per molecule at density 0.15 as the
shipped recipe simulated it), :func:`deeppick.pretrain.pooled_ranking` once with each scan and the pooled
F2 and per-source AP of both, beside the threshold stored in the model. What the difference costs: the F2
on rotation-averaged scores at the stored threshold against at the re-chosen one. Needs ../shared/realdata.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from deeppick.benchmark import PACKS, default_realdata, require_realdata, write_figures  # noqa: E402
from deeppick.pipeline import PickConfig  # noqa: E402
from deeppick.metrics import fbeta_curve  # noqa: E402
from deeppick.pretrain import PretrainConfig, load_general_model, pooled_ranking  # noqa: E402
from deeppick.scan import ScanConfig  # noqa: E402
from deeppick.simulate import simulate_zoo  # noqa: E402
from deeppick.threshold import choose_threshold  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a general model [the shipped one]")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deeppick-threshold"), help="the zoo goes here")
    parser.add_argument("--json", type=Path, help="also write the figures to JSON/shipped_threshold.json")
    args = parser.parse_args(argv)
    realdata = default_realdata()
    require_realdata(realdata)
    model = load_general_model(args.model)
    zoo = simulate_zoo(args.work / "zoo", n_micrographs=8, density=0.15)
    config = PretrainConfig(max_train_micrographs=4, max_valid_micrographs=1)
    sources = [*(realdata / p for p in PACKS), *zoo]
    figures = {"stored_threshold": model.threshold}
    for rotations in (False, True):
        pick_config = PickConfig(scan=replace(ScanConfig(), rotations=rotations))
        ranked, per_source = pooled_ranking(model, sources, config=config, pick_config=pick_config)
        threshold, f2 = choose_threshold(ranked, config.beta)
        figures["rotations" if rotations else "no_rotations"] = {
            "threshold": threshold, "f2": f2, "ap": {s["dataset"]: round(s["ap"], 3) for s in per_source}}
        print(f"{'rotation-averaged' if rotations else 'no rotations':<18} threshold {threshold:.3f}  pooled F2 "
              f"{f2:.3f}  AP " + " ".join(f"{s['dataset']} {s['ap']:.3f}" for s in per_source), flush=True)
    thresholds, f2_curve = fbeta_curve(*ranked, config.beta)  # the rotation-averaged scans, as picking uses
    at_stored = thresholds >= model.threshold
    figures["f2_rotations_at_stored"] = float(f2_curve[at_stored][-1]) if at_stored.any() else 0.0
    rechosen = figures["rotations"]
    print(f"rotation-averaged scores: F2 {figures['f2_rotations_at_stored']:.3f} at the stored threshold "
          f"{model.threshold:.3f}, {rechosen['f2']:.3f} at the re-chosen {rechosen['threshold']:.3f}")
    if args.json:
        print(f"wrote {write_figures(args.json, 'shipped_threshold', figures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
