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
