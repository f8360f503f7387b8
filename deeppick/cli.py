"""The ``deeppick`` command line: thin commands over library functions (:mod:`deeppick.commands`).

Every command turns a :class:`~deeppick.errors.DeepPickError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import click

from ._version import __version__
from .commands import COMMANDS
from .commands._shared import PICK_FORMATS, user_errors  # noqa: F401  (the examples and tests use them)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deeppick")
def cli():
    """deeppick: find protein particles in cryo-EM micrographs with a small CNN."""


for command in COMMANDS:
    cli.add_command(command)


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="deeppick")


if __name__ == "__main__":
    main()
