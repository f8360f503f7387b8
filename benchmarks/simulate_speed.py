"""Simulator speed: seconds per 2048×2048 micrograph with 100 particles (target ≤ 2 s on 2 cores).

Usage: python benchmarks/simulate_speed.py [--repeats 3]

Prints one row per case: median seconds per micrograph over the repeats, and the ratio to the target
(< 1 meets it); the first call per molecule also builds its cached 3-D model, timed apart
(``deeppick.benchmark.speed.simulate_figures``).
"""

from __future__ import annotations

import argparse

from deeppick.benchmark.speed import simulate_figures, simulate_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(simulate_table(simulate_figures(repeats=args.repeats)))


if __name__ == "__main__":
    main()
