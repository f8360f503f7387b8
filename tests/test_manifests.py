"""Dataset manifests: fetched over a loopback HTTP server, verified, resumable, unsafe paths refused."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.datasets import fetch_dataset, load_dataset, make_manifest
from deeppick.errors import DatasetError
from deeppick.io import make_picks, write_micrograph, write_picks


@pytest.fixture
def served(tmp_path):
    """A small dataset folder served on 127.0.0.1; yields (folder, base_url, request log)."""
    root = tmp_path / "served"
    (root / "micrographs").mkdir(parents=True)
    write_micrograph(root / "micrographs" / "m1.mrc", np.random.default_rng(0).normal(size=(32, 32)))
    write_picks(make_picks("m1", [10, 20], [12, 22]), root / "coords" / "m1.star")
    (root / "dataset.json").write_text(json.dumps({"diameter_px": 8, "micrographs": [{"micrograph": "m1.mrc"}]}))
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_verifies_and_resumes(served, tmp_path):
    root, url, requests = served
    manifest = make_manifest(root, base_url=url)
    assert {f["path"] for f in manifest["files"]} == {"dataset.json", "micrographs/m1.mrc", "coords/m1.star"}
    dest = tmp_path / "copy"
    assert fetch_dataset(manifest, dest) == (3, 0)
    assert len(load_dataset(dest).picks) == 2
    # A rerun finds everything present and verified and asks the server for nothing.
    n_requests = len(requests)
    assert fetch_dataset(manifest, dest) == (0, 3) and len(requests) == n_requests
    # A damaged local file is fetched again.
    (dest / "coords" / "m1.star").write_text("damaged")
    assert fetch_dataset(manifest, dest) == (1, 2)


def test_hash_mismatch_and_unreachable_server_are_clear_errors(served, tmp_path):
    root, url, _ = served
    manifest = make_manifest(root, base_url=url)
    (root / "coords" / "m1.star").write_text("changed on the mirror")
    with pytest.raises(DatasetError, match=r"m1\.star: SHA-256 does not match"):
        fetch_dataset(manifest, tmp_path / "a")
    with pytest.raises(DatasetError, match="cannot fetch"):
        fetch_dataset(manifest, tmp_path / "b", base_url="http://127.0.0.1:9/none")


def test_unsafe_paths_are_refused(tmp_path):
    manifest = {"format": "deeppick-dataset-manifest", "files": [{"path": "../evil", "sha256": "0", "size": 1}]}
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        fetch_dataset(manifest, tmp_path, base_url="http://127.0.0.1:9")


def test_manifest_and_fetch_commands(served, tmp_path):
    root, url, _ = served
    runner = CliRunner()
    result = runner.invoke(cli, ["manifest", str(root), "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["fetch", str(tmp_path / "m.json"), "-o", str(tmp_path / "d"), "--base-url", url])
    assert result.exit_code == 0 and "fetched 3 files" in result.output
    result = runner.invoke(cli, ["fetch", str(tmp_path / "m.json"), "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "pass --base-url" in result.stderr
