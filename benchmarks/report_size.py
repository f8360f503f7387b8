"""The HTML report of a large dataset: its size and its time against the picking it reports on.

    python benchmarks/report_size.py [--micrographs 5000] [--pack ribosome80s-10028]

A real pack's micrographs are picked with the shipped general model at the pack's box (timed, per
micrograph); a folder of ``--micrographs`` picks files is then made from those picks (the micrographs
linked cyclically), as a dataset of that size would look, and ``deeppick report`` is built for it (with
the model: summary, the gallery of 12, one score map). Prints the report's size and time, and the time
against the picking of that many micrographs (the per-micrograph time measured here × their number).
Targets: under 20 MB, at most 10 % of the picking time. Without ../shared/realdata it uses simulated
micrographs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from deeppick.benchmark import default_realdata  # noqa: E402
REALDATA = default_realdata()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--micrographs", type=int, default=5000, help="micrographs in the reported folder")
    parser.add_argument("--pack", default="ribosome80s-10028")
    args = parser.parse_args(argv)

    from deeppick.batch import pick_micrographs
    from deeppick.datasets import load_dataset
    from deeppick.io import list_micrographs
    from deeppick.pretrain import load_general_model, with_box
    from deeppick.report import build_report, write_html_report
    from deeppick.simulate import SimConfig, simulate_dataset

    work = Path(tempfile.mkdtemp(prefix="deeppick-report-"))
    try:
        if (REALDATA / args.pack / "dataset.json").is_file():
            dataset = load_dataset(REALDATA / args.pack)
            source = args.pack
        else:
            dataset = load_dataset(simulate_dataset(work / "sim", SimConfig(size_px=1024, diameter_px=56,
                                                                           n_particles=80, snr=0.1), n_micrographs=6))
            source = "simulated"
        model = with_box(load_general_model(), dataset.default_box_px())
        start = time.perf_counter()
        real = pick_micrographs(model, dataset.paths(), work / "real")
        pick_s = (time.perf_counter() - start) / len(dataset.paths())
        mics, picks = work / "mics", work / "picks"
        mics.mkdir()
        picks.mkdir()
        sources = list_micrographs(dataset.root / "micrographs")
        for i in range(args.micrographs):
            origin = sources[i % len(sources)]
            (mics / f"mic_{i:05d}{origin.suffix}").symlink_to(origin.resolve())
            shutil.copy(work / "real" / f"{origin.stem}.star", picks / f"mic_{i:05d}.star")
        start = time.perf_counter()
        report = build_report(picks, mics, model=model)
        path = write_html_report(report, work / "report.html")
        report_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        picking_s = pick_s * args.micrographs
        print(f"{source}: {sum(real.counts.values())} picks on {len(dataset.paths())} micrographs, "
              f"{pick_s:.2f} s per micrograph picked")
        print(f"{'micrographs reported':<32}{args.micrographs:>10,}")
        print(f"{'picks reported':<32}{report.n_picks:>10,}")
        print(f"{'report size (MB)':<32}{size_mb:>10.1f}  target < 20")
        print(f"{'report time (s)':<32}{report_s:>10.1f}")
        print(f"{'picking them (s, estimated)':<32}{picking_s:>10.0f}")
        print(f"{'report / picking':<32}{report_s / picking_s:>10.2%}  target ≤ 10 %")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
