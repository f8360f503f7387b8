"""Where labelled particles come from, for ``extract`` and ``train``: a dataset folder, or micrographs
with coordinate files."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from ._shared import READ_FORMATS, LibraryDefault, given, highpass_option, options, preprocess_config

patch_source_options = options(
    click.option("--dataset", type=click.Path(path_type=Path),
                 help="dataset folder (dataset.json, micrographs/, coords/)"),
    click.option("--split", default="train", show_default=True, help="which split of --dataset to use"),
    click.option("--micrographs", type=click.Path(path_type=Path), help="micrograph file or folder (with --coords)"),
    click.option("--coords", type=click.Path(path_type=Path),
                 help="particle centres (with --micrographs): a file, a folder, a RELION list of coordinate files "
                      "(a ManualPick job's manualpick.star), RELION's particles STAR or cryoSPARC's .cs file"),
    click.option("--classes", help="with --coords from a 2-D classification (RELION's particles STAR, cryoSPARC's "
                                   ".cs): use only the particles of these classes, e.g. 1,4,7"),
    click.option("--coords-format", type=click.Choice(READ_FORMATS),
                 help="format of the --coords and --negatives files (default: from each file's suffix; "
                      "needed for a folder holding two formats)"),
    click.option("--box-px", type=float,
                 help="box side in micrograph px (default for --dataset: its particle diameter)"),
    click.option("--box-a", type=float,
                 help="box side in Å instead of --box-px, by the pixel size the MRC headers store"),
    click.option("--negatives", type=click.Path(path_type=Path),
                 help="coordinates of explicit background (ice, carbon, bad particles): file or folder, or a 2-D "
                      "classification's particles with --negative-classes"),
    click.option("--negative-classes", help="with --negatives: use the particles of these (junk) classes"),
    click.option("--negative-ratio", type=float, cls=LibraryDefault, library="patches:PatchConfig.negative_ratio",
                 help="random background patches per particle (≥ 0.6 box from every particle)"),
    click.option("--near-negatives", "near_negative_ratio", type=float, cls=LibraryDefault,
                 library="patches:PatchConfig.near_negative_ratio",
                 help="background patches per particle beside a particle (0.3–0.6 box from it)"),
    click.option("--off-centre", "off_centre_ratio", type=click.FloatRange(min=0), cls=LibraryDefault,
                 library="patches:PatchConfig.off_centre_ratio",
                 help="off-centre views per particle, within 0.5 box of it, with a soft target that falls "
                      "with the distance to the nearest particle (sharper peaks; 0: none)"),
    click.option("--max-per-micrograph", type=int, help="use at most this many particles per micrograph"),
    click.option("--max-micrographs", type=int, help="use at most the first N micrographs"),
    click.option("--seed", type=int, cls=LibraryDefault, library="train:TrainConfig.seed", help="random seed"),
    highpass_option,
)


def labelled_patches(*, dataset, split, micrographs, coords, coords_format, classes, box_px, box_a, negatives,
                     negative_classes, negative_ratio, near_negative_ratio, off_centre_ratio, max_per_micrograph,
                     max_micrographs, seed, highpass, progress=True, preprocess=None):
    """The patch set the shared options name, and the dataset it came from (or None). How the coordinate
    files' particles were used (per reason left out) is printed on stderr.

    ``preprocess``: prepare the micrographs so (an initial model's) instead of the defaults with ``highpass``.
    """
    from ..io import box_px_from_angstrom, list_micrographs
    from ..patches import PatchConfig, extract_dataset_patches, extract_patches

    if preprocess is None:
        preprocess = preprocess_config(highpass)
    elif highpass is not None and highpass != preprocess.highpass_sigma_model_px:
        raise ConfigError(f"--highpass {highpass:g} differs from the initial model's "
                          f"{preprocess.highpass_sigma_model_px:g}: a fine-tuned model keeps its initial "
                          "model's preparation; leave --highpass out")
    config = PatchConfig(**given(negative_ratio=negative_ratio, near_negative_ratio=near_negative_ratio,
                                 off_centre_ratio=off_centre_ratio, max_positives_per_micrograph=max_per_micrograph))
    seed = 0 if seed is None else seed
    if box_a is not None and box_px is not None:
        raise ConfigError("give the box as --box-px or --box-a, not both")
    if dataset is not None:
        if micrographs is not None or coords is not None:
            raise ConfigError("give either --dataset or --micrographs with --coords, not both")
        from ..datasets import load_dataset

        if classes is not None:
            raise ConfigError("--classes chooses among the particles of --coords; a dataset folder's coords/ are "
                              "its labels: leave --classes out, or give --micrographs with --coords")
        ds = load_dataset(dataset)
        neg = _labels(negatives, coords_format, negative_classes, ds.paths(split), "--negatives")
        if box_a is not None:
            box_px = box_px_from_angstrom(box_a, ds.paths(split))
        ps = extract_dataset_patches(ds, split, box_px=box_px, config=config, preprocess=preprocess, negatives=neg,
                                     seed=seed, max_micrographs=max_micrographs, progress=progress)
        return ps, ds
    if micrographs is None or coords is None or not (box_px or box_a):
        raise ConfigError("say where the labelled particles are: --dataset DIR, or --micrographs DIR "
                          "--coords FILE|DIR --box-px N (or --box-a Å)")
    paths = list_micrographs(micrographs)[:max_micrographs]
    if box_a is not None:
        box_px = box_px_from_angstrom(box_a, paths)
    picks = _labels(coords, coords_format, classes, paths, "--coords")
    neg = _labels(negatives, coords_format, negative_classes, paths, "--negatives")
    ps = extract_patches(paths, picks, box_px, config=config, preprocess=preprocess, negatives=neg, seed=seed,
                         progress=progress)
    return ps, None


def _labels(source, fmt, classes, micrographs, option):
    """The particles of a coordinate source on the given micrographs, their use said on stderr."""
    from ..io import labels_on, parse_classes, read_picks

    if source is None:
        if classes is not None:
            raise ConfigError(f"{option}-classes / --classes needs the file to choose from: give {option}")
        return None
    picks, use = labels_on(read_picks(source, fmt, classes=parse_classes(classes)), micrographs, source=source)
    use.classes = parse_classes(classes)
    click.echo(f"{option}: {use.summary()}", err=True)
    return picks
