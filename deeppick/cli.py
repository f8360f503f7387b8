"""The ``deeppick`` command line: thin wrappers over library functions.

Every command turns a :class:`~deeppick.errors.DeepPickError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ._version import __version__
from .errors import DeepPickError

EXIT_USER_ERROR = 2


def user_errors(func):
    """Print a DeepPickError as one line (no traceback) and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DeepPickError as exc:
            click.echo(f"deeppick: error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deeppick")
def cli():
    """deeppick: find protein particles in cryo-EM micrographs with a small CNN."""


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="deeppick")


# --- convert ------------------------------------------------------------------------------------------


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(["star", "box", "coord", "csv", "cbox"]),
              help="output format")
@click.option("--from", "from_fmt", type=click.Choice(["star", "box", "coord", "csv", "cbox"]),
              help="input format (default: from each file's suffix)")
@click.option("--box-px", type=float, help="box side in micrograph px (needed to write box/cbox corners)")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="multiply coordinates by this factor (e.g. 0.25 for micrographs binned 4×)")
@user_errors
def convert(source, dest, fmt, from_fmt, box_px, scale):
    """Convert coordinates SOURCE (file or folder) to DEST in another format.

    DEST is one file when it ends in the format's suffix and the format holds several micrographs
    (star, coord); otherwise it is a folder with one file per micrograph.
    """
    from .io import FORMAT_SUFFIX, read_picks, write_picks, write_picks_per_micrograph

    picks = read_picks(source, from_fmt)
    picks["x"] *= scale
    picks["y"] *= scale
    if box_px is not None:
        box_px *= scale
    single = dest.suffix.lower() == FORMAT_SUFFIX[fmt] and fmt in ("star", "coord")
    if single or (dest.suffix.lower() == FORMAT_SUFFIX[fmt] and picks["micrograph"].nunique() <= 1):
        write_picks(picks, dest, fmt, box_px)
        n_files = 1
    else:
        n_files = len(write_picks_per_micrograph(picks, dest, fmt, box_px))
    click.echo(f"converted {len(picks)} picks from {picks['micrograph'].nunique()} micrographs "
               f"into {n_files} {fmt} file(s) at {dest}")


# --- info ---------------------------------------------------------------------------------------------


@cli.command()
@click.argument("micrographs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--box-px", type=float, help="also check every micrograph is larger than this box")
@user_errors
def info(micrographs, box_px):
    """Read MICROGRAPHS (files or folders) and print size, pixel size and contrast of each.

    Goes on past unreadable micrographs, lists them at the end and then exits 2.
    """
    from .errors import MicrographError
    from .io import check_micrograph, list_micrographs, micrograph_pixel_size, read_micrograph

    failed = []
    for path in list_micrographs(micrographs):
        try:
            image = check_micrograph(read_micrograph(path), path, None if box_px is None else int(box_px))
            pixel = micrograph_pixel_size(path)
        except MicrographError as exc:
            failed.append(str(exc))
            continue
        pixel_text = f"{pixel:.3f} Å/px" if pixel else "no pixel size"
        click.echo(f"{path.name}\t{image.shape[1]}x{image.shape[0]} px\t{pixel_text}\t"
                   f"mean {image.mean():.4g}\tSD {image.std():.4g}")
    if failed:
        click.echo(f"deeppick: error: {len(failed)} micrograph(s) could not be used:", err=True)
        for line in failed:
            click.echo(f"  {line}", err=True)
        sys.exit(EXIT_USER_ERROR)


# --- simulate -----------------------------------------------------------------------------------------


def _float_list(text, option, count=None):
    from .errors import ConfigError

    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"{option} {text}: expected comma-separated numbers") from None
    if count is not None and len(values) != count:
        raise ConfigError(f"{option} {text}: expected {count} comma-separated numbers")
    return values


@cli.command()
@click.option("--molecule", required=True,
              help="klh-like, ring, apoferritin-like, bell, elongated, globular; several comma-separated, "
                   "or 'mix' for all (each into OUT/<molecule>/)")
@click.option("-n", "--micrographs", "n_micrographs", type=int, default=10, show_default=True,
              help="micrographs per molecule")
@click.option("--size", "size_px", type=int, default=1024, show_default=True, help="micrograph side in px")
@click.option("--snr", type=float, help="target SNR (particle signal power / noise power) [default: 0.1]")
@click.option("--noise-level", type=float, help="noise level k instead of --snr (k = 1 gives SNR 0.05)")
@click.option("--seed", type=int, default=0, show_default=True, help="same seed, same bytes")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="data set folder")
@click.option("--pixel-size-a", type=float, default=2.2, show_default=True, help="Å per pixel")
@click.option("--diameter-px", multiple=True,
              help="particle diameter in px (default: the molecule's size at --pixel-size-a); "
                   "MOLECULE=PX sets one molecule's, repeatable")
@click.option("--views", type=click.Choice(["random", "side", "top"]), default="random", show_default=True,
              help="uniform random 3-D orientations, or side / top views only")
@click.option("--particles", "n_particles", type=int, default=50, show_default=True, help="particles per micrograph")
@click.option("--density", type=float, help="fraction of the area covered by particles (instead of --particles)")
@click.option("--min-distance-px", type=float, help="least centre distance [default: the diameter]")
@click.option("--overlap", type=float, help="allowed overlap as a fraction of the diameter (instead of --min-distance-px)")
@click.option("--defocus-um", default="1.0,3.0", show_default=True, help="MIN,MAX underfocus per micrograph")
@click.option("--voltage-kv", type=float, default=300.0, show_default=True)
@click.option("--cs-mm", type=float, default=2.7, show_default=True)
@click.option("--amplitude-contrast", type=float, default=0.1, show_default=True)
@click.option("--bfactor", "bfactor_a2", type=float, default=100.0, show_default=True, help="B-factor in Å²")
@click.option("--contaminants", default="ice,carbon,filaments,aggregates,broken", show_default=True,
              help="unlabelled contaminant kinds, comma-separated, or 'none'")
@click.option("--contamination", type=float, default=1.0, show_default=True, help="scales contaminant counts")
@click.option("--empty", is_flag=True, help="particle-free micrographs (contaminants and noise only)")
@click.option("--split-fractions", default="0.7,0.15,0.15", show_default=True,
              help="TRAIN,VALID,TEST fractions of the micrographs")
@click.option("--overwrite", is_flag=True, help="replace a data set already in OUT")
@user_errors
def simulate(molecule, n_micrographs, size_px, snr, noise_level, seed, out_dir, pixel_size_a, diameter_px, views,
             n_particles, density, min_distance_px, overlap, defocus_um, voltage_kv, cs_mm, amplitude_contrast,
             bfactor_a2, contaminants, contamination, empty, split_fractions, overwrite):
    """Simulate micrographs with exact particle centres into a data set folder OUT.

    Example: deeppick simulate --molecule klh-like -n 20 --size 2048 --snr 0.05 --seed 1 -o sim/klh
    """
    from .errors import ConfigError
    from .simulate import CONTAMINANTS, SimConfig, molecule_names, simulate_dataset, simulate_datasets

    molecules = molecule_names() if molecule == "mix" else [m.strip() for m in molecule.split(",") if m.strip()]
    diameters, common = {}, None
    for item in diameter_px:
        if "=" in item:
            name, value = item.split("=", 1)
            diameters[name.strip()] = _float_list(value, "--diameter-px", 1)[0]
        else:
            common = _float_list(item, "--diameter-px", 1)[0]
    if common is not None:
        diameters = {**{m: common for m in molecules}, **diameters}
    if overlap is not None and min_distance_px is not None:
        raise ConfigError("give --overlap or --min-distance-px, not both")
    if snr is not None and noise_level is not None:
        raise ConfigError("give --snr or --noise-level, not both")
    kinds = () if contaminants.strip() == "none" else tuple(k.strip() for k in contaminants.split(",") if k.strip())
    bad = [k for k in kinds if k not in CONTAMINANTS]
    if bad:
        raise ConfigError(f"--contaminants: unknown kind(s) {', '.join(bad)}; use some of {', '.join(CONTAMINANTS)} "
                          "or none")
    config = SimConfig(
        molecule=molecules[0] if molecules else "", size_px=size_px, pixel_size_a=pixel_size_a, views=views,
        n_particles=n_particles, density=density, min_distance_px=min_distance_px,
        snr=snr if snr is not None or noise_level is not None else 0.1, noise_level=noise_level,
        defocus_um=tuple(_float_list(defocus_um, "--defocus-um", 2)), voltage_kv=voltage_kv, cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast, bfactor_a2=bfactor_a2, contaminants=kinds,
        contamination=contamination, empty=empty)
    if overlap is not None:
        if not 0 <= overlap < 1:
            raise ConfigError(f"--overlap {overlap}: give a fraction of the diameter in [0, 1)")
    fractions = _float_list(split_fractions, "--split-fractions", 3)

    def progress(i, stem, sim):
        click.echo(f"{stem}: {len(sim.centres_xy)} particles, SNR {sim.snr:.3g}, defocus {sim.defocus_um:.2f} µm",
                   err=True)

    def resolved(name):
        from dataclasses import replace

        sub = replace(config, molecule=name, diameter_px=diameters.get(name))
        if overlap is not None:
            sub = replace(sub, min_distance_px=(1 - overlap) * sub.resolved_diameter_px)
        return sub

    if len(molecules) == 1 and molecule != "mix":
        paths = [simulate_dataset(out_dir, resolved(molecules[0]), n_micrographs, seed, fractions, overwrite,
                                  progress)]
    else:
        paths = []
        for name in molecules:
            paths += simulate_datasets(out_dir, [name], resolved(name), n_micrographs, seed,
                                       {name: resolved(name).resolved_diameter_px},
                                       split_fractions=fractions, overwrite=overwrite, progress=progress)
    for path in paths:
        click.echo(f"wrote {n_micrographs} micrographs to {path}")

# --- extract / train ----------------------------------------------------------------------------------


def _patch_source_options(func):
    """Options shared by ``extract`` and ``train`` that say where labelled patches come from."""
    options = [
        click.option("--dataset", type=click.Path(path_type=Path), help="dataset folder (dataset.json, micrographs/, coords/)"),
        click.option("--split", default="train", show_default=True, help="which split of --dataset to use"),
        click.option("--micrographs", type=click.Path(path_type=Path), help="micrograph file or folder (with --coords)"),
        click.option("--coords", type=click.Path(path_type=Path), help="particle centres: file or folder (with --micrographs)"),
        click.option("--box-px", type=float, help="box side in micrograph px (default for --dataset: its particle diameter)"),
        click.option("--negatives", type=click.Path(path_type=Path),
                     help="coordinates of explicit background (ice, carbon, bad particles): file or folder"),
        click.option("--negative-ratio", type=float, default=1.0, show_default=True,
                     help="random background patches per particle (≥ 0.6 box from every particle)"),
        click.option("--max-per-micrograph", type=int, help="use at most this many particles per micrograph"),
        click.option("--max-micrographs", type=int, help="use at most the first N micrographs"),
        click.option("--seed", type=int, default=0, show_default=True, help="random seed"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _labelled_patches(dataset, split, micrographs, coords, box_px, negatives, negative_ratio,
                      max_per_micrograph, max_micrographs, seed, progress=True):
    """The patch set named by the shared options, and the dataset it came from (or None)."""
    from .errors import ConfigError
    from .io import list_micrographs, read_picks
    from .patches import PatchConfig, extract_dataset_patches, extract_patches

    config = PatchConfig(negative_ratio=negative_ratio, max_positives_per_micrograph=max_per_micrograph)
    neg = read_picks(negatives) if negatives is not None else None
    if dataset is not None:
        if micrographs is not None or coords is not None:
            raise ConfigError("give either --dataset or --micrographs with --coords, not both")
        from .datasets import load_dataset

        ds = load_dataset(dataset)
        ps = extract_dataset_patches(ds, split, box_px, config, negatives=neg, seed=seed,
                                     max_micrographs=max_micrographs, progress=progress)
        return ps, ds
    if micrographs is None or coords is None or not box_px:
        raise ConfigError("say where the labelled particles are: --dataset DIR, or --micrographs DIR "
                          "--coords DIR --box-px N")
    paths = list_micrographs(micrographs)[:max_micrographs]
    ps = extract_patches(paths, read_picks(coords), box_px, config, negatives=neg, seed=seed, progress=progress)
    return ps, None


@cli.command()
@_patch_source_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="patch set to write (.npz)")
@user_errors
def extract(output, **options):
    """Crop labelled training patches (particles and background) into a reusable patch set."""
    from .patches import save_patch_set

    ps, _ = _labelled_patches(**options)
    save_patch_set(ps, output)
    click.echo(f"wrote {ps.summary()} to {output}")


@cli.command()
@click.option("--patches", type=click.Path(path_type=Path), help="patch set from 'deeppick extract'")
@_patch_source_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="model file to write (.pt)")
@click.option("--arch", type=click.Choice(["deeppicker", "deepem"]), default="deeppicker", show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True, help="most epochs (early stopping may end sooner)")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--lr", type=float, help="learning rate [default: 0.01 for sgd, 0.001 for adam]")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--patience", type=int, default=6, show_default=True, help="epochs without improvement before stopping")
@click.option("--no-augment", is_flag=True, help="no random 90° rotations and flips")
@click.option("--noise", type=float, default=0.0, show_default=True, help="SD of Gaussian noise added to patches")
@click.option("--contrast", type=float, default=0.0, show_default=True, help="contrast jitter: scale by 1 ± this")
@click.option("--device", help="torch device (default: cuda when present, else cpu)")
@click.option("--resume", is_flag=True, help="continue from OUTPUT.ckpt, the checkpoint written each epoch")
@click.option("--quiet", is_flag=True, help="no progress bars")
@user_errors
def train(patches, output, arch, epochs, optimizer, lr, batch_size, patience, no_augment, noise, contrast,
          device, resume, quiet, **options):
    """Train a particle classifier on a patch set, or on micrographs with their particle coordinates.

    The validation micrographs of a --dataset are never trained on; the model's accuracy on their
    patches is reported and stored in the model file.
    """
    from .model import save_model
    from .patches import load_patch_set
    from .train import TrainConfig, evaluate_patches, train_model

    ds = None
    if patches is not None:
        if options["dataset"] is not None or options["micrographs"] is not None:
            from .errors import ConfigError

            raise ConfigError("give either --patches or --dataset / --micrographs, not both")
        ps = load_patch_set(patches)
    else:
        ps, ds = _labelled_patches(progress=not quiet, **options)
    click.echo(f"training on {ps.summary()}")
    config = TrainConfig(arch=arch, optimizer=optimizer, learning_rate=lr, batch_size=batch_size, epochs=epochs,
                         patience=patience, rotate_flip=not no_augment, noise_sd=noise, contrast_jitter=contrast,
                         seed=options["seed"], device=device)
    checkpoint = output.with_name(output.name + ".ckpt")
    model = train_model(ps, config, box_px=options["box_px"] if patches is None else None, progress=not quiet,
                        checkpoint=checkpoint, resume=resume)
    line = (f"held-out patch accuracy {model.info['val_accuracy']:.3f} (epoch {model.info['best_epoch']} of "
            f"{model.info['epochs_run']})" if model.info["val_accuracy"] is not None else "no held-out patches")
    if ds is not None and ds.paths("valid"):
        from .patches import PatchConfig, extract_dataset_patches

        valid = extract_dataset_patches(ds, "valid", model.box_px, PatchConfig(), model.preprocess,
                                        seed=options["seed"])
        model.info["valid_split"] = evaluate_patches(model, valid)
        line += f"; accuracy on the {len(valid)} patches of the valid micrographs {model.info['valid_split']['accuracy']:.3f}"
    save_model(model, output)
    click.echo(f"wrote {output}: {line}")


# --- pick / evaluate ----------------------------------------------------------------------------------

# --- pretrain / autopick ------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
