"""Picking many micrographs at once: in this process, in worker processes, or on a Dask cluster.

:func:`pick_many` runs :func:`~deeppick.pipeline.pick_micrograph` over micrograph files and yields one
:class:`Outcome` per micrograph as it is done (its picks, or why it could not be used). It never holds more
images than there are workers: each worker reads its own micrograph, so a folder of any size streams
through. :mod:`~deeppick.batch` writes what it yields.

* ``workers=1``: in this process; the next micrograph is read in a thread while the current one is scored.
* ``workers=N``: N processes, each scoring with ``cores // N`` torch threads so that together they use the
  cores without oversubscribing them; the model is sent to each once, as a model file's bytes.
* ``scheduler``: a running Dask distributed cluster (``tcp://HOST:PORT``, or a ``Client``; the optional
  extra ``deeppick[dask]``): one task per micrograph, the model scattered to every worker once; a task
  whose worker dies is run again elsewhere by the scheduler, and a micrograph that cannot be used comes
  back as an outcome, as locally.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from .errors import ConfigError, DeepPickError
from .io import micrograph_stem, read_micrograph
from .model import PickerModel, model_bytes, model_from_bytes
from .pipeline import PickConfig, pick_micrograph

__all__ = ["Outcome", "pick_many", "default_workers"]


@dataclass
class Outcome:
    """One micrograph picked: its picks table and image shape (rows, columns), or the one-line reason it
    could not be used."""

    path: Path
    picks: pd.DataFrame | None = None
    error: str | None = None
    shape: tuple[int, int] | None = None


def default_workers() -> int:
    """Workers ``pick`` uses unless told: one process with every core's threads on a GPU or a single core,
    else one process per two cores (docs/measurements.md, *Throughput*)."""
    import torch

    cores = os.cpu_count() or 1
    if torch.cuda.is_available() or cores < 2:
        return 1
    return max(1, cores // 2)


def pick_many(model: PickerModel, paths: Iterable[str | os.PathLike], *, config: PickConfig = PickConfig(),
              workers: int = 1, scheduler=None) -> Iterator[Outcome]:
    """Pick ``paths`` and yield each micrograph's :class:`Outcome` as it is done (in no set order with
    several workers or a cluster)."""
    paths = [Path(p) for p in paths]
    if not paths:
        return
    if scheduler is not None:
        yield from _on_dask(model, paths, config, scheduler)
    elif workers > 1 and len(paths) > 1:
        yield from _in_processes(model, paths, config, min(workers, len(paths)))
    else:
        yield from _in_this_process(model, paths, config)


def _pick_one(model: PickerModel, path: Path, config: PickConfig, image=None) -> Outcome:
    try:
        image = read_micrograph(path) if image is None else image
        return Outcome(path, picks=pick_micrograph(model, image, name=micrograph_stem(path), config=config,
                                                   path=path), shape=tuple(image.shape))
    except DeepPickError as exc:
        return Outcome(path, error=str(exc))


def _read(path: Path):
    """A micrograph, or the error reading it (raised again where it is picked)."""
    try:
        return read_micrograph(path)
    except DeepPickError as exc:
        return exc


def _in_this_process(model, paths, config) -> Iterator[Outcome]:
    with ThreadPoolExecutor(max_workers=1) as reader:  # read the next while scoring this one
        upcoming = reader.submit(_read, paths[0])
        for i, path in enumerate(paths):
            image = upcoming.result()
            if i + 1 < len(paths):
                upcoming = reader.submit(_read, paths[i + 1])
            if isinstance(image, DeepPickError):
                yield Outcome(path, error=str(image))
            else:
                yield _pick_one(model, path, config, image)


# --- worker processes -----------------------------------------------------------------------------

_WORKER: dict = {}


def _start_worker(blob: bytes, threads: int) -> None:
    import torch

    from . import preprocess

    torch.set_num_threads(threads)
    preprocess.FFT_WORKERS = threads  # the worker's share of the cores, for its FFTs too
    _WORKER["model"] = model_from_bytes(blob)


def _work(task) -> Outcome:
    path, config = task
    return _pick_one(_WORKER["model"], path, config)


def _in_processes(model, paths, config, workers: int) -> Iterator[Outcome]:
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a forked child of a process that has started torch's threads can hang
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(model_bytes(model), threads)) as pool:
        yield from pool.imap_unordered(_work, [(path, config) for path in paths], chunksize=1)


# --- a Dask cluster --------------------------------------------------------------------------------

_ON_DASK: dict = {}


def _dask_task(blob: bytes, path: str, config: PickConfig) -> Outcome:
    """One micrograph on a Dask worker; the model is loaded once per worker process."""
    import hashlib

    import torch

    key = hashlib.sha256(blob).hexdigest()
    if key not in _ON_DASK:
        try:
            from dask.distributed import get_worker

            torch.set_num_threads(max(1, get_worker().state.nthreads))
        except (ImportError, ValueError, AttributeError):
            pass
        _ON_DASK.clear()
        _ON_DASK[key] = model_from_bytes(blob)
    return _pick_one(_ON_DASK[key], Path(path), config)


def _on_dask(model, paths, config, scheduler) -> Iterator[Outcome]:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise ConfigError("--dask-scheduler needs Dask's distributed scheduler: pip install 'deeppick[dask]'") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="30s") if own else scheduler
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); check the address and that "
                          "the scheduler runs") from None
    try:
        blob = client.scatter(model_bytes(model), broadcast=True)
        futures = [client.submit(_dask_task, blob, str(path), config, pure=False) for path in paths]
        for future in as_completed(futures):
            yield future.result()
    finally:
        if own:
            client.close()
