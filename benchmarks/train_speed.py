"""Training speed: 800 particle + 800 background patches, 10 epochs (issue 4 target: ≤ 2 minutes on 2 cores).

Patches come from the cryoppp-10059 train split when ../shared/realdata is present (noise otherwise).
Early stopping is off so every run does all its epochs. Prints one row per network and the ratio of the
measured time to the target (``deeppick.benchmark.speed.train_figures``).

    python benchmarks/train_speed.py [--threads 2] [--epochs 10] [--arch deeppicker deepem]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

from deeppick.benchmark import default_realdata  # noqa: E402
from deeppick.benchmark.speed import TRAIN_TARGET_S, train_figures, train_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-positive", type=int, default=800)
    parser.add_argument("--arch", nargs="+", default=["deeppicker", "deepem"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures = train_figures(archs=args.arch, epochs=args.epochs, n_positive=args.n_positive,
                            realdata=default_realdata())
    print(train_table(figures))
    worst = max(row["train_s"] for row in figures["rows"])
    print(f"slowest / target: {worst / TRAIN_TARGET_S:.2f} "
          f"({'meets' if worst <= TRAIN_TARGET_S else 'misses'} the 2-minute target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
