"""Reading and writing micrographs and particle coordinates.

Frames and conventions used everywhere in deeppick:

* A micrograph is a 2-D float32 array indexed ``image[y, x]``; row 0 is the first row stored in the file
  (no flip for MRC, as RELION does).
* A pick is a particle **centre** in micrograph pixels: ``x`` = column, ``y`` = row, origin at the centre
  of pixel (0, 0). Corner-based formats (EMAN ``.box``, crYOLO ``.cbox``) are converted at the boundary.
* One picks table is shared by the whole package: a :class:`pandas.DataFrame` with the columns
  ``micrograph`` (name stem), ``x``, ``y`` (float, centre, micrograph px) and ``score`` (float, NaN where
  the source has none). :func:`make_picks` builds one, :func:`read_picks` / :func:`write_picks` convert.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from .errors import CoordinateError, MicrographError

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".map", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
PICK_COLUMNS = ["micrograph", "x", "y", "score"]
PICK_FORMATS = ("star", "box", "coord", "csv", "cbox")  # written and read
READ_FORMATS = (*PICK_FORMATS, "cs")  # cryoSPARC's particle files are read, not written
FORMAT_SUFFIX = {"star": ".star", "box": ".box", "coord": ".txt", "csv": ".csv", "cbox": ".cbox"}
# What a STAR file of picks cut at a threshold says in its header (picks_cut_at reads it back).
CUT_NOTE = "picks scoring at least {threshold:.6g}, the threshold; pick with --keep-all for every candidate"
# ... and a STAR file of every candidate, with where to cut them to extract particles
KEEP_ALL_NOTE = ("every candidate (--keep-all), not cut at the model's threshold {threshold:.4g}: cut at "
                 "rlnAutopickFigureOfMerit >= {threshold:.4g} before extracting, e.g. with RELION 4's extraction "
                 "option --minimum_pick_fom {threshold:.4g} (RELION 3.1 extracts every line)")
# One STAR file of every pick in a picks folder, beside its per-micrograph files (read as a folder, they
# are read, not it).
COMBINED_PICKS = "picked_particles.star"
COMBINED_MARK = "# every pick of this folder, one file"
# RELION's list of coordinate files (the input coordinates of its Particle extraction job); ``pick`` writes
# one beside its STAR files.
COORDINATE_LIST = "coordinate_files.star"
# Suffixes that pickers append to a micrograph's stem when naming its coordinate file.
_PICKER_SUFFIXES = ("_autopick", "_manualpick", "_picks", "_pick", "_coords", "_coordinates", "_cryolo")
# MRC modes we read: 0 int8, 1 int16, 2 float32, 6 uint16, 12 float16.
_MRC_MODES = (0, 1, 2, 6, 12)


# --------------------------------------------------------------------------------------------------
# atomic output


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    An interrupted run therefore never leaves a half-written file under the final name. The file gets the
    permissions any new file gets (0666 less the umask), so the members of a shared project can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask (read once: setting it to read it is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.deeppick.lock`` file) for a read-modify-write of a file
    that several processes update, such as cluster jobs picking parts of one dataset into one folder.

    Advisory (``flock``), so only deeppick processes wait for it; where the system or file system offers no
    such lock (Windows, some network file systems) the block runs unlocked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(folder / ".deeppick.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------------------------------
# micrographs


def read_micrograph(path: str | os.PathLike) -> np.ndarray:
    """Read a micrograph as a 2-D float32 array ``image[y, x]``.

    Reads MRC (modes 0, 1, 2, 6, 12; a one-section 3-D file is taken as 2-D), TIFF, PNG and JPEG
    (8- or 16-bit; grey stored as RGB is collapsed to one channel, colour is averaged).

    Raises
    ------
    MicrographError
        If the file is missing, truncated or corrupt, of an unsupported mode, a stack or volume,
        has non-finite pixels or is constant.

    Example
    -------
    >>> image = read_micrograph("micrographs/mic001.mrc")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise MicrographError(f"{path}: no such micrograph file; check the path")
    suffix = path.suffix.lower()
    if suffix in (".mrc", ".mrcs", ".map", ".st"):
        image = _read_mrc(path)
    elif suffix in (".tif", ".tiff"):
        image = _read_tiff(path)
    elif suffix in (".png", ".jpg", ".jpeg"):
        image = _read_pillow(path)
    else:
        raise MicrographError(
            f"{path}: unsupported micrograph format {suffix or '(no suffix)'}; "
            f"use one of {', '.join(MICROGRAPH_SUFFIXES)}"
        )
    return check_micrograph(image, path)


def micrograph_pixel_size(path: str | os.PathLike) -> float | None:
    """Pixel size in Å stored in an MRC header, or None (image formats, or a header with 0)."""
    path = Path(path)
    if path.suffix.lower() not in (".mrc", ".mrcs", ".map"):
        return None
    import mrcfile

    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            size = float(mrc.voxel_size.x)
    except Exception as exc:  # mrcfile raises ValueError/OSError for corrupt headers
        raise MicrographError(f"{path}: cannot read MRC header ({exc}); the file may be corrupt") from None
    return size if size > 0 else None


def box_px_from_angstrom(box_a: float, micrographs: Iterable[str | os.PathLike]) -> float:
    """A box of ``box_a`` Å in pixels of ``micrographs``, by the pixel size their MRC headers store (all the
    same within 1 %).

    Raises
    ------
    ConfigError
        If a micrograph's header stores no pixel size (images, or a header with 0), or they differ.
    """
    from .errors import ConfigError

    if not box_a > 0:
        raise ConfigError(f"--box-a must be a positive size in Å, got {box_a}")
    sizes = {}
    for path in micrographs:
        size = micrograph_pixel_size(path)
        if size is None:
            raise ConfigError(f"{path}: its header stores no pixel size, so a box in Å cannot be turned into "
                              "pixels; give --box-px instead")
        sizes[str(path)] = size
    if not sizes:
        raise ConfigError("no micrographs to read a pixel size from; give --box-px instead")
    low, high = min(sizes.values()), max(sizes.values())
    if high > 1.01 * low:
        raise ConfigError(f"the micrographs' pixel sizes differ ({low:.3f}–{high:.3f} Å/px); give --box-px for "
                          "micrographs of one pixel size")
    return float(box_a / np.median(list(sizes.values())))


def check_micrograph(image: np.ndarray, path: str | os.PathLike = "<array>", box_px: int | None = None) -> np.ndarray:
    """Check a micrograph is usable and return it as float32; name ``path`` in any error."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise MicrographError(f"{path}: expected a 2-D image, got shape {image.shape}")
    image = image.astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise MicrographError(f"{path}: {bad} pixels are NaN or infinite; re-export the micrograph")
    if image.size == 0 or float(image.max()) == float(image.min()):
        raise MicrographError(f"{path}: the image is constant (no contrast); it cannot hold particles")
    if box_px is not None and min(image.shape) < box_px:
        raise MicrographError(
            f"{path}: image {image.shape[1]}x{image.shape[0]} px is smaller than the box of {box_px} px; "
            "check --box-px or the micrograph"
        )
    return image


def _read_mrc(path: Path) -> np.ndarray:
    import mrcfile

    try:
        with mrcfile.open(path, permissive=False) as mrc:
            mode = int(mrc.header.mode)
            if mode not in _MRC_MODES:
                raise MicrographError(
                    f"{path}: MRC mode {mode} is not supported; convert to mode 2 (float32)"
                )
            data = np.array(mrc.data)
    except MicrographError:
        raise
    except Exception as exc:  # truncated or corrupt files raise ValueError / OSError inside mrcfile
        raise MicrographError(f"{path}: cannot read MRC file ({exc}); the file is truncated or corrupt") from None
    if data.ndim == 3:
        if data.shape[0] != 1:
            raise MicrographError(
                f"{path}: MRC holds {data.shape[0]} sections (a stack or volume); "
                "deeppick picks single 2-D micrographs: motion-correct/sum the stack first"
            )
        data = data[0]
    return data


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as exc:
        raise MicrographError(f"{path}: cannot read TIFF file ({exc}); the file is truncated or corrupt") from None
    data = np.squeeze(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = _collapse_channels(data[..., :3])
    elif data.ndim == 3:
        raise MicrographError(
            f"{path}: TIFF holds {data.shape[0]} frames; sum the movie into one micrograph first"
        )
    return data


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                data = np.asarray(im.convert("RGB"))
            else:
                data = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MicrographError(f"{path}: cannot read image ({exc}); the file is truncated or corrupt") from None
    if data.ndim == 3:
        data = _collapse_channels(data)
    return data


def _collapse_channels(rgb: np.ndarray) -> np.ndarray:
    """Grey stored as RGB has equal channels: keep one. True colour is averaged."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    return rgb.astype(np.float32).mean(axis=-1)


def write_micrograph(path: str | os.PathLike, image: np.ndarray, *, pixel_size_a: float | None = None,
                     label: str = "deeppick") -> None:
    """Write ``image`` as an MRC file (mode 2, float32) atomically, with the pixel size if given.

    The header carries ``label`` instead of mrcfile's creation time, so the same image gives the same
    bytes (simulated data sets are reproducible to the byte).
    """
    import mrcfile

    image = np.ascontiguousarray(image, dtype=np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(image)
            if pixel_size_a is not None:
                mrc.voxel_size = float(pixel_size_a)
            mrc.header.label[0] = label.encode("ascii", "replace")[:80]
            mrc.header.nlabl = 1


def list_micrographs(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Micrograph files named by ``source``: a folder (its supported files, sorted), a file or a list."""
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    paths: list[Path] = []
    for item in source:
        item = Path(item)
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in MICROGRAPH_SUFFIXES))
        elif item.is_file():
            paths.append(item)
        else:
            raise MicrographError(f"{item}: no such micrograph file or folder; check the path")
    if not paths:
        raise MicrographError(f"no micrographs ({', '.join(MICROGRAPH_SUFFIXES)}) found in "
                              f"{', '.join(map(str, source))}")
    return paths


# --------------------------------------------------------------------------------------------------
# the picks table


def make_picks(micrograph, x, y, score=None) -> pd.DataFrame:
    """Build a picks table; ``micrograph`` may be one name for all rows. ``score`` defaults to NaN."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if score is None:
        score = np.full(len(x), np.nan)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if isinstance(micrograph, (str, os.PathLike)):
        micrograph = [str(micrograph)] * len(x)
    micrograph = [str(m) for m in micrograph]
    if not (len(micrograph) == len(x) == len(y) == len(score)):
        raise ValueError("micrograph, x, y and score must have the same length")
    return pd.DataFrame({"micrograph": pd.Series(micrograph, dtype=object), "x": x, "y": y, "score": score})


def empty_picks() -> pd.DataFrame:
    return make_picks([], [], [])


def concat_picks(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_picks()
    return pd.concat(tables, ignore_index=True)[PICK_COLUMNS]


def picks_of(picks: pd.DataFrame, micrograph: str) -> pd.DataFrame:
    """Rows of ``picks`` that belong to the micrograph named ``micrograph`` (a stem)."""
    return picks[picks["micrograph"] == micrograph].reset_index(drop=True)


def picks_away_from(picks: pd.DataFrame, reference: pd.DataFrame, radius_px: float) -> pd.DataFrame:
    """The rows of ``picks`` (in their order) with no ``reference`` pick of the same micrograph within
    ``radius_px``: a model's picks that are not already labelled, or not already picked by another model."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(picks), dtype=bool)
    xy = picks[["x", "y"]].to_numpy(dtype=np.float64)
    positions = {stem: rows[["x", "y"]].to_numpy(dtype=np.float64) for stem, rows in reference.groupby("micrograph")}
    for stem, index in picks.groupby("micrograph").indices.items():
        if stem in positions:
            keep[index] = cKDTree(positions[stem]).query(xy[index], k=1)[0] > radius_px
    return picks[keep].reset_index(drop=True)


def coordinate_stem(path: str | os.PathLike) -> str:
    """The micrograph stem a coordinate file names: ``mic_autopick.star`` → ``mic`` (as :func:`micrograph_stem`
    writes it)."""
    stem = micrograph_stem(path)
    for suffix in _PICKER_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def micrograph_stem(name: str | os.PathLike) -> str:
    """Stem of a micrograph name as the picks table names it (folders and suffix dropped).

    A file name that is not UTF-8 (bytes Python keeps as surrogate escapes) has those bytes written as
    ``\\xNN``, so the name is text every table and file format can hold, the same for the micrograph and
    for the coordinate file named after it (:func:`file_stem`).

    Example
    -------
    >>> micrograph_stem("Movies/mic_001.mrc"), micrograph_stem(os.fsdecode(b"mic_\\xff.mrc"))
    ('mic_001', 'mic_\\\\xff')
    """
    return text_name(Path(str(name)).stem)


def file_stem(name: str | os.PathLike) -> str:
    """The stem of a file name with its bytes as they are (a coordinate file written for a micrograph keeps
    the micrograph's own bytes, whatever their encoding)."""
    return Path(str(name)).stem


def text_name(name: str) -> str:
    """``name`` with the bytes of a non-UTF-8 file name (Python's surrogate escapes) written as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_text(name: str) -> bool:
    """Whether ``name`` is text a UTF-8 file can hold (a file name that is not UTF-8 is not)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def detect_format(path: str | os.PathLike) -> str:
    """Coordinate format from a file's suffix."""
    suffix = Path(path).suffix.lower()
    for fmt, fmt_suffix in FORMAT_SUFFIX.items():
        if suffix == fmt_suffix:
            return fmt
    if suffix in (".coord", ".tsv"):
        return "coord"
    if suffix == ".cs":
        return "cs"
    raise CoordinateError(
        f"{path}: cannot tell the coordinate format from suffix '{suffix}'; "
        f"name it .star, .box, .cbox, .csv, .txt (Topaz table) or .cs (cryoSPARC), or pass the format"
    )


def read_picks(path: str | os.PathLike, fmt: str | None = None, *, classes: Iterable[int] | None = None
               ) -> pd.DataFrame:
    """Read a coordinate file, or every coordinate file in a folder, into one picks table.

    Parameters
    ----------
    path
        A file, or a folder whose files with a known coordinate suffix are all read (with ``fmt``: only
        the files of that format). A folder holding one micrograph's coordinates in two formats (say
        ``m1.star`` and ``m1.box``) without ``fmt`` is refused: read together they would count every
        particle twice. A RELION list of coordinate files (:func:`read_coordinate_list`, e.g. an AutoPick
        job's ``autopick.star``) reads the files it lists; in a folder such a list is passed over. A RELION
        particles STAR (``data_particles`` with ``rlnMicrographName``, RELION 3.0 or 3.1+ with
        ``data_optics``) and a cryoSPARC particle file (``.cs``) span many micrographs.
    fmt
        ``star``, ``box``, ``coord`` (Topaz table), ``csv``, ``cbox`` or ``cs`` (cryoSPARC, read only);
        guessed from the suffix if None.
    classes
        Keep only the particles of these 2-D classes (``rlnClassNumber``; cryoSPARC's ``alignments2D/class``):
        "the good classes". The table's ``attrs["left_out_by_class"]`` counts those left out.

    Returns
    -------
    DataFrame with columns ``micrograph, x, y, score`` (centres, micrograph pixels).
    """
    path = Path(path)
    if path.is_dir():
        tables = [read_picks(f, fmt, classes=classes) for f in coordinate_files(path, fmt)]
        picks = concat_picks(tables)
        picks.attrs["left_out_by_class"] = sum(t.attrs.get("left_out_by_class", 0) for t in tables)
        return picks
    if not path.is_file():
        raise CoordinateError(f"{path}: no such coordinate file; check the path")
    fmt = fmt or detect_format(path)
    reader = {"star": _read_star, "box": _no_classes(_read_box), "coord": _no_classes(_read_coord),
              "csv": _no_classes(_read_csv), "cbox": _no_classes(_read_cbox), "cs": _read_cs}.get(fmt)
    if reader is None:
        raise CoordinateError(f"unknown coordinate format '{fmt}'; use one of {', '.join(READ_FORMATS)}")
    if classes is not None and fmt not in ("star", "cs"):
        raise CoordinateError(f"{path}: a {fmt} file has no 2-D classes to choose from; leave out --classes, or "
                              "give RELION's particles STAR or cryoSPARC's .cs file")
    try:
        picks, class_numbers = reader(path)
    except CoordinateError:
        raise
    except Exception as exc:
        raise CoordinateError(f"{path}: cannot read as {fmt} coordinates ({exc}); check the file") from None
    if not np.all(np.isfinite(picks[["x", "y"]].to_numpy())):
        raise CoordinateError(f"{path}: some coordinates are not numbers; check the file")
    left_out = 0
    if classes is not None:
        if class_numbers is None:
            raise CoordinateError(f"{path}: no 2-D class column (rlnClassNumber, alignments2D/class) to choose "
                                  "--classes from; give the file of a 2-D classification job")
        keep = np.isin(np.asarray(class_numbers).astype(int), [int(c) for c in classes])
        left_out = int((~keep).sum())
        picks = picks[keep].reset_index(drop=True)
    picks.attrs["left_out_by_class"] = left_out
    return picks


def _no_classes(reader):
    """A reader of a format without 2-D classes, in the shape of those with them: ``(picks, None)``."""
    return lambda path: (reader(path), None)


def parse_classes(text: str | None) -> list[int] | None:
    """``--classes 1,4,7`` as class numbers (None for None).

    Example
    -------
    >>> parse_classes("1, 4,7")
    [1, 4, 7]
    """
    from .errors import ConfigError

    if text is None:
        return None
    try:
        return [int(c) for c in str(text).split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--classes {text}: give class numbers separated by commas, e.g. 1,4,7") from None


def coordinate_files(folder: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """The coordinate files of a folder that :func:`read_picks` reads, sorted: those with a known suffix
    (with ``fmt``: those of that format), RELION lists of coordinate files left out.

    Raises
    ------
    CoordinateError
        If there are none, or one micrograph has files in two formats (read together they would count every
        particle twice): then ``fmt`` must say which.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in
                   {*FORMAT_SUFFIX.values(), ".coord", ".tsv", ".cs"} and not is_coordinate_list(p)
                   and not is_combined_picks(p))
    if fmt is not None:
        files = [f for f in files if detect_format(f) == fmt]
    if not files:
        which = f"{fmt} coordinate files" if fmt else "coordinate files (.star, .box, .cbox, .csv, .txt)"
        raise CoordinateError(f"{folder}: no {which} in this folder")
    twice = sorted(stem for stem, n in Counter(f.stem for f in files).items() if n > 1)
    if twice:
        raise CoordinateError(f"{folder}: {len(twice)} micrograph(s) have coordinates in several formats here "
                              f"(e.g. {', '.join(f.name for f in files if f.stem == twice[0])}); say which "
                              "format to read (evaluate --picks-format, extract/train --coords-format, convert "
                              "--from) or keep one format per folder")
    return files


def picks_cut_at(path: str | os.PathLike, fmt: str | None = None) -> float | None:
    """The threshold the STAR files of a picks file or folder say their picks were cut at (deeppick's
    headers: :data:`CUT_NOTE`), 0 where they say they hold every candidate (:data:`KEEP_ALL_NOTE`), None
    where they say neither."""
    path = Path(path)
    files = coordinate_files(path, fmt) if path.is_dir() else [path]
    cut_prefix, all_prefix = "# " + CUT_NOTE.split("{")[0], "# " + KEEP_ALL_NOTE.split("{")[0]
    cuts = []
    for file in files:
        if file.suffix.lower() != ".star":
            continue
        with open(file, "rb") as handle:
            for line in handle.read(4096).decode("utf-8", "replace").splitlines():
                if line.startswith(cut_prefix):
                    cuts.append(float(line[len(cut_prefix):].split(",")[0]))
                elif line.startswith(all_prefix):
                    cuts.append(0.0)
    return max(cuts) if cuts else None


def covered_micrographs(path: str | os.PathLike, fmt: str | None = None) -> set[str]:
    """The micrographs a coordinate file, folder or RELION list covers, as the picks table names them, those
    with no pick included: an empty coordinate file says its micrograph was picked and held nothing, which
    the picks table alone cannot say."""
    path = Path(path)
    if path.is_file() and is_coordinate_list(path):
        return {micrograph_stem(m) for m in read_coordinate_list(path)}
    names: set[str] = set()
    for file in coordinate_files(path, fmt) if path.is_dir() else [path]:
        kind = fmt or detect_format(file)
        with open(file, "rb") as handle:
            several = kind in ("coord", "cs") or (kind == "star" and b"rlnMicrographName" in handle.read(1 << 16))
        names |= set(read_picks(file, kind)["micrograph"]) if several else {coordinate_stem(file)}
    return names


def write_picks(picks: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None,
                *, box_px: float | None = None, note: str | None = None, names_as_given: bool = False) -> None:
    """Write a picks table to one file, atomically.

    ``star`` and ``coord`` may hold several micrographs (STAR then gets ``rlnMicrographName``);
    ``box``, ``cbox`` and ``csv`` hold one micrograph. ``box`` and ``cbox`` need ``box_px``. A STAR file
    carries ``note`` as a comment in its header, and with ``names_as_given`` a ``data_particles`` table whose
    ``rlnMicrographName`` is the table's micrograph column as it is (a path, not a stem). Use
    :func:`write_picks_per_micrograph` for one file per micrograph.
    """
    fmt = fmt or detect_format(path)
    if fmt not in PICK_FORMATS:
        raise CoordinateError(f"unknown coordinate format '{fmt}'; use one of {', '.join(PICK_FORMATS)}")
    if fmt in ("box", "cbox") and not box_px:
        raise CoordinateError(f"{path}: the {fmt} format stores box corners: give the box size (--box-px)")
    if fmt in ("box", "cbox", "csv") and picks["micrograph"].nunique() > 1:
        raise CoordinateError(f"{path}: the {fmt} format holds one micrograph; write one file per micrograph")
    if names_as_given and fmt == "star":
        text = _star_text(picks.reset_index(drop=True), box_px, names=True)
    else:
        text = {"star": _star_text, "box": _box_text, "coord": _coord_text, "csv": _csv_text,
                "cbox": _cbox_text}[fmt](picks.reset_index(drop=True), box_px)
    if fmt == "star" and note:
        text = text.replace("# written by deeppick\n", f"# written by deeppick\n{_comment(note)}", 1)
    atomic_write_text(path, text)


def _comment(text: str) -> str:
    """``text`` as STAR comment lines."""
    return "".join(f"# {line}\n" for line in text.splitlines())


def write_picks_per_micrograph(picks: pd.DataFrame, folder: str | os.PathLike, fmt: str = "star",
                               *, box_px: float | None = None, micrographs: Iterable[str] = ()) -> list[Path]:
    """Write one file per micrograph, ``folder/<stem><suffix>``; ``micrographs`` adds empty files."""
    folder = Path(folder)
    names = list(dict.fromkeys([*micrographs, *picks["micrograph"]]))
    written = []
    for name in names:
        out = folder / f"{name}{FORMAT_SUFFIX[fmt]}"
        write_picks(picks_of(picks, name), out, fmt, box_px=box_px)
        written.append(out)
    return written



def convert_picks(source: str | os.PathLike, dest: str | os.PathLike, fmt: str, *, from_fmt: str | None = None,
                  box_px: float | None = None, scale: float = 1.0) -> tuple[list[Path], pd.DataFrame]:
    """Convert the coordinates in ``source`` (a file or folder) to ``fmt`` at ``dest``, multiplied by
    ``scale`` (e.g. 0.25 for micrographs binned 4×; ``box_px`` is scaled alike).

    ``dest`` is one file when it ends in the format's suffix and the format holds several micrographs
    (``star``, ``coord``) or the picks name one micrograph; otherwise a folder with one file per micrograph.
    Returns the files written and the converted picks.
    """
    picks = read_picks(source, from_fmt)
    picks["x"] *= scale
    picks["y"] *= scale
    if box_px is not None:
        box_px *= scale
    dest = Path(dest)
    n_micrographs = picks["micrograph"].nunique()
    if dest.suffix.lower() == FORMAT_SUFFIX[fmt]:
        if fmt not in ("star", "coord") and n_micrographs > 1:
            raise CoordinateError(f"{dest}: the {fmt} format holds one micrograph and these picks name "
                                  f"{n_micrographs}; give a folder (a name without {dest.suffix}) for one file each")
        write_picks(picks, dest, fmt, box_px=box_px)
        return [dest], picks
    return write_picks_per_micrograph(picks, dest, fmt, box_px=box_px), picks


def picks_off_the_image(picks: pd.DataFrame, shapes: dict[str, tuple[int, int]] | None = None) -> int:
    """How many picks lie outside their micrograph: at a negative coordinate, or, for the micrographs
    ``shapes`` gives (stem → rows, columns), beyond the last row or column."""
    off = (picks["x"] < 0) | (picks["y"] < 0)
    if shapes:
        rows = picks["micrograph"].map(lambda m: shapes.get(m, (np.inf, np.inf))[0]).astype(float)
        cols = picks["micrograph"].map(lambda m: shapes.get(m, (np.inf, np.inf))[1]).astype(float)
        off |= (picks["x"] > cols - 1) | (picks["y"] > rows - 1)
    return int(off.sum())


def micrograph_shape(path: str | os.PathLike) -> tuple[int, int]:
    """A micrograph's (rows, columns) from its header where the format has one (MRC, TIFF, PNG, JPEG),
    without reading the pixels."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".mrc", ".mrcs", ".map"):
            import mrcfile

            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                return int(mrc.header.ny), int(mrc.header.nx)
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(path) as image:
            return image.height, image.width
    except Exception as exc:
        raise MicrographError(f"{path}: cannot read the micrograph's header ({exc}); the file may be corrupt") from None

# --- STAR (RELION 3.0 and 3.1) -----------------------------------------------------------------------


def _read_star(path: Path):
    import starfile

    if is_coordinate_list(path):
        return _read_listed_picks(path), None
    blocks = starfile.read(path, always_dict=True)
    # a particles STAR of RELION 3.1+ holds an optics table first; the particles are the block with coordinates
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame) and "rlnCoordinateX" in b), None)
    if table is None:
        raise CoordinateError(f"{path}: no data block with rlnCoordinateX/rlnCoordinateY in this STAR file")
    if "rlnCoordinateY" not in table:
        raise CoordinateError(f"{path}: rlnCoordinateX without rlnCoordinateY; check the file")
    if "rlnMicrographName" in table:
        names = [micrograph_stem(n) for n in table["rlnMicrographName"]]
    else:
        names = coordinate_stem(path)
    score = table["rlnAutopickFigureOfMerit"] if "rlnAutopickFigureOfMerit" in table else None
    classes = table["rlnClassNumber"].to_numpy() if "rlnClassNumber" in table else None
    return make_picks(names, table["rlnCoordinateX"], table["rlnCoordinateY"], score), classes


# --- cryoSPARC particles (.cs: a NumPy structured array) -------------------------------------------

CS_FIELDS = ("location/micrograph_path", "location/center_x_frac", "location/center_y_frac",
             "location/micrograph_shape")


def _read_cs(path: Path):
    """cryoSPARC's particle locations: a fraction of the micrograph's width and height, converted to px."""
    array = np.load(path, allow_pickle=False)
    names = array.dtype.names or ()
    missing = [f for f in CS_FIELDS if f not in names]
    if missing:
        raise CoordinateError(f"{path}: a cryoSPARC particle file needs the fields {', '.join(missing)}; export "
                              "the particles of a job that has picked or extracted them")
    shape = np.asarray(array["location/micrograph_shape"]).reshape(len(array), 2)  # (rows, columns)
    x = np.asarray(array["location/center_x_frac"], dtype=np.float64) * shape[:, 1]
    y = np.asarray(array["location/center_y_frac"], dtype=np.float64) * shape[:, 0]
    paths = [p.decode("utf-8", "surrogateescape") if isinstance(p, bytes) else str(p)
             for p in array["location/micrograph_path"]]
    classes = np.asarray(array["alignments2D/class"]) if "alignments2D/class" in names else None
    return make_picks([cryosparc_stem(p) for p in paths], x, y), classes


def cryosparc_stem(path: str) -> str:
    """A micrograph's stem as cryoSPARC names it, without the unique id it prefixes to imported files
    (``J3/imported/008765298472347812_mic_001.mrc`` → ``mic_001``).

    Example
    -------
    >>> cryosparc_stem("J3/imported/008765298472347812_mic_001.mrc")
    'mic_001'
    """
    return re.sub(r"^\d{15,}_", "", micrograph_stem(path))


def _score_text(score: float, missing: str) -> str:
    """A score with 9 significant digits: every float32 score (what the scanner makes) reads back exactly,
    so the near-1 scores of confident picks keep their order after a round trip through a file."""
    return f"{score:.9g}" if np.isfinite(score) else missing


def _star_text(picks: pd.DataFrame, box_px, *, names: bool = False) -> str:
    # Written by hand (not starfile.write) so that the output is byte-stable and carries only what
    # RELION and cryoSPARC read: coordinates, the micrograph name if several (or asked), and the score.
    multi = names or picks["micrograph"].nunique() > 1
    cols = ["rlnCoordinateX", "rlnCoordinateY"]
    if multi:
        cols.append("rlnMicrographName")
    has_score = bool(np.isfinite(picks["score"]).any())
    if has_score:
        cols += ["rlnAutopickFigureOfMerit", "rlnClassNumber", "rlnAnglePsi"]
    lines = ["", "# written by deeppick", "", "data_particles" if names else "data_", "", "loop_"]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
    for row in picks.itertuples(index=False):
        fields = [f"{row.x:.2f}", f"{row.y:.2f}"]
        if multi:
            fields.append(str(row.micrograph))
        if has_score:
            fields += [_score_text(row.score, "0"), "0", "-999"]
        lines.append("\t".join(fields))
    return "\n".join(lines) + "\n\n"


# --- RELION's list of coordinate files ---------------------------------------------------------------


def is_combined_picks(path: str | os.PathLike) -> bool:
    """True if ``path`` is the one STAR file of every pick of a picks folder (:data:`COMBINED_PICKS`)."""
    path = Path(path)
    if path.name != COMBINED_PICKS or not path.is_file():
        return False
    with open(path, "rb") as handle:
        return COMBINED_MARK.encode() in handle.read(4096)


def is_coordinate_list(path: str | os.PathLike) -> bool:
    """True if ``path`` is a STAR file listing coordinate files (``_rlnMicrographCoordinates``)."""
    path = Path(path)
    if path.suffix.lower() != ".star" or not path.is_file():
        return False
    with open(path, "rb") as handle:
        return b"_rlnMicrographCoordinates" in handle.read(4096)


def relion_path(path: str | os.PathLike) -> str:
    """``path`` as RELION names files: relative to the folder it runs in (taken to be the current one)
    when below it, absolute otherwise. Symbolic links are kept, as RELION's project folders use them."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def write_coordinate_list(path: str | os.PathLike, entries: dict[str, str], *, note: str | None = None) -> None:
    """Write RELION's list of coordinate files, atomically: ``entries`` maps each micrograph's name (as
    RELION's micrograph STAR names it) to its coordinate file. This is the file RELION's Particle extraction
    job takes as its input coordinates (the ``coordinate_files`` table an AutoPick job writes); ``note`` goes
    in its header as a comment."""
    lines = ["", "# version 30001", "# written by deeppick", *_comment(note or "").splitlines(), "",
             "data_coordinate_files", "", "loop_", "_rlnMicrographName #1", "_rlnMicrographCoordinates #2"]
    lines += [f"{mic}\t{coords}" for mic, coords in entries.items()]
    atomic_write_text(path, "\n".join(lines) + "\n\n")


def read_coordinate_list(path: str | os.PathLike) -> dict[str, str]:
    """Read RELION's list of coordinate files: micrograph name → coordinate file, both as written."""
    import starfile

    path = Path(path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise CoordinateError(f"{path}: cannot read this list of coordinate files ({exc}); check the file") from None
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)
                  and {"rlnMicrographName", "rlnMicrographCoordinates"} <= set(b.columns)), None)
    if table is None:
        raise CoordinateError(f"{path}: no table with rlnMicrographName and rlnMicrographCoordinates; "
                              "check the file")
    return {str(m): str(c) for m, c in zip(table["rlnMicrographName"], table["rlnMicrographCoordinates"])}


def listed_file(listed: str, list_path: Path) -> Path:
    """Where a listed coordinate file is: relative names are read from the current folder (RELION's project
    folder), else beside the list (a picks folder moved as a whole)."""
    here = Path(listed)
    if here.is_absolute() or here.is_file():
        return here
    beside = list_path.parent / here.name
    return beside if beside.is_file() else here


def _read_listed_picks(path: Path) -> pd.DataFrame:
    tables = []
    for mic, listed in read_coordinate_list(path).items():
        coords = listed_file(listed, path)
        if not coords.is_file():
            raise CoordinateError(f"{path}: lists {listed}, which does not exist; run from the folder the list's "
                                  "paths are relative to (RELION's project folder)")
        if is_coordinate_list(coords):
            raise CoordinateError(f"{path}: lists {listed}, itself a list of coordinate files; check the file")
        picks = read_picks(coords)
        tables.append(make_picks(micrograph_stem(mic), picks["x"], picks["y"], picks["score"]))
    return concat_picks(tables)


# --- EMAN .box: corner x, corner y, width, height --------------------------------------------------


def _read_box(path: Path) -> pd.DataFrame:
    rows = _numeric_rows(path, min_columns=4)
    if not rows.size:
        return make_picks([], [], [])
    x = rows[:, 0] + rows[:, 2] / 2
    y = rows[:, 1] + rows[:, 3] / 2
    return make_picks(coordinate_stem(path), x, y)


def _box_text(picks: pd.DataFrame, box_px) -> str:
    half = box_px / 2
    return "".join(f"{x - half:.2f}\t{y - half:.2f}\t{box_px:g}\t{box_px:g}\n"
                   for x, y in zip(picks["x"], picks["y"]))


# --- Topaz table: image_name x_coord y_coord score ---------------------------------------------------


def _read_coord(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, sep=r"\s+", dtype={"image_name": str})
    missing = {"image_name", "x_coord", "y_coord"} - set(table.columns)
    if missing:
        raise CoordinateError(f"{path}: Topaz table lacks the column(s) {', '.join(sorted(missing))}")
    score = table["score"] if "score" in table else None
    return make_picks([micrograph_stem(n) for n in table["image_name"]], table["x_coord"], table["y_coord"], score)


def _coord_text(picks: pd.DataFrame, box_px) -> str:
    lines = ["image_name\tx_coord\ty_coord\tscore"]
    lines += [f"{m}\t{x:.2f}\t{y:.2f}\t{_score_text(s, 'nan')}" for m, x, y, s in
              zip(picks["micrograph"], picks["x"], picks["y"], picks["score"])]
    return "\n".join(lines) + "\n"


# --- CSV: x,y[,score] ---------------------------------------------------------------------------------


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path) as fh:
        first = fh.readline()
    has_header = any(c.isalpha() for c in first.replace("nan", "").replace("e", ""))
    table = pd.read_csv(path, header=0 if has_header else None)
    if not has_header:
        table.columns = ["x", "y", "score"][: table.shape[1]] + [f"c{i}" for i in range(3, table.shape[1])]
    table.columns = [str(c).strip().lower() for c in table.columns]
    if not {"x", "y"} <= set(table.columns):
        raise CoordinateError(f"{path}: CSV needs columns x,y[,score] (with or without a header line)")
    return make_picks(coordinate_stem(path), table["x"], table["y"], table["score"] if "score" in table else None)


def _csv_text(picks: pd.DataFrame, box_px) -> str:
    lines = ["x,y,score"] + [f"{x:.2f},{y:.2f},{_score_text(s, 'nan')}"
                             for x, y, s in zip(picks["x"], picks["y"], picks["score"])]
    return "\n".join(lines) + "\n"


# --- crYOLO .cbox (STAR-style, corner coordinates) ----------------------------------------------------


def _read_cbox(path: Path) -> pd.DataFrame:
    import starfile

    text = Path(path).read_text()
    if "_CoordinateX" not in text:  # crYOLO < 1.8 wrote .box-like rows with extra columns
        return _read_box(path)
    blocks = starfile.read(path, always_dict=True)
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame) and "CoordinateX" in b), None)
    if table is None:
        raise CoordinateError(f"{path}: no block with _CoordinateX in this cbox file")
    x = table["CoordinateX"] + table["Width"] / 2
    y = table["CoordinateY"] + table["Height"] / 2
    score = table["Confidence"] if "Confidence" in table else None
    return make_picks(coordinate_stem(path), x, y, score)


def _cbox_text(picks: pd.DataFrame, box_px) -> str:
    half = box_px / 2
    cols = ["CoordinateX", "CoordinateY", "CoordinateZ", "Width", "Height", "Depth", "EstWidth", "EstHeight",
            "Confidence", "NumBoxes", "Angle"]
    lines = ["", "data_global", "", "_version 1.9.0", "", "data_cryolo", "", "loop_"]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
    for x, y, s in zip(picks["x"], picks["y"], picks["score"]):
        conf = _score_text(s, "<NA>")
        fields = [f"{x - half:.2f}", f"{y - half:.2f}", "<NA>", f"{box_px:g}", f"{box_px:g}", "<NA>", "<NA>", "<NA>",
                  conf, "<NA>", "<NA>"]
        lines.append("\t".join(fields))
    return "\n".join(lines) + "\n\n"


def _numeric_rows(path: Path, min_columns: int) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values = [float(v) for v in line.replace(",", " ").split()]
        except ValueError:
            raise CoordinateError(f"{path}:{lineno}: not a row of numbers: '{line[:60]}'") from None
        if len(values) < min_columns:
            raise CoordinateError(f"{path}:{lineno}: expected at least {min_columns} numbers, got {len(values)}")
        rows.append(values[:min_columns])
    return np.array(rows, dtype=np.float64).reshape(-1, min_columns)


# --------------------------------------------------------------------------------------------------
# labels for the micrographs given


@dataclass
class LabelUse:
    """How the particles of a coordinate source were used for a set of micrographs."""

    source: str
    used: int
    not_given: dict[str, int] = field(default_factory=dict)  # micrograph named in the source, not given → labels
    left_out_by_class: int = 0
    classes: list[int] | None = None

    def summary(self) -> str:
        """One line: particles used, and those left out, per reason."""
        parts = [f"{self.used:,} particle{'' if self.used == 1 else 's'} of {self.source}"]
        if self.not_given:
            n = sum(self.not_given.values())
            names = sorted(self.not_given)
            parts.append(f"{n:,} left out on {len(names)} micrograph(s) not given (e.g. {', '.join(names[:3])})")
        if self.left_out_by_class:
            parts.append(f"{self.left_out_by_class:,} left out as not in classes "
                         f"{','.join(map(str, self.classes or []))}")
        return "; ".join(parts)


def labels_on(picks: pd.DataFrame, micrographs: Iterable[str | os.PathLike], *, source: str) -> tuple[
        pd.DataFrame, LabelUse]:
    """The rows of ``picks`` that name one of ``micrographs`` (by name stem), and how many were left out, why.

    Raises
    ------
    CoordinateError
        When no row names a micrograph given: the labels are for other micrographs, or named otherwise.
    """
    stems = {micrograph_stem(m) for m in micrographs}
    here = picks["micrograph"].isin(stems)
    counts = picks.loc[~here, "micrograph"].value_counts()
    use = LabelUse(source=str(source), used=int(here.sum()), not_given={str(k): int(v) for k, v in counts.items()},
                   left_out_by_class=int(picks.attrs.get("left_out_by_class", 0)))
    if len(picks) and not here.any():
        named = sorted(set(picks["micrograph"]))
        raise CoordinateError(f"{source}: its particles name micrographs {', '.join(named[:3])}"
                              f"{' …' if len(named) > 3 else ''}, none of those given ({', '.join(sorted(stems)[:3])}"
                              f"{' …' if len(stems) > 3 else ''}); coordinates are matched to micrographs by file "
                              "name stem: give the micrographs they were picked on")
    return picks[here].reset_index(drop=True), use


# --------------------------------------------------------------------------------------------------
# matching coordinate files to micrographs


def match_picks_to_micrographs(picks: pd.DataFrame, micrographs: Iterable[str | os.PathLike]):
    """Split ``picks`` by micrograph stem.

    Returns ``(matched, unmatched_picks, unmatched_micrographs)``: a dict stem → picks table for every
    micrograph (empty table if it has no picks), the sorted stems of picks with no micrograph, and the
    sorted stems of micrographs with no picks.
    """
    stems = [micrograph_stem(m) for m in micrographs]
    groups = {name: g.reset_index(drop=True) for name, g in picks.groupby("micrograph", sort=False)}
    matched = {stem: groups.get(stem, empty_picks()) for stem in stems}
    unmatched_picks = sorted(set(groups) - set(stems))
    unmatched_mics = sorted(set(stems) - set(groups))
    return matched, unmatched_picks, unmatched_mics
