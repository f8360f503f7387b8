"""What the real-data benchmarks share: where the packs are, which they are, the issues' figures for them.

Imported by the scripts beside it (each puts this folder on ``sys.path``, so they run from anywhere).
``DEEPPICK_REALDATA`` overrides the location, as for the test suite.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REALDATA = Path(os.environ.get("DEEPPICK_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
PACKS = ("ribosome80s-10028", "betagal-10017", "cryoppp-10059")
MATCH_FRACTION_OF_DIAMETER = 0.25  # issues 5 and 6 evaluate at 0.25 × diameter_px
# issue 5: semi-automated test AP targets; issues 5 and 6: Topaz's pretrained general model on the test splits
SEMI_AUTOMATED_TARGET_AP = {"ribosome80s-10028": 0.85, "betagal-10017": 0.85, "cryoppp-10059": 0.70}
TOPAZ_GENERAL_AP = {"ribosome80s-10028": 0.74, "betagal-10017": 0.41, "cryoppp-10059": 0.46}


def require_realdata(realdata: Path = REALDATA) -> None:
    """Stop with one line when the real packs are not there."""
    if not (realdata / "README.md").is_file():
        raise SystemExit(f"{realdata}: no real packs here; this benchmark needs ../shared/realdata "
                         "(or DEEPPICK_REALDATA=DIR)")


def add_highpass_option(parser: argparse.ArgumentParser) -> None:
    """``--highpass SIGMA``: background subtraction before normalising (off by default, as in the package)."""
    parser.add_argument("--highpass", type=float, default=0.0, metavar="SIGMA",
                        help="background subtraction, σ in model px (64 = one box; "
                             "PreprocessConfig.highpass_sigma_model_px) [default: 0, off]")
