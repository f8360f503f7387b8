"""Einstein from noise (DeepPicker §3) for one general model: does it pick particle-free micrographs?

    python benchmarks/einstein_from_noise.py [--model general.pt] [--n 3] [--box-px 56]

Picks ``--n`` simulated particle-free 1024² micrographs at ``--box-px`` with the model (rotation-averaged
scan, every candidate kept; ``deeppick.benchmark.realdata.einstein_from_noise``) and prints the fraction
of candidate scores below the model's pick threshold (issue 6 goal: ≥ 95 %) and the picks per micrograph
above it: on micrographs with contaminants at twice the usual rate (ice, carbon edges, filaments,
aggregates, broken particles), then on as many of noise alone; and how many of the picks lie within half a
box of a broken particle, a particle-shaped object every picker boxes. Default model: the one shipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="general model [default: the shipped one]")
    parser.add_argument("--n", type=int, default=3, help="particle-free micrographs")
    parser.add_argument("--box-px", type=float, default=56.0, help="box to pick at, px")
    args = parser.parse_args(argv)

    from deeppick.benchmark.realdata import einstein_from_noise
    from deeppick.pretrain import load_general_model

    model = load_general_model(args.model)
    with tempfile.TemporaryDirectory(prefix="deeppick-noise-") as work:
        result = einstein_from_noise(model, work, n=args.n, box_px=args.box_px)
    print(json.dumps({"model": str(args.model or "shipped"), **result}))
    for name, figures in (("with contaminants", result), ("noise only", result["noise_only"])):
        print(f"{name}: {figures['below']:.1%} of {figures['n_candidates']} candidate scores below the threshold "
              f"{result['threshold']:.3f} (goal ≥ 95 %); {figures['picks_per_micrograph']:.1f} picks per micrograph,"
              f" {figures['picks_on_broken_per_micrograph']:.1f} of them on broken particles; away from those"
              f" {figures['below_threshold_off_broken']:.1%} below")
    return 0


if __name__ == "__main__":
    sys.exit(main())
