"""Scanner speed (issue 5), all figures measured in one run: ``deeppick.benchmark.speed.scan_figures``.

1. Pick one 4096 × 4096 micrograph, box 160 px, step 4 px, four rotations: ``prepare_micrograph`` +
   ``scan_micrograph`` wall time (median of ``--repeats``) and peak resident memory (targets ≤ 5 s on
   2 cores, ≤ 2 GB).
2. Achieved GFLOP/s of that scan against a float32 matrix-multiply peak measured here (target ≥ 40 %).
3. Dense vs naive (per-patch) scanner on the same positions (target ≥ 100×).

Usage: ``python benchmarks/scan_speed.py [--arch deeppicker] [--threads 2] [--naive-px 96] [--device cuda]
[--json OUT]``. With ``--device cuda`` every figure is the GPU's (its matmul peak too). ``deeppick benchmark
speed`` runs this with the training and simulation timings.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from deeppick.benchmark import default_realdata, write_figures  # noqa: E402
from deeppick.benchmark.speed import scan_figures, scan_table  # noqa: E402

REAL_4096 = default_realdata() / "betagal-10017" / "micrographs" / "Falcon_2012_06_12-16_44_07_0.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deeppicker", choices=["deeppicker", "deepem", "wide"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=4096, help="micrograph side, px")
    parser.add_argument("--box", type=float, default=160.0, help="box, micrograph px")
    parser.add_argument("--step", type=float, default=4.0, help="scan step, micrograph px")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the 4096² pick (median reported)")
    parser.add_argument("--naive-px", type=int, default=96, help="model-frame image side for the naive comparison")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU")
    parser.add_argument("--micrograph", type=Path, default=REAL_4096 if REAL_4096.is_file() else None,
                        help="4096² micrograph for the full pick [default: a betagal-10017 test micrograph "
                             "when ../shared/realdata is there]")
    parser.add_argument("--json", type=Path, help="also write the figures to JSON/scan.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = scan_figures(arch=args.arch, size_px=args.size, box_px=args.box, step_px=args.step,
                           repeats=args.repeats, naive_px=args.naive_px, device=args.device, micrograph=args.micrograph)
    print(f"torch {torch.__version__}, threads {args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(scan_table(figures))
    if args.json:
        print(f"wrote {write_figures(args.json, 'scan', figures)}")


if __name__ == "__main__":
    main()
