"""RELION itself reads deeppick's picks: ``relion_preprocess`` (RELION 3.1, Debian's ``relion``) extracts
exactly the picked particles from a small project. Skipped, saying so, where RELION is not installed;
``.ci/run`` installs it."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import starfile
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.io import read_picks, write_micrograph
from deeppick.simulate import SimConfig, simulate_micrograph

from .conftest import SIM_DIAMETER_PX

MICROGRAPHS = "MotionCorr/job002/Micrographs"  # as RELION's jobs name them: the job folder is not in 3.1's path


def _relion_project(root):
    """Three simulated micrographs and RELION 3.1's micrograph STAR (optics table included)."""
    names = []
    for i in range(3):
        sim = simulate_micrograph(SimConfig(molecule="globular", size_px=320, diameter_px=SIM_DIAMETER_PX,
                                            n_particles=10, snr=1.0, contaminants=()), 20 + i)
        name = f"{MICROGRAPHS}/mic{i}.mrc"
        write_micrograph(root / name, sim.image, pixel_size_a=2.0)
        names.append(name)
    lines = ["", "# version 30001", "", "data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
             "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
             "_rlnAmplitudeContrast #6", "opticsGroup1 1 2.0 300 2.7 0.1", "", "# version 30001", "",
             "data_micrographs", "", "loop_", "_rlnMicrographName #1", "_rlnOpticsGroup #2",
             *(f"{name} 1" for name in names), ""]
    (root / "micrographs.star").write_text("\n".join(lines))
    return names


def test_relion_extracts_exactly_the_picks(trained, tmp_path, monkeypatch):
    if shutil.which("relion_preprocess") is None:
        pytest.skip("needs RELION's relion_preprocess (Debian package 'relion'; .ci/run installs it)")
    monkeypatch.chdir(tmp_path)
    names = _relion_project(tmp_path)
    result = CliRunner().invoke(cli, ["pick", "--model", str(trained), "--micrographs", MICROGRAPHS,
                                      "-o", "External/job010", "--quiet"])
    assert result.exit_code == 0, result.output
    picks = read_picks("External/job010")
    assert len(picks) >= 15  # the test means something: particles on every micrograph
    # RELION 3.1 looks for External/job010/Micrographs/<stem>.star; an even box inside every pick's margin
    args = ["relion_preprocess", "--i", "micrographs.star", "--coord_dir", "External/job010/", "--coord_suffix",
            ".star", "--extract", "--extract_size", "36", "--part_star", "particles.star", "--part_dir", "Extract/"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "does not exist" not in run.stdout, run.stdout
    particles = starfile.read(tmp_path / "particles.star", always_dict=True)["particles"]
    assert len(particles) == len(picks)
    for name in names:
        stem = name.rsplit("/", 1)[1][:-4]
        ours = picks[picks["micrograph"] == stem][["x", "y"]].to_numpy()
        theirs = particles[particles["rlnMicrographName"] == name][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        assert len(ours) == len(theirs) > 0
        np.testing.assert_allclose(np.sort(ours, axis=0), np.sort(theirs, axis=0), atol=0.01)
