"""``simulate``: synthetic micrographs with exact particle centres."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..errors import ConfigError
from ._shared import LibraryDefault, given, user_errors


def _float_list(text, option, count=None) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"{option} {text}: expected comma-separated numbers") from None
    if count is not None and len(values) != count:
        raise ConfigError(f"{option} {text}: expected {count} comma-separated numbers")
    return values


def _diameters(items, molecules) -> dict[str, float]:
    """``--diameter-px`` values: ``PX`` for every molecule, ``MOLECULE=PX`` for one."""
    diameters, common = {}, None
    for item in items:
        if "=" in item:
            name, value = item.split("=", 1)
            diameters[name.strip()] = _float_list(value, "--diameter-px", 1)[0]
        else:
            common = _float_list(item, "--diameter-px", 1)[0]
    return {**({m: common for m in molecules} if common is not None else {}), **diameters}


@click.command()
@click.option("--molecule", required=True,
              help="klh-like, ring, apoferritin-like, bell, elongated, globular; several comma-separated, "
                   "or 'mix' for all (each into OUT/<molecule>/)")
@click.option("-n", "--micrographs", "n_micrographs", type=int, default=10, show_default=True,
              help="micrographs per molecule")
@click.option("--size", "size_px", type=int, default=1024, show_default=True, help="micrograph side in px")
@click.option("--snr", type=float, cls=LibraryDefault, library="simulate:SimConfig.snr",
              help="target SNR (particle signal power / noise power)")
@click.option("--noise-level", type=float, help="noise level k instead of --snr (k = 1 gives SNR 0.05)")
@click.option("--seed", type=int, default=0, show_default=True, help="same seed, same bytes")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="data set folder")
@click.option("--pixel-size-a", type=float, cls=LibraryDefault, library="simulate:SimConfig.pixel_size_a",
              help="Å per pixel")
@click.option("--diameter-px", multiple=True,
              help="particle diameter in px (default: the molecule's size at --pixel-size-a); "
                   "MOLECULE=PX sets one molecule's, repeatable")
@click.option("--views", type=click.Choice(["random", "side", "top", "side-top"]), cls=LibraryDefault,
              library="simulate:SimConfig.views",
              help="uniform random 3-D orientations, side or top views only, or side and top views mixed")
@click.option("--particles", "n_particles", type=int, default=50, show_default=True, help="particles per micrograph")
@click.option("--density", type=float, help="fraction of the area covered by particles (instead of --particles)")
@click.option("--min-distance-px", type=float, help="least centre distance [default: the diameter]")
@click.option("--overlap", type=float,
              help="allowed overlap as a fraction of the diameter (instead of --min-distance-px)")
@click.option("--defocus-um", cls=LibraryDefault, library="simulate:SimConfig.defocus_um",
              help="MIN,MAX underfocus per micrograph")
@click.option("--astigmatism-um", type=float, cls=LibraryDefault, library="simulate:SimConfig.astigmatism_um",
              help="defocus difference of the two axes (random angle per micrograph)")
@click.option("--defocus-spread-um", type=float, cls=LibraryDefault, library="simulate:SimConfig.defocus_spread_um",
              help="per-particle defocus: particles spread through ice this thick (µm)")
@click.option("--voltage-kv", type=float, cls=LibraryDefault, library="simulate:SimConfig.voltage_kv")
@click.option("--cs-mm", type=float, cls=LibraryDefault, library="simulate:SimConfig.cs_mm")
@click.option("--amplitude-contrast", type=float, cls=LibraryDefault, library="simulate:SimConfig.amplitude_contrast")
@click.option("--bfactor", "bfactor_a2", type=float, cls=LibraryDefault, library="simulate:SimConfig.bfactor_a2",
              help="B-factor in Å²")
@click.option("--contaminants", default="ice,carbon,filaments,aggregates,broken", show_default=True,
              help="unlabelled contaminant kinds, comma-separated, or 'none'")
@click.option("--contamination", type=float, cls=LibraryDefault, library="simulate:SimConfig.contamination",
              help="scales contaminant counts")
@click.option("--empty", is_flag=True, help="particle-free micrographs (contaminants and noise only)")
@click.option("--ice-gradient", type=float, cls=LibraryDefault, library="simulate:SimConfig.ice_gradient",
              help="a background ramp of up to this many noise SDs across each micrograph (uneven ice)")
@click.option("--detector-blur", "detector_blur_px", type=float, cls=LibraryDefault,
              library="simulate:SimConfig.detector_blur_px", help="a Gaussian blur of this σ px (detector MTF)")
@click.option("--split-fractions", default="0.7,0.15,0.15", show_default=True,
              help="TRAIN,VALID,TEST fractions of the micrographs")
@click.option("--overwrite", is_flag=True, help="replace a data set already in OUT")
@user_errors
def simulate(molecule, n_micrographs, size_px, snr, noise_level, seed, out_dir, pixel_size_a, diameter_px, views,
             n_particles, density, min_distance_px, overlap, defocus_um, astigmatism_um, defocus_spread_um,
             voltage_kv, cs_mm, amplitude_contrast, bfactor_a2, contaminants, contamination, empty, ice_gradient,
             detector_blur_px, split_fractions, overwrite):
    """Simulate micrographs with exact particle centres into a data set folder OUT.

    Example: deeppick simulate --molecule klh-like -n 20 --size 2048 --snr 0.05 --seed 1 -o sim/klh
    """
    from ..simulate import SimConfig, molecule_names, simulate_dataset, simulate_datasets

    molecules = molecule_names() if molecule == "mix" else [m.strip() for m in molecule.split(",") if m.strip()]
    diameters = _diameters(diameter_px, molecules)
    if overlap is not None and min_distance_px is not None:
        raise ConfigError("give --overlap or --min-distance-px, not both")
    if snr is not None and noise_level is not None:
        raise ConfigError("give --snr or --noise-level, not both")
    if overlap is not None and not 0 <= overlap < 1:
        raise ConfigError(f"--overlap {overlap}: give a fraction of the diameter in [0, 1)")
    kinds = () if contaminants.strip() == "none" else tuple(k.strip() for k in contaminants.split(",") if k.strip())
    config = SimConfig(**given(
        molecule=molecules[0] if molecules else "", size_px=size_px, pixel_size_a=pixel_size_a, views=views,
        n_particles=n_particles, density=density, min_distance_px=min_distance_px, noise_level=noise_level,
        defocus_um=None if defocus_um is None else tuple(_float_list(defocus_um, "--defocus-um", 2)),
        astigmatism_um=astigmatism_um, defocus_spread_um=defocus_spread_um, voltage_kv=voltage_kv, cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        bfactor_a2=bfactor_a2, contaminants=kinds, contamination=contamination, empty=empty,
        ice_gradient=ice_gradient, detector_blur_px=detector_blur_px),
        snr=None if noise_level is not None else (snr if snr is not None else SimConfig().snr))
    fractions = _float_list(split_fractions, "--split-fractions", 3)

    def progress(i, stem, sim):
        click.echo(f"{stem}: {len(sim.centres_xy)} particles, SNR {sim.snr:.3g}, defocus {sim.defocus_um:.2f} µm",
                   err=True)

    def resolved(name):
        sub = replace(config, molecule=name, diameter_px=diameters.get(name))
        if overlap is not None:
            sub = replace(sub, min_distance_px=(1 - overlap) * sub.resolved_diameter_px)
        return sub

    for name in molecules:
        if len(molecules) == 1 and molecule != "mix":
            path = simulate_dataset(out_dir, resolved(name), n_micrographs=n_micrographs, seed=seed,
                                    split_fractions=fractions, overwrite=overwrite, progress=progress)
        else:  # each molecule into its own folder, with its own random stream
            [path] = simulate_datasets(out_dir, [name], resolved(name), n_micrographs=n_micrographs, seed=seed,
                                       diameters_px={name: resolved(name).resolved_diameter_px},
                                       split_fractions=fractions,
                                       overwrite=overwrite, progress=progress)
        click.echo(f"wrote {n_micrographs} micrographs to {path}")
