"""Micrographs per second through ``pick_micrographs``: one worker, two workers, a two-worker Dask cluster.

    python benchmarks/throughput.py [--sizes 1024 4096] [--micrographs 16] [--box 160]

The same micrographs (simulated, ``--micrographs`` of each size; box 160 px, four rotations, the shipped
general model) are picked into a fresh folder by: one worker process using every core's threads (what one
process gets), one worker with one thread (one core's worth), two worker processes with one thread each,
and a LocalCluster of two single-threaded worker processes on loopback (when Dask is installed). Prints
micrographs per second and the ratio to one single-threaded worker; targets: ≥ 1.7× for two workers on
two cores at 4096², ≥ 1.5× for the cluster.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--micrographs", type=int, default=16)
    parser.add_argument("--box", type=float, default=160.0)
    parser.add_argument("--device", default=None, help="cuda to pick on the GPU [default: cuda when present]")
    args = parser.parse_args(argv)

    import torch

    from deeppick.io import write_micrograph
    from deeppick.pretrain import load_general_model, with_box
    from deeppick.simulate import SimConfig, simulate_micrograph

    from deeppick.model import default_device

    model = with_box(load_general_model(device=args.device or default_device()), args.box)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="deeppick-throughput-"))
    try:
        print(f"{cores} cores; {args.micrographs} micrographs of each size, box {args.box:g} px, four rotations")
        print(f"{'size':>6} {'how':<34} {'mic/s':>7} {'s':>7} {'× 1 worker, 1 thread':>21}")
        for size in args.sizes:
            folder = work / f"mics-{size}"
            first = simulate_micrograph(SimConfig(size_px=size, diameter_px=args.box, density=0.2), 0).image
            for i in range(args.micrographs):  # one simulated image, many files: the picking is what is timed
                write_micrograph(folder / f"m{i:03d}.mrc", first)
            runs = [("1 worker, all threads", dict(workers=1), cores),
                    ("1 worker, 1 thread", dict(workers=1), 1),
                    ("2 workers, 1 thread each", dict(workers=2), None)]
            rates = {}
            for label, how, threads in runs:
                if threads is not None:
                    torch.set_num_threads(threads)
                rates[label] = _rate(model, folder, work / f"out-{size}-{len(rates)}", how)
            torch.set_num_threads(cores)
            try:
                from dask.distributed import Client, LocalCluster

                with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, Client(cluster) as client:
                    client.run(lambda: None)  # workers up before the clock starts
                    rates["LocalCluster, 2 workers"] = _rate(model, folder, work / f"out-{size}-dask",
                                                             dict(scheduler=client))
            except ImportError:
                print("       (no Dask installed: pip install 'deeppick[dask]' for the cluster row)")
            base = rates["1 worker, 1 thread"]
            for label, rate in rates.items():
                print(f"{size:>6} {label:<34} {rate:>7.2f} {args.micrographs / rate:>7.1f} {rate / base:>21.2f}",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _rate(model, folder: Path, out: Path, how: dict) -> float:
    from deeppick.batch import pick_micrographs

    paths = sorted(folder.iterdir())
    start = time.perf_counter()
    result = pick_micrographs(model, paths, out, **how)
    seconds = time.perf_counter() - start
    assert len(result.counts) == len(paths), result.failed
    return len(paths) / seconds


if __name__ == "__main__":
    raise SystemExit(main())
