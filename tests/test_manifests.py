"""Data manifests: fetched with pooch over a loopback HTTP server (never the internet): a good file, a
corrupted one, an interrupted transfer, a 404, no server; the manifests that ship with the package."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.datasets import load_dataset
from deeppick.manifests import fetch_dataset, known_manifests, load_manifest, make_manifest
from deeppick.errors import DatasetError
from deeppick.io import make_picks, write_micrograph, write_picks


@pytest.fixture
def served(tmp_path):
    """A small dataset folder served on 127.0.0.1; yields (folder, base_url, request log, cut switch)."""
    root = tmp_path / "served"
    (root / "micrographs").mkdir(parents=True)
    write_micrograph(root / "micrographs" / "m1.mrc", np.random.default_rng(0).normal(size=(32, 32)))
    write_picks(make_picks("m1", [10, 20], [12, 22]), root / "coords" / "m1.star")
    (root / "dataset.json").write_text(json.dumps({"diameter_px": 8, "micrographs": [{"micrograph": "m1.mrc"}]}))
    requests = []
    cut = {"times": 0}  # how many more requests of a file under cut/ end halfway

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

        def do_GET(self):
            if self.path.startswith("/cut/") and cut["times"] > 0:
                cut["times"] -= 1
                data = (root / self.path[len("/cut/"):]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if self.path.startswith("/cut/"):
                self.path = self.path[len("/cut"):]
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", requests, cut
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_verifies_and_resumes(served, tmp_path):
    root, url, requests, _ = served
    manifest = make_manifest(root, base_url=url)
    assert {f["path"] for f in manifest["files"]} == {"dataset.json", "micrographs/m1.mrc", "coords/m1.star"}
    dest = tmp_path / "copy"
    result = fetch_dataset(manifest, dest)
    assert len(result.fetched) == 3 and not result.present and not result.unverified
    assert len(load_dataset(dest).picks) == 2
    assert (dest / "coords" / "m1.star").read_bytes() == (root / "coords" / "m1.star").read_bytes()
    # A rerun finds everything present and verified and asks the server for nothing.
    n_requests = len(requests)
    result = fetch_dataset(manifest, dest)
    assert (len(result.fetched), len(result.present)) == (0, 3) and len(requests) == n_requests
    # A damaged local file is fetched again.
    (dest / "coords" / "m1.star").write_text("damaged")
    result = fetch_dataset(manifest, dest)
    assert result.fetched == ["coords/m1.star"] and len(result.present) == 2


def test_a_corrupted_file_on_the_server_is_refused_and_not_kept(served, tmp_path):
    root, url, _, _ = served
    manifest = make_manifest(root, base_url=url)
    (root / "coords" / "m1.star").write_text("changed on the mirror")
    with pytest.raises(DatasetError, match=r"m1\.star: SHA-256 does not match"):
        fetch_dataset(manifest, tmp_path / "a")
    assert not (tmp_path / "a" / "coords" / "m1.star").exists()
    assert not list((tmp_path / "a" / "coords").iterdir())  # no partial file left behind


def test_an_interrupted_transfer_is_retried_or_reported_and_leaves_no_partial_file(served, tmp_path):
    root, url, requests, cut = served
    manifest = make_manifest(root, base_url=url + "/cut")
    cut["times"] = 1  # cut once: the retry completes it
    result = fetch_dataset(manifest, tmp_path / "a")
    assert len(result.fetched) == 3 and len(load_dataset(tmp_path / "a").picks) == 2
    cut["times"] = 100  # cut every time: the fetch stops with one line, keeps nothing half-written
    with pytest.raises(DatasetError, match="cut off before the end; files already fetched are kept"):
        fetch_dataset(manifest, tmp_path / "b")
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]
    cut["times"] = 0  # the rerun resumes
    assert len(fetch_dataset(manifest, tmp_path / "b").fetched) == 3


def test_missing_file_and_no_server_are_one_line_each(served, tmp_path):
    root, url, _, _ = served
    manifest = make_manifest(root, base_url=url)
    manifest["files"].append({"path": "coords/m2.star", "sha256": "0" * 64, "size": 1})
    with pytest.raises(DatasetError, match=r"m2\.star: the server answered HTTP 404"):
        fetch_dataset(manifest, tmp_path / "a")
    with pytest.raises(DatasetError, match="cannot reach the server"):
        fetch_dataset(manifest, tmp_path / "b", base_url="http://127.0.0.1:9/none")


def test_unsafe_paths_are_refused(tmp_path):
    manifest = {"format": "deeppick-dataset-manifest", "files": [{"path": "../evil", "sha256": "0", "size": 1}]}
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        fetch_dataset(manifest, tmp_path, base_url="http://127.0.0.1:9")


def test_the_shipped_manifests_say_where_the_data_is_and_where_their_facts_come_from():
    names = known_manifests()
    assert {"klh-dataset-1", "empiar-10017", "empiar-10028", "empiar-10059", "empiar-10005", "empiar-10089",
            "empiar-10093", "empiar-10050", "empiar-10063", "empiar-10072", "betagal-10017"} <= set(names)
    for name in names:
        manifest = load_manifest(name)
        assert manifest["name"] == name and manifest["published"]["page"].startswith("https://")
        assert manifest["sources"], name
        for entry in manifest["files"]:
            assert entry.get("url") or "sha256" in entry, (name, entry)
    assert load_manifest("klh-dataset-1")["pixel_size_a"] == 2.2


def test_manifest_and_fetch_commands(served, tmp_path):
    root, url, _, _ = served
    runner = CliRunner()
    result = runner.invoke(cli, ["manifest", str(root), "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["fetch", str(tmp_path / "m.json"), "-o", str(tmp_path / "d"), "--base-url", url,
                                 "--quiet"])
    assert result.exit_code == 0 and "fetched 3 files" in result.output
    result = runner.invoke(cli, ["fetch", str(tmp_path / "m.json"), "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "pass --base-url" in result.stderr
    result = runner.invoke(cli, ["fetch", "--list"])
    assert result.exit_code == 0 and "klh-dataset-1" in result.output
    result = runner.invoke(cli, ["fetch", "empiar-10093", "-o", str(tmp_path / "f")])
    assert result.exit_code == 2 and "lists no files" in result.stderr and "ftp.ebi.ac.uk" in result.stderr
    result = runner.invoke(cli, ["fetch", "no-such-data", "-o", str(tmp_path / "g")])
    assert result.exit_code == 2 and "not one of the manifests" in result.stderr
