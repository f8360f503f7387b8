"""``convert``, ``info``, ``manifest``, ``fetch``: coordinate files, micrographs and dataset folders."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError
from ._shared import PICK_FORMATS, report_failures, user_errors


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(PICK_FORMATS), help="output format")
@click.option("--from", "from_fmt", type=click.Choice(PICK_FORMATS),
              help="input format (default: from each file's suffix)")
@click.option("--box-px", type=float, help="box side in micrograph px (needed to write box/cbox corners)")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="multiply coordinates by this factor (e.g. 0.25 for micrographs binned 4×)")
@click.option("--micrographs", type=click.Path(path_type=Path),
              help="the micrographs (a folder or file): also count picks beyond their far edges")
@user_errors
def convert(source, dest, fmt, from_fmt, box_px, scale, micrographs):
    """Convert coordinates SOURCE (file or folder) to DEST in another format.

    DEST is one file when it ends in the format's suffix (star and coord hold several micrographs, the
    others one); otherwise it is a folder with one file per micrograph. Picks outside their micrograph
    are converted as they are and counted.
    """
    from ..io import convert_picks, list_micrographs, micrograph_shape, micrograph_stem, picks_off_the_image

    written, picks = convert_picks(source, dest, fmt, from_fmt=from_fmt, box_px=box_px, scale=scale)
    click.echo(f"converted {len(picks)} picks from {picks['micrograph'].nunique()} micrographs "
               f"into {len(written)} {fmt} file(s) at {dest}")
    shapes = None
    if micrographs is not None:
        shapes = {micrograph_stem(p): micrograph_shape(p) for p in list_micrographs(micrographs)}
    off = picks_off_the_image(picks, shapes)
    if off:
        where = "outside their micrograph" if shapes else "at negative coordinates, outside any micrograph"
        click.echo(f"note: {off} pick(s) lie {where}; they are converted as they are", err=True)


@click.command()
@click.argument("micrographs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--box-px", type=float, help="also check every micrograph is larger than this box")
@user_errors
def info(micrographs, box_px):
    """Read MICROGRAPHS (files or folders) and print size, pixel size and contrast of each.

    Goes on past unreadable micrographs, lists them at the end and then exits 2.
    """
    from ..errors import MicrographError
    from ..io import check_micrograph, list_micrographs, micrograph_pixel_size, read_micrograph

    failed = []
    for path in list_micrographs(micrographs):
        try:
            image = check_micrograph(read_micrograph(path), path, None if box_px is None else int(box_px))
            pixel = micrograph_pixel_size(path)
        except MicrographError as exc:
            failed.append((str(path), str(exc)))
            continue
        pixel_text = f"{pixel:.3f} Å/px" if pixel else "no pixel size"
        click.echo(f"{path}\t{image.shape[1]}x{image.shape[0]} px\t{pixel_text}\t"
                   f"mean {image.mean():.4g}\tSD {image.std():.4g}")
    report_failures(failed, "used")


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="manifest file (.json)")
@click.option("--base-url", help="where a mirror serves this folder")
@user_errors
def manifest(dataset, output, base_url):
    """Write a manifest (files, sizes, SHA-256) of a dataset folder, to publish it or check a copy."""
    from ..io import atomic_write_text
    from ..manifests import make_manifest

    data = make_manifest(dataset, base_url)
    atomic_write_text(output, json.dumps(data, indent=1) + "\n")
    click.echo(f"wrote {output}: {len(data['files'])} files of {dataset}")


@click.command()
@click.argument("source", metavar="NAME|MANIFEST", required=False)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="dataset folder to fill")
@click.option("--base-url", help="mirror serving the files (overrides the manifest's)")
@click.option("--list", "list_known", is_flag=True, help="list the manifests that ship with deeppick and stop")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def fetch(source, output, base_url, list_known, quiet):
    """Download a data set: a manifest that ships with deeppick by NAME (--list), or a MANIFEST file.

    Every file with a published SHA-256 is checked; files already complete are kept, so a rerun resumes.
    """
    from ..manifests import fetch_dataset, known_manifests, load_manifest

    if list_known:
        for name in known_manifests():
            data = load_manifest(name)
            click.echo(f"{name}\t{data.get('title', '')}\t{len(data.get('files', []))} files")
        return
    if source is None or output is None:
        raise ConfigError("give what to fetch and where: deeppick fetch NAME|MANIFEST -o DIR (--list: the names)")
    result = fetch_dataset(source, output, base_url=base_url, progress=not quiet)
    click.echo(result.summary(output))
