"""The ``deeppick`` command line: thin wrappers over library functions.

Every command turns a :class:`~deeppick.errors.DeepPickError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from ._version import __version__
from .errors import DeepPickError

EXIT_USER_ERROR = 2
# Training defaults shown by --help: those of train.TrainConfig and pretrain.PRETRAIN_TRAINING (a test checks),
# written out here so the command line starts without importing torch.
TRAIN_EPOCHS, TRAIN_PATIENCE = 100, 10
PRETRAIN_EPOCHS = 30
AUTOPICK_OFF_CENTRE = 0.0  # pretrain.AutopickConfig().off_centre_ratio
PICK_FORMATS = ("star", "box", "coord", "csv", "cbox")  # io.PICK_FORMATS, written out for the same reason


def user_errors(func):
    """Print a DeepPickError, or a file the system would not read or write, as one line (no traceback);
    exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DeepPickError as exc:
            click.echo(f"deeppick: error: {exc}", err=True)
        except OSError as exc:  # an output folder that is a file, no permission, a full disk
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"deeppick: error: {where}{exc.strerror or exc}; check the path, its permissions and the "
                       "free space", err=True)
        sys.exit(EXIT_USER_ERROR)

    return wrapper


def check_output_file(path: Path, what: str, folder: bool = False) -> None:
    """Fail at once, not after training, when ``path`` (a file to write, or with ``folder`` a folder to
    write into) cannot be written."""
    from .errors import ConfigError

    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: is a file, not a folder; choose another folder for the {what}")
    if not folder and path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name for the {what}")
    existing = path if folder else path.parent  # the nearest folder that exists is where writing starts
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{path}: {existing} is a file, not a folder; choose another path for the {what}")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{path}: no permission to write in {existing}; choose another path for the {what}")


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
@click.option("--to", "fmt", required=True, type=click.Choice(PICK_FORMATS),
              help="output format")
@click.option("--from", "from_fmt", type=click.Choice(PICK_FORMATS),
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


def _report_failures(failed: list[tuple[str, str]], verb: str = "picked") -> None:
    """After a batch: list the micrographs that failed, each with its one-line reason, and exit 2."""
    if failed:
        click.echo(f"deeppick: error: {len(failed)} micrograph(s) could not be {verb}:", err=True)
        for _, reason in failed:
            click.echo(f"  {reason}", err=True)
        sys.exit(EXIT_USER_ERROR)


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
            failed.append((str(path), str(exc)))
            continue
        pixel_text = f"{pixel:.3f} Å/px" if pixel else "no pixel size"
        click.echo(f"{path.name}\t{image.shape[1]}x{image.shape[0]} px\t{pixel_text}\t"
                   f"mean {image.mean():.4g}\tSD {image.std():.4g}")
    _report_failures(failed, "used")


# --- manifest / fetch ---------------------------------------------------------------------------------


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="manifest file (.json)")
@click.option("--base-url", help="where a mirror serves this folder")
@user_errors
def manifest(dataset, output, base_url):
    """Write a manifest (files, sizes, SHA-256) of a dataset folder, to publish it or check a copy."""
    import json

    from .datasets import make_manifest
    from .io import atomic_write_text

    data = make_manifest(dataset, base_url)
    atomic_write_text(output, json.dumps(data, indent=1) + "\n")
    click.echo(f"wrote {output}: {len(data['files'])} files of {dataset}")


@cli.command()
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="dataset folder to fill")
@click.option("--base-url", help="mirror serving the files (overrides the manifest's)")
@user_errors
def fetch(manifest_path, output, base_url):
    """Download a dataset described by MANIFEST, checking every file's SHA-256 (resumes if interrupted)."""
    from .datasets import fetch_dataset

    fetched, present = fetch_dataset(manifest_path, output, base_url)
    click.echo(f"{output}: fetched {fetched} files, {present} already present and verified")


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


def _highpass_option(func):
    """``--highpass SIGMA``: background subtraction when micrographs are prepared (PreprocessConfig)."""
    return click.option("--highpass", type=float, default=0.0,
                        help="subtract the background before normalising: a Gaussian-weighted local plane of σ "
                             "model px (64 = one box; at least 16), for micrographs with a strong gradient of ice "
                             "thickness; the model keeps it for picking [default: 0, off; see "
                             "docs/measurements.md, Background subtraction, before turning it on]")(func)


def _preprocess(highpass: float):
    from .preprocess import PreprocessConfig

    return PreprocessConfig(highpass_sigma_model_px=highpass)


def _patch_source_options(func):
    """Options shared by ``extract`` and ``train`` that say where labelled patches come from."""
    options = [
        click.option("--dataset", type=click.Path(path_type=Path), help="dataset folder (dataset.json, micrographs/, coords/)"),
        click.option("--split", default="train", show_default=True, help="which split of --dataset to use"),
        click.option("--micrographs", type=click.Path(path_type=Path), help="micrograph file or folder (with --coords)"),
        click.option("--coords", type=click.Path(path_type=Path),
                     help="particle centres (with --micrographs): a file, a folder, or a RELION list of coordinate "
                          "files (a ManualPick job's manualpick.star)"),
        click.option("--coords-format", type=click.Choice(PICK_FORMATS),
                     help="format of the --coords and --negatives files (default: from each file's suffix; "
                          "needed for a folder holding two formats)"),
        click.option("--box-px", type=float, help="box side in micrograph px (default for --dataset: its particle diameter)"),
        click.option("--negatives", type=click.Path(path_type=Path),
                     help="coordinates of explicit background (ice, carbon, bad particles): file or folder"),
        click.option("--negative-ratio", type=float, default=1.0, show_default=True,
                     help="random background patches per particle (≥ 0.6 box from every particle)"),
        click.option("--near-negatives", "near_negative_ratio", type=float,
                     help="background patches per particle beside a particle (0.3–0.6 box from it): off-centre "
                          "views that teach where the centre is [default: 0, none; 1 helped crowded particles]"),
        click.option("--off-centre", "off_centre_ratio", type=click.FloatRange(min=0),
                     help="off-centre views per particle, within 0.5 box of it, with a soft target that falls "
                          "with the distance to the nearest particle (sharper peaks) [default: 4; 0: none]"),
        click.option("--max-per-micrograph", type=int, help="use at most this many particles per micrograph"),
        click.option("--max-micrographs", type=int, help="use at most the first N micrographs"),
        click.option("--seed", type=int, default=0, show_default=True, help="random seed"),
    ]
    for option in reversed(options):
        func = option(func)
    return _highpass_option(func)


def _labelled_patches(dataset, split, micrographs, coords, coords_format, box_px, negatives, negative_ratio,
                      near_negative_ratio, off_centre_ratio, max_per_micrograph, max_micrographs, seed, highpass,
                      progress=True, preprocess=None):
    """The patch set named by the shared options, and the dataset it came from (or None).

    ``preprocess``: prepare the micrographs so (an initial model's), instead of the defaults with ``highpass``.
    """
    from dataclasses import replace

    from .errors import ConfigError
    from .io import list_micrographs, read_picks
    from .patches import PatchConfig, extract_dataset_patches, extract_patches

    if preprocess is None:
        preprocess = _preprocess(highpass)
    elif highpass and highpass != preprocess.highpass_sigma_model_px:
        raise ConfigError(f"--highpass {highpass:g} differs from the initial model's "
                          f"{preprocess.highpass_sigma_model_px:g}: a fine-tuned model keeps its initial "
                          "model's preparation; leave --highpass out")
    config = PatchConfig(negative_ratio=negative_ratio, max_positives_per_micrograph=max_per_micrograph)
    if near_negative_ratio is not None:
        config = replace(config, near_negative_ratio=near_negative_ratio)
    if off_centre_ratio is not None:
        config = replace(config, off_centre_ratio=off_centre_ratio)
    neg = read_picks(negatives, coords_format) if negatives is not None else None
    if dataset is not None:
        if micrographs is not None or coords is not None:
            raise ConfigError("give either --dataset or --micrographs with --coords, not both")
        from .datasets import load_dataset

        ds = load_dataset(dataset)
        ps = extract_dataset_patches(ds, split, box_px, config, preprocess, negatives=neg, seed=seed,
                                     max_micrographs=max_micrographs, progress=progress)
        return ps, ds
    if micrographs is None or coords is None or not box_px:
        raise ConfigError("say where the labelled particles are: --dataset DIR, or --micrographs DIR "
                          "--coords DIR --box-px N")
    paths = list_micrographs(micrographs)[:max_micrographs]
    ps = extract_patches(paths, read_picks(coords, coords_format), box_px, config, preprocess,
                         negatives=neg, seed=seed, progress=progress)
    return ps, None


@cli.command()
@_patch_source_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="patch set to write (.npz)")
@user_errors
def extract(output, **options):
    """Crop labelled training patches (particles and background) into a reusable patch set."""
    from .patches import save_patch_set

    check_output_file(output, "patch set")
    ps, _ = _labelled_patches(**options)
    save_patch_set(ps, output)
    click.echo(f"wrote {ps.summary()} to {output}")


@cli.command()
@click.option("--patches", type=click.Path(path_type=Path), help="patch set from 'deeppick extract'")
@_patch_source_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="model file to write (.pt)")
@click.option("--arch", type=click.Choice(["deeppicker", "deepem"]), default="deeppicker", show_default=True,
              help="network (with --init: the initial model's)")
@click.option("--init", "init_model",
              help="fine-tune this model instead of starting from random weights: a model file, or 'general' "
                   "for the shipped general model; its network and micrograph preparation are kept, the box is "
                   "--box-px's (measured: with one or two labelled micrographs about the same AP as from scratch "
                   "in a third to two thirds of the time; with four, as good or better from scratch)")
@click.option("--epochs", type=int, default=TRAIN_EPOCHS, show_default=True,
              help="most epochs (early stopping may end sooner)")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--lr", type=float, help="learning rate [default: 0.01 for sgd, 0.001 for adam]")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--patience", type=int, default=TRAIN_PATIENCE, show_default=True,
              help="epochs without improvement before stopping")
@click.option("--no-augment", is_flag=True, help="no random 90° rotations and flips")
@click.option("--noise", type=float, default=0.0, show_default=True, help="SD of Gaussian noise added to patches")
@click.option("--contrast", type=float, default=0.0, show_default=True, help="contrast jitter: scale by 1 ± this")
@click.option("--device", help="torch device (default: cuda when present, else cpu)")
@click.option("--resume", is_flag=True, help="continue from OUTPUT.ckpt, the checkpoint written each epoch")
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option("--validation", type=click.Path(path_type=Path),
              help="dataset folder of held-out labelled micrographs for the F2 threshold "
                   "(default: the --dataset's valid split)")
@user_errors
def train(patches, output, arch, init_model, epochs, optimizer, lr, batch_size, patience, no_augment, noise,
          contrast, device, resume, quiet, validation, **options):
    """Train a particle classifier on a patch set, or on micrographs with their particle coordinates.

    The validation micrographs of a --dataset are never trained on: the model's patch accuracy on them
    is reported, and the score threshold that maximises F2 on them is stored in the model file, so
    'deeppick pick' needs no threshold (--validation DIR names other held-out micrographs). The peak
    window and the large-region cleaning that give the best AP there are stored too. With --init the
    network starts from another model's weights (e.g. the shipped general model) and is fine-tuned.
    """
    from .model import save_model
    from .patches import load_patch_set
    from .train import TrainConfig, evaluate_patches, train_model

    check_output_file(output, "model")
    init = None
    if init_model is not None:
        from .pretrain import load_general_model

        init = load_general_model(None if init_model == "general" else init_model)
    ds = None
    if patches is not None:
        from .errors import ConfigError

        if options["dataset"] is not None or options["micrographs"] is not None:
            raise ConfigError("give either --patches or --dataset / --micrographs, not both")
        if options["highpass"]:
            raise ConfigError(f"--highpass applies where patches are cut, and {patches} was cut already (its "
                              f"preparation is stored in it): give it to 'deeppick extract', or train from "
                              f"--dataset / --micrographs")
        ps = load_patch_set(patches)
    else:
        ps, ds = _labelled_patches(progress=not quiet, preprocess=init.preprocess if init else None, **options)
    start = f", fine-tuning {init.info.get('name') or init_model}" if init is not None else ""
    click.echo(f"training on {ps.summary()}{start}")
    config = TrainConfig(arch=arch, optimizer=optimizer, learning_rate=lr, batch_size=batch_size, epochs=epochs,
                         patience=patience, rotate_flip=not no_augment, noise_sd=noise, contrast_jitter=contrast,
                         seed=options["seed"], device=device)
    checkpoint = output.with_name(output.name + ".ckpt")
    model = train_model(ps, config, box_px=options["box_px"], progress=not quiet,
                        checkpoint=checkpoint, resume=resume, init=init)
    from .pipeline import adopt_label_edge_margin

    model = adopt_label_edge_margin(model, ps)
    line = (f"held-out patch accuracy {model.info['val_accuracy']:.3f} (epoch {model.info['best_epoch']} of "
            f"{model.info['epochs_run']})" if model.info["val_accuracy"] is not None else "no held-out patches")
    if ds is not None and ds.paths("valid"):
        from .patches import PatchConfig, extract_dataset_patches

        valid = extract_dataset_patches(ds, "valid", model.box_px, PatchConfig(off_centre_ratio=0.0), model.preprocess,
                                        seed=options["seed"])  # particle vs background: what accuracy measures
        model.info["valid_split"] = evaluate_patches(model, valid)
        line += f"; accuracy on the {len(valid)} patches of the valid micrographs {model.info['valid_split']['accuracy']:.3f}"
    held_out = None
    if validation is not None:
        from .datasets import load_dataset

        vds = load_dataset(validation)
        held_out = (vds.paths(), vds.picks)
    elif ds is not None and ds.paths("valid") and options["split"] != "valid":
        held_out = (ds.paths("valid"), ds.picks)
    if held_out is not None:
        from .pipeline import choose_postprocess, postprocess_summary

        try:
            model = choose_postprocess(model, *held_out)
            line += (f"; F2-optimal threshold {model.threshold:.3f} on {len(held_out[0])} held-out micrograph(s) "
                     f"(F2 {model.info['threshold']['fbeta']:.3f}, {postprocess_summary(model)})")
        except DeepPickError as exc:  # the model is still worth saving; say why it has no threshold
            line += f"; threshold not chosen: {exc}"
    else:
        line += "; no held-out micrographs, so pick will cut at 0.5 (choose one with 'deeppick threshold')"
    save_model(model, output)
    click.echo(f"wrote {output}: {line}")


@cli.command()
@click.option("--dataset", required=True, type=click.Path(path_type=Path),
              help="dataset folder with train and valid splits (dataset.json, micrographs/, coords/)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="model file to write (.pt)")
@click.option("--epochs", type=int, default=TRAIN_EPOCHS, show_default=True,
              help="most epochs per model trained (early stopping may end sooner)")
@click.option("--max-micrographs", type=int, help="train on at most the first N train micrographs")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_highpass_option
@user_errors
def fit(dataset, output, epochs, max_micrographs, seed, quiet, highpass):
    """Train on a labelled dataset and tune it on the held-out micrographs (what the benchmarks run).

    Trains models with and without off-centre views, then per box (1.0× and 1.3× the particle diameter)
    and low-pass, keeps the one with the best AP on the valid split (or held-out train micrographs),
    decides whether the large-region cleaning helps and how wide the peak window is (narrower where
    particles crowd), and stores the F2-optimal threshold: 'deeppick pick' then needs only the model.
    """
    from .datasets import load_dataset
    from .model import save_model
    from .pipeline import fit_dataset, recipe_summary
    from .train import TrainConfig

    check_output_file(output, "model")
    model = fit_dataset(load_dataset(dataset), train_config=TrainConfig(epochs=epochs, seed=seed),
                        max_micrographs=max_micrographs, progress=not quiet, preprocess=_preprocess(highpass))
    save_model(model, output)
    info = model.info
    click.echo(f"wrote {output}: {recipe_summary(model)}; held-out AP {info['threshold']['ap']:.3f}, "
               f"F2 {info['threshold']['fbeta']:.3f} at threshold {model.threshold:.3f}")


# --- pick / evaluate ----------------------------------------------------------------------------------


def _pick_config(model, step_px, no_rotations, threshold, keep_all, top, sd_range=None, edge_margin=None,
                 peak_window=None):
    """PickConfig from CLI options on top of the post-processing stored in ``model``."""
    from dataclasses import replace

    from .pipeline import PickConfig, postprocess_config
    from .scan import ScanConfig

    post = postprocess_config(model)
    post = replace(post, top_n=post.top_n if top is None else top, sd_range=tuple(sd_range) if sd_range else post.sd_range,
                   edge_margin_box=post.edge_margin_box if edge_margin is None else edge_margin,
                   peak_window_box=post.peak_window_box if peak_window is None else peak_window)
    return PickConfig(scan=ScanConfig(step_px=step_px, rotations=not no_rotations), post=post,
                      threshold=threshold, keep_all=keep_all)




@cli.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="model file (.pt)")
@click.option("--micrographs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="a folder of micrographs, or files (repeat the option)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="folder for one coordinate file per micrograph")
@click.option("--format", "fmt", default="star", show_default=True,
              type=click.Choice(PICK_FORMATS), help="coordinate format")
@click.option("--threshold", type=float, help="score cut (default: the model's F2-optimal threshold)")
@click.option("--keep-all", is_flag=True, help="also write sub-threshold candidates, to re-threshold later")
@click.option("--top", type=int, help="keep at most N picks per micrograph")
@click.option("--step-px", type=float, default=4.0, show_default=True, help="scan step, micrograph px")
@click.option("--no-rotations", is_flag=True, help="score only the 0° patch (4× faster, less robust)")
@click.option("--sd-range", nargs=2, type=float, help="keep patches whose SD is in [LO, HI] × micrograph SD")
@click.option("--edge-margin", type=click.FloatRange(min=0),
              help="drop picks centred nearer the edge than this × box (default: the model's, learned from its "
                   "training labels, else 0.5: the box inside the micrograph; 0 keeps all)")
@click.option("--peak-window", type=click.FloatRange(min=0, min_open=True),
              help="one pick per window of this × box, picks ≥ half of it apart (default: the model's, chosen "
                   "by 'fit' on held-out micrographs, else 0.8; lower it for crowded particles)")
@click.option("--overwrite", is_flag=True,
              help="re-pick micrographs that already have an output file (needed when another model or other "
                   "settings wrote them)")
@user_errors
def pick(model_path, micrographs, output, fmt, threshold, keep_all, top, step_px, no_rotations, sd_range,
         edge_margin, peak_window, overwrite):
    """Pick particles in micrographs with a trained model.

    Writes OUTPUT/<micrograph>.star (RELION: rlnCoordinateX/Y, rlnAutopickFigureOfMerit) by default,
    and OUTPUT/coordinate_files.star, the list of them that RELION's Particle extraction takes as its input
    coordinates (run pick from the RELION project folder so the micrograph names match). A rerun skips
    micrographs already picked; unreadable micrographs are listed at the end (exit 2).
    Files another model or other settings wrote in OUTPUT are not mixed with these: the run stops with
    one line unless --overwrite.
    """
    from .io import list_micrographs
    from .model import default_device, load_model
    from .pipeline import effective_threshold, pick_micrographs

    model = load_model(model_path, device=default_device())
    config = _pick_config(model, step_px, no_rotations, threshold, keep_all, top, sd_range, edge_margin, peak_window)
    paths = list_micrographs(micrographs)
    result = pick_micrographs(model, paths, output, fmt, config, overwrite=overwrite, progress=len(paths) > 1)
    click.echo(result.summary(output, effective_threshold(model, config), keep_all))
    _report_failures(result.failed)


@cli.command()
@click.option("--picks", "picks_path", required=True, type=click.Path(path_type=Path),
              help="picked coordinates: a folder, a file, or a RELION list of coordinate files "
                   "(an AutoPick job's autopick.star)")
@click.option("--picks-format", "picks_fmt", type=click.Choice(PICK_FORMATS),
              help="read only this format's files (default: from the suffix; needed where a folder holds several)")
@click.option("--references", type=click.Path(path_type=Path), help="reference coordinates: folder or file")
@click.option("--dataset", type=click.Path(path_type=Path), help="a dataset folder holding the references")
@click.option("--split", default=None, help="with --dataset: evaluate only this split (e.g. test)")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="take the box size and threshold from this model")
@click.option("--box-px", type=float, help="box side, micrograph px (default: model's, else dataset diameter)")
@click.option("--threshold", type=float, help="score cut for precision/recall (default: model's, else all picks)")
@click.option("--match-px", type=float, help="match distance in px (default: 0.2 × box, DeepPicker §4.4)")
@click.option("--beta", type=float, default=2.0, show_default=True, help="F-beta for the optimal threshold")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="folder for the plots and JSON")
@user_errors
def evaluate(picks_path, picks_fmt, references, dataset, split, model_path, box_px, threshold, match_px, beta,
             output):
    """Compare picks with reference coordinates: precision, recall, F1, F2, AP, centre error, plots."""
    from .errors import ConfigError
    from .io import read_picks
    from .metrics import evaluate_picks

    if (references is None) == (dataset is None):
        raise ConfigError("give the references with exactly one of --references DIR or --dataset DIR")
    micrographs = None
    if dataset is not None:
        from .datasets import load_dataset

        ds = load_dataset(dataset)
        refs = ds.picks
        micrographs = ds.stems(split)
        box_px = box_px or (ds.diameter_px if model_path is None else None)
    else:
        refs = read_picks(references)
    if model_path is not None:
        from .model import load_model

        model = load_model(model_path)
        box_px = box_px or model.box_px
        if threshold is None:
            threshold = model.threshold
    if not box_px:
        raise ConfigError("the box size is unknown: give --box-px, --model or a dataset with diameter_px")
    picks = read_picks(picks_path, picks_fmt)
    ev = evaluate_picks(picks, refs, box_px, match_px=match_px, threshold=threshold, beta=beta,
                        micrographs=micrographs)
    cut = "all picks" if ev.threshold is None else f"threshold {ev.threshold:.3g}"
    click.echo(f"{ev.n_micrographs} micrographs, {ev.n_refs} references, {ev.n_picks} picks at {cut}, "
               f"match ≤ {ev.max_dist_px:.1f} px")
    click.echo(f"precision {ev.precision:.3f}  recall {ev.recall:.3f}  F1 {ev.f1:.3f}  F2 {ev.f2:.3f}  "
               f"AP {ev.ap:.3f}")
    click.echo(f"F{beta:g}-optimal threshold {ev.best_threshold:.3g} (F{beta:g} {ev.best_fbeta:.3f}); "
               f"centre error {ev.centre_error_box:.3f} box")
    if output is not None:
        from .report import write_report

        written = write_report(ev, output)
        click.echo("wrote " + ", ".join(str(p) for p in written))


@cli.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="model file to update")
@click.option("--dataset", type=click.Path(path_type=Path), help="dataset folder whose split is used")
@click.option("--split", default="valid", show_default=True, help="with --dataset: the held-out split")
@click.option("--validation", type=click.Path(path_type=Path),
              help="a dataset folder of held-out labelled micrographs (all of them are used)")
@click.option("--beta", type=float, default=2.0, show_default=True, help="F-beta to maximise")
@click.option("--threshold-only", is_flag=True,
              help="keep the model's cleaning and peak window; choose only the threshold")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="write here instead of updating --model")
@user_errors
def threshold(model_path, dataset, split, validation, beta, threshold_only, output):
    """Choose the F-beta-optimal score threshold on held-out labelled micrographs; store it in the model.

    Unless --threshold-only is given, the region cleaning (on/off) and the peak window (0.8, 0.6, 0.4 box)
    are chosen on the same micrographs first, by AP, as 'train' and 'fit' do.
    """
    from .datasets import load_dataset
    from .errors import ConfigError
    from .model import load_model, save_model
    from .pipeline import choose_postprocess, postprocess_summary, select_threshold

    if (dataset is None) == (validation is None):
        raise ConfigError("give exactly one of --dataset DIR (with --split) or --validation DIR")
    ds = load_dataset(dataset or validation)
    paths = ds.paths(split) if dataset is not None else ds.paths()
    choose = select_threshold if threshold_only else choose_postprocess
    model = choose(load_model(model_path), paths, ds.picks, beta=beta)
    save_model(model, output or model_path)
    info, post = model.info["threshold"], postprocess_summary(model)
    click.echo(f"threshold {model.threshold:.3g} (F{beta:g} {info['fbeta']:.3f}, AP {info['ap']:.3f} on "
               f"{len(paths)} micrographs; {post}) stored in {output or model_path}")

# --- pretrain / autopick ------------------------------------------------------------------------------


@cli.command()
@click.option("--dataset", "datasets", required=True, multiple=True, type=click.Path(path_type=Path),
              help="a dataset folder of one molecule, real or simulated (repeat: one per molecule)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="general model file to write (.pt)")
@click.option("--positives", type=int, default=10_000, show_default=True,
              help="particles in the mix, shared equally by the molecules (DeepPicker: 10,000)")
@click.option("--max-micrographs", type=int, help="use at most the first N train micrographs of each dataset")
@click.option("--max-valid", type=int, default=2, show_default=True,
              help="held-out micrographs per dataset for the pooled F2 threshold")
@click.option("--epochs", type=int, default=PRETRAIN_EPOCHS, show_default=True,
              help="most epochs (early stopping may end sooner)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_highpass_option
@user_errors
def pretrain(datasets, output, positives, max_micrographs, max_valid, epochs, seed, quiet, highpass):
    """Train a general model on several molecules (balanced mix) for picking new ones without labels."""
    from .model import save_model
    from .pretrain import PRETRAIN_TRAINING, PretrainConfig, pretrain as run_pretrain

    check_output_file(output, "general model")
    config = PretrainConfig(total_positives=positives, max_train_micrographs=max_micrographs,
                            max_valid_micrographs=max_valid, seed=seed)
    model = run_pretrain(list(datasets), config, replace(PRETRAIN_TRAINING, epochs=epochs, seed=seed),
                         progress=not quiet, preprocess=_preprocess(highpass))
    save_model(model, output)
    sources = model.info["pretrain"]["sources"]
    mix = ", ".join(f"{s['dataset']} {s['n_positive']} (box {s['box_px']:g})" for s in sources)
    click.echo(f"wrote {output}: particles per molecule: {mix}; held-out patch accuracy "
               f"{model.info['val_accuracy']:.3f}; pooled F2 threshold {model.threshold:.3g}")


@cli.command()
@click.option("--micrographs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="a folder of micrographs of the new molecule, or files (repeat the option)")
@click.option("--box-px", required=True, type=float,
              help="box side of the new molecule, micrograph px: one that holds its longest view (too small a box "
              "picks beside particles)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="folder for one coordinate file per micrograph and the fine-tuned model")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="general model [default: the one shipped with deeppick]")
@click.option("--iterations", type=int, default=1, show_default=True, help="self-training rounds (0: no fine-tuning)")
@click.option("--top", type=int, help="particles to self-train on: the best N candidates, even below the threshold "
              "[default: half the picks above the threshold, at most 10,000]")
@click.option("--epochs", type=int, default=PRETRAIN_EPOCHS, show_default=True, help="most fine-tuning epochs")
@click.option("--off-centre", "off_centre_ratio", type=click.FloatRange(min=0), default=AUTOPICK_OFF_CENTRE,
              show_default=True,
              help="off-centre views per self-training particle, with a soft target that falls with the distance to "
                   "the nearest top pick (0: DeepPicker's patches)")
@click.option("--format", "fmt", default="star", show_default=True,
              type=click.Choice(PICK_FORMATS), help="coordinate format")
@click.option("--threshold", type=float, help="score cut [default: the general model's, see the docs]")
@click.option("--keep-all", is_flag=True, help="also write sub-threshold candidates, to re-threshold later")
@click.option("--step-px", type=float, default=4.0, show_default=True, help="scan step, micrograph px")
@click.option("--no-rotations", is_flag=True, help="score only the 0° patch (4× faster, less robust)")
@click.option("--edge-margin", type=click.FloatRange(min=0),
              help="drop picks centred nearer the edge than this × box [default: 0.5, the box inside the micrograph]")
@click.option("--peak-window", type=click.FloatRange(min=0, min_open=True),
              help="one pick per window of this × box [default: 0.8, picks ≥ 0.4 box apart; lower it for crowded "
                   "particles]")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--overwrite", is_flag=True,
              help="fine-tune and pick again even where an earlier run left its model and picks in OUTPUT")
@click.option("--quiet", is_flag=True, help="no progress bars")
@user_errors
def autopick(micrographs, box_px, output, model_path, iterations, top, epochs, off_centre_ratio, fmt, threshold,
             keep_all, step_px, no_rotations, edge_margin, peak_window, seed, overwrite, quiet):
    """Pick a new molecule with no labels: general model, self-train on its top picks, pick again.

    Writes OUTPUT/autopick_model.pt once fine-tuned, then OUTPUT/<micrograph>.star as each is picked. No
    coordinate file is read. With fewer than 10 picks above the threshold the general model's picks are
    written (it is then the model saved) and the summary says so. A rerun with the same options reuses
    the fine-tuned model and skips the micrographs already picked (with only another --threshold or
    --keep-all it reuses the model and picks them again); unreadable micrographs are left out and listed
    at the end (exit 2).
    """
    from .model import default_device
    from .pipeline import effective_threshold
    from .pretrain import AUTOPICK_MODEL, PRETRAIN_TRAINING, AutopickConfig, autopick as run_autopick, load_general_model

    check_output_file(output, "picks and the fine-tuned model", folder=True)
    model = load_general_model(model_path, device=default_device())
    pick_config = _pick_config(model, step_px, no_rotations, threshold, keep_all, None, edge_margin=edge_margin,
                               peak_window=peak_window)
    result = run_autopick(model, list(micrographs), box_px, output,
                          AutopickConfig(iterations=iterations, top=top, off_centre_ratio=off_centre_ratio, seed=seed),
                          replace(PRETRAIN_TRAINING, epochs=epochs, seed=seed), pick_config, fmt=fmt,
                          progress=not quiet, resume=not overwrite)
    if result.skipped is not None:
        trained = f"not self-trained: {result.skipped}"
    elif result.resumed:
        trained = f"reused the fine-tuned model in {output / AUTOPICK_MODEL}"
    else:
        trained = f"self-trained on the top {', '.join(str(n) for n in result.n_top) or 'no'} picks"
    click.echo(f"{trained}; " + result.batch.summary(output, effective_threshold(result.model, pick_config), keep_all))
    _report_failures(result.batch.failed)


if __name__ == "__main__":
    main()
