"""Data manifests: what a public data set is, where it is published, and its files with their SHA-256.

A manifest is a JSON file (``"format": "deeppick-dataset-manifest"``)::

    {"format": ..., "name": "klh-dataset-1", "title": ..., "published": {...}, "pixel_size_a": 2.2, ...,
     "sources": [where each fact comes from], "files": [{"path": REL, "url": URL, "sha256": HEX, "size": N}]}

Every field but ``format``, ``name`` and ``files`` describes the data for people (pixel size, particle
diameter, suggested box, where the reference coordinates come from, the split) and is present only where
it is known: nothing is guessed. A file is fetched from its ``url``, or from ``base_url/<path>`` (the
manifest's, or ``--base-url``'s for a mirror); it is checked against its SHA-256 where one is known.

The manifests of the data sets of the seed papers and of the project's real packs ship with the package
(``deeppick/data_manifests``) and are fetched by name: ``deeppick fetch klh-dataset-1 -o DIR``.
Downloads go through pooch (checksums, retries, a progress bar); each file is written atomically, so an
interrupted fetch keeps what was complete and a rerun fetches the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DatasetError

MANIFEST_FORMAT = "deeppick-dataset-manifest"
MANIFEST_FOLDER = Path(__file__).parent / "data_manifests"
RETRIES = 2  # a dropped connection is tried again this many times before the fetch stops


@dataclass
class FetchResult:
    """What a fetch did: files downloaded, found complete already, and downloaded without a known hash."""

    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # no SHA-256 in the manifest: not checked

    def summary(self, dest) -> str:
        text = f"{dest}: fetched {len(self.fetched)} files, {len(self.present)} already present and verified"
        if self.unverified:
            text += (f"; {len(self.unverified)} without a published SHA-256 (not checked: "
                     f"{', '.join(self.unverified[:3])}{' …' if len(self.unverified) > 3 else ''})")
        return text


def known_manifests() -> list[str]:
    """Names of the manifests that ship with the package."""
    return sorted(p.stem for p in MANIFEST_FOLDER.glob("*.json"))


def load_manifest(name_or_path: str | os.PathLike | dict) -> dict:
    """A manifest from a dict, a JSON file, or the name of one that ships with the package.

    Raises
    ------
    DatasetError
        For an unknown name, an unreadable file, or JSON that is not a deeppick manifest.
    """
    if isinstance(name_or_path, dict):
        manifest, where = name_or_path, "the manifest"
    else:
        path = Path(name_or_path)
        if not path.is_file() and (MANIFEST_FOLDER / f"{path.name}.json").is_file() and path.name == str(name_or_path):
            path = MANIFEST_FOLDER / f"{path.name}.json"
        if not path.is_file():
            raise DatasetError(f"{name_or_path}: no such manifest file, and not one of the manifests that ship with "
                               f"deeppick ({', '.join(known_manifests())})")
        where = str(path)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read the manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("files", []), list):
        raise DatasetError(f"{where}: not a deeppick dataset manifest (its 'format' must be '{MANIFEST_FORMAT}')")
    return manifest


def make_manifest(path: str | os.PathLike, base_url: str | None = None) -> dict:
    """Describe a dataset folder: every file under it with its size and SHA-256.

    ``base_url`` (optional) is where a mirror serves the folder; each file is then fetched from
    ``base_url/<relative path>``.
    """
    from .datasets import load_dataset

    root = Path(path)
    load_dataset(root)  # only complete, loadable datasets get a manifest
    files = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        files.append({"path": file.relative_to(root).as_posix(), "size": file.stat().st_size,
                      "sha256": _sha256(file)})
    manifest = {"format": MANIFEST_FORMAT, "name": root.name, "files": files}
    if base_url:
        manifest["base_url"] = base_url.rstrip("/")
    return manifest


def fetch_dataset(manifest: str | os.PathLike | dict, dest: str | os.PathLike, *, base_url: str | None = None,
                  progress: bool = False, timeout_s: float = 60.0) -> FetchResult:
    """Download the files a manifest lists into ``dest``, checking each against its SHA-256.

    Files already there with the right hash are kept, so an interrupted fetch resumes; each file is
    written atomically. ``base_url`` overrides the manifest's.

    Raises
    ------
    DatasetError
        For a bad manifest, an unsafe path, a file that cannot be fetched (with why: offline, not on the
        server, interrupted) or whose hash does not match.
    """
    import pooch

    manifest = load_manifest(manifest)
    entries = manifest.get("files") or []
    if not entries:
        where = manifest.get("published", {}).get("download") or manifest.get("published", {}).get("page")
        raise DatasetError(f"the manifest '{manifest.get('name')}' lists no files (their names and hashes are not "
                           f"known here){f'; download them from {where}' if where else ''}, then record them with "
                           "'deeppick manifest DIR'")
    base = (base_url or manifest.get("base_url") or "").rstrip("/")
    dest = Path(dest)
    pooch.get_logger().setLevel("WARNING")  # its per-file lines would drown the summary
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout_s)
    result = FetchResult()
    for entry in entries:
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DatasetError(f"manifest path '{entry['path']}' leaves the dataset folder; the manifest is unsafe")
        known = entry.get("sha256")
        target = dest / rel
        # a file under its final name is complete (downloads are atomic); with a hash it must match too
        if target.is_file() and (not known or _sha256(target) == known):
            result.present.append(rel.as_posix())
            continue
        url = entry.get("url") or (f"{base}/{rel.as_posix()}" if base else None)
        if url is None:
            raise DatasetError(f"{rel}: the manifest gives no URL for it; pass --base-url of a mirror")
        target.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(RETRIES + 1):
            try:
                pooch.retrieve(url, known_hash=f"sha256:{known}" if known else None, fname=rel.name,
                               path=target.parent, downloader=downloader, progressbar=progress)
                break
            except Exception as exc:  # noqa: BLE001 - requests' and pooch's errors become one line each
                if attempt == RETRIES or not _transient(exc):
                    raise DatasetError(_fetch_error(url, exc)) from None
        _follow_umask(target)
        (result.fetched if known else result.unverified).append(rel.as_posix())
    return result


def _transient(exc: Exception) -> bool:
    """A cut-off transfer or a timeout may go through when tried again; a refusal, a 404 or a wrong hash not."""
    import requests

    return isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout))


def _fetch_error(url: str, exc: Exception) -> str:
    """One line for why ``url`` could not be fetched, and what to do."""
    import requests

    keep = "files already fetched are kept: rerun to go on"
    if isinstance(exc, ValueError) and "hash" in str(exc).lower():
        return f"{url}: SHA-256 does not match the manifest; the server's copy differs from the published data"
    if isinstance(exc, requests.exceptions.HTTPError):
        status = exc.response.status_code if exc.response is not None else "error"
        return f"{url}: the server answered HTTP {status}; check the URL or --base-url ({keep})"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return f"{url}: the transfer was cut off before the end; {keep}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"{url}: cannot reach the server (offline, or the host is down); {keep}"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"{url}: the server did not answer in time; {keep}"
    return f"{url}: cannot fetch ({exc}); {keep}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _follow_umask(path: Path) -> None:
    """pooch's temporary files are private; the fetched file gets the mode any new file gets."""
    from .io import _umask

    os.chmod(path, 0o666 & ~_umask())
