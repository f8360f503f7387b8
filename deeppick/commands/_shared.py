"""What the commands share: one-line user errors, output checks, options read from the library's configs."""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import sys
from pathlib import Path

import click

from ..errors import ConfigError, DeepPickError

EXIT_USER_ERROR = 2
# Free space an output needs before a command starts work: models and picks are small, and an hour of
# training should not end on a full disk.
MIN_FREE_BYTES = 64 * 2**20
# The coordinate formats the readers and writers know (io.PICK_FORMATS; a test holds the two equal),
# written out so the command line starts without importing pandas.
PICK_FORMATS = ("star", "box", "coord", "csv", "cbox")
READ_FORMATS = (*PICK_FORMATS, "cs")  # io.READ_FORMATS: cryoSPARC's particle files are read, not written


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


def load_model_file(path: Path, device=None):
    """A model file for a command: loaded (one line if it cannot be), with a note on stderr when another
    deeppick version wrote it."""
    from .._version import __version__
    from ..model import load_model

    model = load_model(path, device=device or "cpu")
    if model.written_by is not None and model.written_by != __version__:
        click.echo(f"deeppick: note: {path} was written by deeppick {model.written_by} (this is {__version__}); "
                   "it picks as it was trained to", err=True)
    return model


def library_value(where: str):
    """The value ``where`` names, ``"module:Name.attribute"`` in deeppick (``"train:TrainConfig.epochs"``);
    a class is instantiated with its defaults first."""
    module, _, name = where.partition(":")
    value = importlib.import_module(f"deeppick.{module}")
    for part in name.split("."):
        value = getattr(value, part)
        if isinstance(value, type):
            value = value()
    return value


class LibraryDefault(click.Option):
    """An option whose default is a library config's field: unset, the option is None and the config's own
    default applies; ``--help`` reads that default from the library, so it is never a copy. The library is
    imported only for ``--help``, so the command line starts without importing torch."""

    def __init__(self, *args, library: str, **kwargs):
        self.library = library
        super().__init__(*args, default=None, **kwargs)

    def get_help_record(self, ctx):
        opts, text = super().get_help_record(ctx)
        value = library_value(self.library)
        shown = "none" if value is None else ", ".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" \
            if isinstance(value, float) else str(value)
        return opts, f"{text}  [default: {shown}]"


def given(**options) -> dict:
    """The options the user gave (None means: the library's default)."""
    return {name: value for name, value in options.items() if value is not None}


def check_output_file(path: Path, what: str, folder: bool = False) -> None:
    """Fail at once, not after training, when ``path`` (a file to write, or with ``folder`` a folder to
    write into) cannot be written."""
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
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"{path}: only {free / 2**20:.0f} MB free in {existing}; free some space or choose "
                          f"another path for the {what} (at least {MIN_FREE_BYTES // 2**20} MB)")


def report_failures(failed: list[tuple[str, str]], verb: str = "picked") -> None:
    """After a batch: list the micrographs that failed, each with its one-line reason, and exit 2."""
    if failed:
        click.echo(f"deeppick: error: {len(failed)} micrograph(s) could not be {verb}:", err=True)
        for _, reason in failed:
            click.echo(f"  {reason}", err=True)
        sys.exit(EXIT_USER_ERROR)


def options(*decorators):
    """Apply several click decorators in the order they are written."""
    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func
    return apply


def highpass_option(func):
    """``--highpass SIGMA``: background subtraction when micrographs are prepared (PreprocessConfig)."""
    return click.option("--highpass", type=float, cls=LibraryDefault,
                        library="preprocess:PreprocessConfig.highpass_sigma_model_px",
                        help="subtract the background before normalising: a Gaussian-weighted local plane of σ "
                             "model px (64 = one box; at least 16), for micrographs with a strong gradient of ice "
                             "thickness; the model keeps it for picking (0: off; docs/measurements.md, "
                             "Background subtraction)")(func)


def preprocess_config(highpass: float | None):
    from ..preprocess import PreprocessConfig

    return PreprocessConfig(**given(highpass_sigma_model_px=highpass))


def scan_options(func):
    """The scan options of ``pick`` and ``autopick`` (ScanConfig)."""
    return options(
        click.option("--step-px", type=float, cls=LibraryDefault, library="scan:ScanConfig.step_px",
                     help="scan step, micrograph px; the scanner rounds it to whole model px within ±25 % (the "
                          "summary prints the step used)"),
        click.option("--no-rotations", is_flag=True, help="score only the 0° patch (4× faster, less robust)"),
    )(func)


def pick_config(model, *, step_px=None, no_rotations=False, threshold=None, keep_all=False, top=None, sd_range=None,
                edge_margin=None, peak_window=None):
    """The PickConfig of the command-line options, on top of the post-processing stored in ``model``."""
    from dataclasses import replace

    from ..pipeline import PickConfig, postprocess_config
    from ..scan import ScanConfig

    post = postprocess_config(model)
    post = replace(post, **given(top_n=top, sd_range=tuple(sd_range) if sd_range else None,
                                 edge_margin_box=edge_margin, peak_window_box=peak_window))
    scan = ScanConfig(**given(step_px=step_px), rotations=not no_rotations)
    return PickConfig(scan=scan, post=post, threshold=threshold, keep_all=keep_all)


def workers_options(func):
    """``--workers`` and ``--dask-scheduler``: where micrographs are picked (:mod:`deeppick.workers`)."""
    return options(
        click.option("--workers", type=click.IntRange(min=1),
                     help="micrographs picked at once, each process with its share of the cores [default: "
                          "workers.default_workers(), what is fastest here]"),
        click.option("--dask-scheduler", help="pick on a running Dask cluster, tcp://HOST:PORT (pip install "
                                              "'deeppick[dask]'); files are written here"),
    )(func)


def resolve_workers(workers: int | None) -> int:
    if workers is not None:
        return workers
    from ..workers import default_workers

    return default_workers()
