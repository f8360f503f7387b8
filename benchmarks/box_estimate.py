"""The automatic box: how close ``estimate_box`` comes to the particle's diameter, on real and simulated molecules.

    python benchmarks/box_estimate.py [--models general.pt ...] [--diameters 40 64 100]

For each general model (default: the shipped one; leave-one-out models to see molecules they never saw):
the estimated diameter against the known one on every real pack's test micrographs (the model trained
on a pack's train split has seen that molecule: use the leave-one-out model of a pack for a fair figure,
``--pack-model PACK=FILE``) and on three simulated micrographs of every simulated molecule at each of
``--diameters`` px (sizes the zoo was not simulated at). Target: within ±20 %.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from deeppick.autopick import estimate_box  # noqa: E402
from deeppick.benchmark import PACKS, default_realdata, write_figures  # noqa: E402
from deeppick.datasets import load_dataset  # noqa: E402
from deeppick.pretrain import load_general_model  # noqa: E402
from deeppick.simulate import SimConfig, molecule_names, simulate_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="general model [the shipped one]")
    parser.add_argument("--pack-model", action="append", default=[], metavar="PACK=FILE",
                        help="the model to estimate PACK with (its leave-one-out model), repeatable")
    parser.add_argument("--realdata", type=Path, default=default_realdata())
    parser.add_argument("--diameters", nargs="+", type=float, default=[40.0, 64.0, 100.0])
    parser.add_argument("--json", type=Path, help="also write the figures to JSON/box_estimate.json")
    args = parser.parse_args(argv)
    general = load_general_model(args.model)
    per_pack = dict(item.split("=", 1) for item in args.pack_model)
    rows = []
    print(f"{'micrographs':<34} {'model':<28} {'diameter':>8} {'estimate':>8} {'ratio':>6}")

    def report(name, model_name, diameter, estimate):
        ratio = estimate.diameter_px / diameter
        rows.append({"micrographs": name, "model": model_name, "diameter_px": diameter,
                     "estimate_px": estimate.diameter_px, "box_px": estimate.box_px, "ratio": ratio,
                     "within_20_percent": abs(ratio - 1) <= 0.2, "curve": estimate.curve})
        print(f"{name:<34} {model_name[-28:]:<28} {diameter:>8.0f} {estimate.diameter_px:>8.0f} {ratio:>6.2f}"
              f"{'' if abs(ratio - 1) <= 0.2 else '  outside ±20 %'}", flush=True)

    for pack in PACKS:
        if not (args.realdata / pack / "dataset.json").is_file():
            continue
        dataset = load_dataset(args.realdata / pack)
        model_path = per_pack.get(pack)
        model = load_general_model(Path(model_path)) if model_path else general
        report(pack, model_path or str(args.model or "shipped"), dataset.diameter_px,
               estimate_box(model, dataset.paths("test")))
    with tempfile.TemporaryDirectory(prefix="deeppick-estimate-") as work:
        for molecule in molecule_names():
            for diameter in args.diameters:
                folder = Path(work) / f"{molecule}-{diameter:g}"
                config = SimConfig(molecule=molecule, size_px=1024, diameter_px=diameter, density=0.2, snr=0.1)
                simulate_dataset(folder, config, n_micrographs=3, seed=7, split_fractions=(0, 0, 1))
                report(f"simulated {molecule} {diameter:g} px", str(args.model or "shipped"), diameter,
                       estimate_box(general, folder / "micrographs"))
    inside = sum(row["within_20_percent"] for row in rows)
    print(f"{inside} of {len(rows)} estimates within ±20 % of the diameter")
    if args.json:
        print(f"wrote {write_figures(args.json, 'box_estimate', {'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
