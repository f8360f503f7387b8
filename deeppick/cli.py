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

# --- extract / train ----------------------------------------------------------------------------------

# --- pick / evaluate ----------------------------------------------------------------------------------

# --- pretrain / autopick ------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
