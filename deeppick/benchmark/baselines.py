"""Label-free pickers to compare with: a dark-disc filter, and RELION's Laplacian-of-Gaussian picker.

The disc filter knows only the diameter: each micrograph (normalised to zero mean, unit SD) is averaged
over a disc of radius ``diameter/3``, minus a Gaussian background (σ = one diameter); candidates are
the deepest minima, one per peak window, away from the edge as ``pick`` leaves it, ranked by depth. No
network, no labels: what a model must beat before its picks say more than "a dark blob of this size".
RELION's LoG picker (``relion_autopick --LoG``) runs where RELION is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import concat_picks, make_picks, micrograph_stem, read_micrograph
from ..postprocess import PostprocessConfig, disc_depth, edge_mask, find_peaks, sort_picks

LOG_DIAMETERS = (0.8, 1.2)  # RELION's LoG searches between these × the diameter


def disc_filter_picks(path, diameter_px: float, box_px: float,
                      post: PostprocessConfig = PostprocessConfig()) -> pd.DataFrame:
    """Every disc-filter candidate of one micrograph, deepest first (picks table, score = depth in SD)."""
    image = read_micrograph(path).astype(np.float64)
    depth = disc_depth(image, diameter_px)
    rows, cols, values = find_peaks(depth, post.peak_window_box * box_px, min_score=-np.inf)
    keep = edge_mask(image.shape, cols, rows, post.edge_margin_box * box_px)
    return sort_picks(make_picks(micrograph_stem(path), cols[keep], rows[keep], values[keep]))


def relion_log_picks(paths, diameter_px: float) -> pd.DataFrame | None:
    """RELION's Laplacian-of-Gaussian picks of ``paths`` (None where RELION is not installed)."""
    if shutil.which("relion_autopick") is None:
        return None
    from ..io import read_picks, write_micrograph

    paths = [Path(p) for p in paths]
    work = Path(tempfile.mkdtemp(prefix="deeppick-log-"))
    try:
        (work / "Micrographs").mkdir()
        for path in paths:
            write_micrograph(work / "Micrographs" / f"{path.stem}.mrc", read_micrograph(path), pixel_size_a=1.0)
        lines = ["", "data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
                 "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
                 "_rlnAmplitudeContrast #6", "opticsGroup1 1 1.0 300 2.7 0.1", "", "data_micrographs", "", "loop_",
                 "_rlnMicrographName #1", "_rlnOpticsGroup #2", *(f"Micrographs/{p.stem}.mrc 1" for p in paths), ""]
        (work / "micrographs.star").write_text("\n".join(lines))
        low, high = (f * diameter_px for f in LOG_DIAMETERS)
        subprocess.run(["relion_autopick", "--i", "micrographs.star", "--odir", "LoG/", "--pickname", "autopick",
                        "--LoG", "--LoG_diam_min", f"{low:.0f}", "--LoG_diam_max", f"{high:.0f}",
                        "--LoG_adjust_threshold", "-1", "--angpix", "1"],
                       cwd=work, check=True, capture_output=True, timeout=3600)
        tables = []
        for path in paths:
            found = list((work / "LoG").rglob(f"{path.stem}_autopick.star"))
            if found:
                tables.append(read_picks(found[0]).assign(micrograph=micrograph_stem(path)))
        return concat_picks(tables)
    finally:
        shutil.rmtree(work, ignore_errors=True)
