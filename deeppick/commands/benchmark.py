"""``benchmark klh|snr|realdata|speed``: the seed papers' benchmarks; each prints a table and writes its JSON."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from ._shared import user_errors


@click.group()
def benchmark():
    """Published benchmarks: DeepEM's KLH protocol, an SNR sweep, the real packs, speed.

    Each prints its figures and writes them, with the machine and versions, to OUT/<name>.json.
    """


def _output(output: Path, name: str, figures: dict, table: str) -> None:
    from ..benchmark import write_figures

    click.echo(table)
    click.echo(f"wrote {write_figures(output, name, figures)}")


@benchmark.command()
@click.option("--data", type=click.Path(path_type=Path),
              help="folder holding the KLH micrographs (*.002.mrc) and manual picks (.box or .star)")
@click.option("--synthetic", is_flag=True, help="run on simulated KLH-like micrographs instead (82 of 2048² px)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder for every output")
@click.option("--micrographs", "n_micrographs", type=int, default=82, show_default=True,
              help="with --synthetic: how many to simulate")
@click.option("--size", "size_px", type=int, default=2048, show_default=True,
              help="with --synthetic: micrograph side, px")
@click.option("--epochs", type=int, help="most training epochs [default: TrainConfig's]")
@click.option("--no-report", is_flag=True, help="leave out the HTML report")
@user_errors
def klh(data, synthetic, output, n_micrographs, size_px, epochs, no_report):
    """DeepEM's KLH protocol: train on the first 50 micrographs (800 particles), test on the other 32.

    Prints AP, the point where precision = recall, and precision and recall at the F2 threshold; writes
    the model, the test picks, report.html and klh.json in OUTPUT.
    """
    from dataclasses import replace

    from ..benchmark.klh import find_klh_data, klh_protocol, klh_table, simulate_klh
    from ..train import TrainConfig

    if (data is None) == (not synthetic):
        raise ConfigError("give the KLH data with --data DIR, or --synthetic to run on simulated data")
    if data is not None and output.resolve().is_relative_to(data.resolve()):
        raise ConfigError(f"{output} lies inside the data folder {data}; write the outputs elsewhere, so a rerun "
                          "does not read them as manual picks")
    if synthetic:
        found = simulate_klh(output / "synthetic-klh", n_micrographs=n_micrographs, size_px=size_px)
    else:
        found = find_klh_data(data)
    click.echo(found.summary())
    train_config = TrainConfig() if epochs is None else replace(TrainConfig(), epochs=epochs)
    figures = klh_protocol(found, output, train_config=train_config, report=not no_report, progress=True)
    _output(output, "klh-synthetic" if synthetic else "klh", figures, klh_table(figures))


@benchmark.command()
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="folder for the simulated data sets and snr.json")
@click.option("--snr", "snrs", multiple=True, type=float, help="SNRs to try, repeatable [0.1 … 0.001]")
@click.option("--micrographs", "n_micrographs", type=int, default=10, show_default=True, help="per SNR")
@click.option("--molecule", default="globular", show_default=True, help="the simulator's molecule")
@click.option("--epochs", type=int, help="most training epochs [default: TrainConfig's]")
@user_errors
def snr(output, snrs, n_micrographs, molecule, epochs):
    """Train and test on simulated micrographs at each SNR (DeepEM Fig. 6, crYOLO Fig. 6): where does AP break?"""
    from dataclasses import replace

    from ..benchmark.snr import SNRS, snr_sweep, snr_table
    from ..simulate import SimConfig
    from ..train import TrainConfig

    train_config = TrainConfig() if epochs is None else replace(TrainConfig(), epochs=epochs)
    figures = snr_sweep(output, snrs=snrs or SNRS, sim=SimConfig(molecule=molecule, size_px=1024, n_particles=40),
                        n_micrographs=n_micrographs, train_config=train_config)
    _output(output, "snr", figures, snr_table(figures))


@benchmark.command()
@click.option("--root", type=click.Path(path_type=Path),
              help="folder of the real packs [default: DEEPPICK_REALDATA, else ../shared/realdata]")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder for models and JSON")
@click.option("--pack", "packs", multiple=True, help="only these packs, repeatable [all three]")
@click.option("--reduced", is_flag=True,
              help="the quick leave-one-out recipe (4,000 particles, 10 epochs, 3 test micrographs, no rotations)")
@user_errors
def realdata(root, output, packs, reduced):
    """Semi-automated and leave-one-out AP per real pack, in one table (hours on 2 cores; models are cached)."""
    from ..benchmark import PACKS, default_realdata
    from ..benchmark.realdata import LeaveOneOutRecipe, realdata_benchmark, realdata_table

    recipe = LeaveOneOutRecipe.reduced() if reduced else LeaveOneOutRecipe()
    figures = realdata_benchmark(root or default_realdata(), output, packs=packs or PACKS, recipe=recipe,
                                 progress=click.echo)
    _output(output, "realdata", figures, realdata_table(figures))


@benchmark.command()
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder for speed.json")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda")
@click.option("--size", "size_px", type=int, default=4096, show_default=True, help="micrograph side for the scan")
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--quick", is_flag=True, help="small sizes and one repeat: checks the benchmark runs, not the speed")
@user_errors
def speed(output, device, size_px, repeats, quick):
    """The scanner (fast vs naive, 4096² time, fraction of the matmul peak), training and simulation times."""
    from ..benchmark import default_realdata
    from ..benchmark.speed import (scan_figures, scan_table, simulate_figures, simulate_table, train_figures,
                                   train_table)

    if quick:
        size_px, repeats = min(size_px, 512), 1
    realdata = default_realdata()
    micrograph = realdata / "betagal-10017" / "micrographs" / "Falcon_2012_06_12-16_44_07_0.jpg"
    scan = scan_figures(size_px=size_px, repeats=repeats, device=device, naive_px=48 if quick else 96,
                        micrograph=micrograph if micrograph.is_file() and not quick else None)
    train = train_figures(epochs=1 if quick else 10, n_positive=50 if quick else 800, archs=("deeppicker",)
                          if quick else ("deeppicker", "deepem"), realdata=None if quick else realdata)
    simulation = simulate_figures(repeats=repeats, size_px=512 if quick else 2048, n_particles=5 if quick else 100)
    figures = {"quick": quick, "scan": scan, "train": train, "simulate": simulation}
    _output(output, "speed", figures, "\n\n".join([scan_table(scan), train_table(train), simulate_table(simulation)]))
