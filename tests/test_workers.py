"""Many micrographs at once (deeppick.workers and batch): worker processes give the local picks, a batch
goes on past a corrupt micrograph, an interrupted batch resumes to the same bytes, two batches share one
folder, a Dask cluster that loses a worker still picks everything, and micrographs are picked as they
appear during collection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from deeppick.batch import pick_micrographs, watch_and_pick
from deeppick.io import (COMBINED_PICKS, COORDINATE_LIST, is_combined_picks, read_coordinate_list, read_picks,
                         write_micrograph)
from deeppick.model import load_model
from deeppick.simulate import SimConfig, simulate_micrograph
from deeppick.workers import pick_many

from .conftest import SIM_DIAMETER_PX


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """16 small simulated micrographs."""
    folder = tmp_path_factory.mktemp("many")
    config = SimConfig(molecule="globular", size_px=192, diameter_px=SIM_DIAMETER_PX, n_particles=4, snr=1.0,
                       contaminants=())
    for i in range(16):
        write_micrograph(folder / f"m{i:02d}.mrc", simulate_micrograph(config, 100 + i).image)
    return folder


def _star_bytes(folder: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(folder.glob("m*.star"))}


def test_worker_processes_pick_what_this_process_picks(trained, many):
    model = load_model(trained)
    paths = sorted(many.iterdir())[:6]
    here = {o.path.name: o.picks for o in pick_many(model, paths, workers=1)}
    there = {o.path.name: o.picks for o in pick_many(model, paths, workers=2)}
    assert sorted(there) == sorted(here) and sum(len(p) for p in here.values()) > 0
    for name, picks in here.items():
        np.testing.assert_allclose(there[name][["x", "y", "score"]].to_numpy(), picks[["x", "y", "score"]].to_numpy(),
                                   atol=1e-5)


def test_fifty_micrographs_one_corrupt_with_two_workers(trained, many, tmp_path):
    folder = tmp_path / "mics"
    folder.mkdir()
    sources = sorted(many.iterdir())
    for i in range(50):
        (folder / f"m{i:02d}.mrc").symlink_to(sources[i % len(sources)])
    (folder / "m17.mrc").unlink()
    (folder / "m17.mrc").write_bytes(b"\0" * 512)
    run = subprocess.run([sys.executable, "-m", "deeppick.cli", "pick", "--model", str(trained), "--micrographs",
                          str(folder), "-o", str(tmp_path / "out"), "--workers", "2", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, run.stderr
    assert len(list((tmp_path / "out").glob("m*.star"))) == 49 and not (tmp_path / "out" / "m17.star").exists()
    assert "1 micrograph(s) could not be picked" in run.stderr and "m17.mrc" in run.stderr
    assert "Traceback" not in run.stderr and "picked" in run.stdout and "1 failed" in run.stdout
    listed = read_coordinate_list(tmp_path / "out" / COORDINATE_LIST)
    assert len(listed) == 49 and is_combined_picks(tmp_path / "out" / COMBINED_PICKS)
    assert len(read_picks(tmp_path / "out" / COMBINED_PICKS)) == len(read_picks(tmp_path / "out"))


def test_killed_mid_batch_then_rerun_gives_the_same_bytes(trained, many, tmp_path):
    args = [sys.executable, "-m", "deeppick.cli", "pick", "--model", str(trained), "--micrographs", str(many),
            "--workers", "2", "--quiet", "-o"]
    subprocess.run([*args, str(tmp_path / "whole")], check=True, capture_output=True, timeout=600)
    process = subprocess.Popen([*args, str(tmp_path / "cut")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "cut").glob("m*.star"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the batch and its workers, mid-batch
    process.wait()
    written = list((tmp_path / "cut").glob("m*.star"))
    assert 3 <= len(written) < 16  # interrupted, not finished
    for file in written:  # no truncated file under a final name
        assert file.read_bytes() == (tmp_path / "whole" / file.name).read_bytes()
    subprocess.run([*args, str(tmp_path / "cut")], check=True, capture_output=True, timeout=600)
    assert _star_bytes(tmp_path / "cut") == _star_bytes(tmp_path / "whole")
    names = {Path(m).name for m in read_coordinate_list(tmp_path / "cut" / COORDINATE_LIST)}
    assert names == {p.name for p in many.iterdir()}


def test_two_batches_into_one_folder_at_once_list_both(trained, many, tmp_path):
    paths = sorted(many.iterdir())
    procs = [subprocess.Popen([sys.executable, "-m", "deeppick.cli", "pick", "--model", str(trained), "--quiet",
                               *sum((["--micrographs", str(p)] for p in part), []), "-o", str(tmp_path / "out")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for part in (paths[:8], paths[8:])]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
    listed = {Path(m).name for m in read_coordinate_list(tmp_path / "out" / COORDINATE_LIST)}
    assert listed == {p.name for p in paths}
    combined = read_picks(tmp_path / "out" / COMBINED_PICKS)
    assert {Path(str(m)).stem for m in combined["micrograph"]} == {p.stem for p in paths}
    assert len(combined) == len(read_picks(tmp_path / "out"))


def test_a_dask_cluster_that_loses_a_worker_picks_everything(trained, many, tmp_path):
    distributed = pytest.importorskip("dask.distributed", reason="needs Dask's distributed scheduler: pip install "
                                                                 "'deeppick[dask]' (the test extra installs it)")
    model = load_model(trained)
    paths = sorted(many.iterdir())
    pick_micrographs(model, paths, tmp_path / "local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        outcome = {}
        batch = threading.Thread(target=lambda: outcome.update(result=pick_micrographs(
            model, paths, tmp_path / "dask", scheduler=client)))
        batch.start()
        deadline = time.monotonic() + 300
        while not list((tmp_path / "dask").glob("m*.star")) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = client.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)  # one worker dies mid-batch; its nanny restarts it
        batch.join(timeout=600)
        assert not batch.is_alive()
    result = outcome["result"]
    assert sorted(result.counts) == [p.stem for p in paths] and result.failed == []
    assert _star_bytes(tmp_path / "dask") == _star_bytes(tmp_path / "local")


def test_micrographs_are_picked_as_they_appear(trained, many, tmp_path):
    model = load_model(trained)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    sources = sorted(many.iterdir())[:4]

    def collect():  # a detector writing micrographs one after another, each in two halves
        for source in sources:
            data = source.read_bytes()
            target = incoming / source.name
            with open(target, "wb") as handle:
                handle.write(data[:len(data) // 2])
                handle.flush()
                time.sleep(0.6)
                handle.write(data[len(data) // 2:])
            time.sleep(0.3)

    writer = threading.Thread(target=collect)
    writer.start()
    result = watch_and_pick(model, incoming, tmp_path / "out", timeout_s=2.0, poll_s=0.25)
    writer.join()
    assert sorted(result.counts) == [p.stem for p in sources] and result.failed == []
    assert _star_bytes(tmp_path / "out") == {f"{p.stem}.star": b for p, b in zip(
        sources, [pick_micrographs_bytes(model, p, tmp_path / "ref") for p in sources])}
    assert len(read_coordinate_list(tmp_path / "out" / COORDINATE_LIST)) == 4


def pick_micrographs_bytes(model, path: Path, folder: Path) -> bytes:
    pick_micrographs(model, [path], folder)
    return (folder / f"{path.stem}.star").read_bytes()
