"""Benchmarks as library functions: DeepEM's KLH protocol, an SNR sweep, the real packs, speed.

Each benchmark returns its figures as a JSON-ready dict and :func:`write_figures` writes them as
``OUT/<name>.json`` beside the printed table, with where and when they were measured, so runs compare.
``deeppick benchmark klh|snr|realdata|speed`` and the scripts in ``benchmarks/`` call these functions:
one implementation of each protocol.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

from ..errors import DatasetError

# the real annotated packs (../shared/realdata) and the figures the issues quote for them
PACKS = ("ribosome80s-10028", "betagal-10017", "cryoppp-10059")
MATCH_FRACTION_OF_DIAMETER = 0.25  # the packs are evaluated at 0.25 × the particle diameter
SEMI_AUTOMATED_TARGET_AP = {"ribosome80s-10028": 0.85, "betagal-10017": 0.85, "cryoppp-10059": 0.70}
TOPAZ_GENERAL_AP = {"ribosome80s-10028": 0.74, "betagal-10017": 0.41, "cryoppp-10059": 0.46}
RELION_LOG_AP = {"ribosome80s-10028": 0.815, "betagal-10017": 0.552, "cryoppp-10059": 0.204}


def default_realdata() -> Path:
    """Where the real packs are: ``DEEPPICK_REALDATA``, else ``../shared/realdata`` beside a checkout."""
    if os.environ.get("DEEPPICK_REALDATA"):
        return Path(os.environ["DEEPPICK_REALDATA"])
    return Path(__file__).resolve().parents[3] / "shared" / "realdata"


def require_realdata(root: str | os.PathLike) -> Path:
    """``root`` if it holds the real packs, else one clear error."""
    root = Path(root)
    if not (root / "README.md").is_file() or not any((root / pack / "dataset.json").is_file() for pack in PACKS):
        raise DatasetError(f"{root}: the real annotated packs are not here ({', '.join(PACKS)}); give --root DIR "
                           "(or DEEPPICK_REALDATA=DIR)")
    return root


def add_general_recipe_arguments(parser):
    """Add the options of a :class:`~deeppick.pretrain.GeneralRecipe` to an argparse ``parser`` (the shipped
    model's script and the leave-one-out benchmark share them); returns a function giving the recipe's
    changes from the parsed arguments (options not given keep the recipe's defaults)."""
    group = parser.add_argument_group("general model recipe (deeppick.pretrain.GeneralRecipe)")
    add = group.add_argument
    options = [
        add("--positives", type=int, help="particles in the pretraining mix [10,000, DeepPicker's]"),
        add("--arch", choices=["deeppicker", "deepem", "wide"], help="the network [deeppicker]"),
        add("--source-heads", action="store_true", default=None,
            help="HydraPicker: a head per source while training (TrainConfig.source_heads)"),
        add("--epochs", type=int, help="most pretraining epochs [PRETRAIN_TRAINING's]"),
        add("--max-train", type=int, help="train micrographs per source [all; each source's quota spreads over them]"),
        add("--max-valid", type=int, help="threshold micrographs per source [1]"),
        add("--no-zoo", dest="zoo", action="store_false", default=None, help="pretrain on the real packs only"),
        add("--zoo-micrographs", type=int,
            help="micrographs per simulated molecule [enough for each molecule's quota]"),
        add("--zoo-density", type=float, help="area fraction the zoo's particles cover [simulate.ZOO_DENSITY]"),
        add("--procedural", type=int, help="procedural molecules added to the zoo (simulate.procedural_zoo) [0]"),
        add("--zoo-ice-gradient", type=float,
            help="the zoo's uneven ice: a ramp of up to this many noise SDs [simulate.ZOO_ICE_GRADIENT]"),
        add("--zoo-detector-blur", dest="zoo_detector_blur_px", type=float,
            help="the zoo's detector blur, σ px [simulate.ZOO_DETECTOR_BLUR_PX]"),
        add("--zoo-defocus-spread", dest="zoo_defocus_spread_um", type=float,
            help="the zoo's per-particle defocus: the ice's thickness, µm [simulate.ZOO_DEFOCUS_SPREAD_UM]"),
        add("--box-factors", nargs="+", type=float,
            help="pretraining boxes × each source's diameter [PretrainConfig's]"),
        add("--junk-share", type=float, help="background centred on marked contaminants [PretrainConfig's]"),
        add("--empty-share", type=float,
            help="background from particle-free simulated micrographs [PretrainConfig's]"),
        add("--highpass", type=float, metavar="SIGMA", help="background subtraction, σ in model px [0, off]"),
        add("--seed", type=int, help="seed of the zoo's procedural molecules, pretraining and what follows [0]"),
        add("--zoo-seed", type=int, help="seed of the zoo's and the particle-free micrographs' simulation [0]"),
    ]

    def changes(args) -> dict:
        given = {o.dest: getattr(args, o.dest) for o in options if getattr(args, o.dest) is not None}
        if "box_factors" in given:
            given["box_factors"] = tuple(given["box_factors"])
        return given

    return changes


def measured_on() -> dict:
    """Where and when figures were measured: enough to tell two runs' machines apart."""
    import torch

    from .._version import __version__

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "deeppick": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_figures(out: str | os.PathLike, name: str, figures: dict) -> Path:
    """Write ``figures`` (with :func:`measured_on`) atomically as ``out/<name>.json``; returns the path."""
    from ..io import atomic_write_text

    path = Path(out) / f"{name}.json"
    data = _json_ready({"benchmark": name, **figures, "measured_on": measured_on()})
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
    return path


def _json_ready(value):
    """Figures as JSON has them: numpy scalars as numbers, NaN and infinity as null, paths as text."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
