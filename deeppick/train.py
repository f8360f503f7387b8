"""Training a particle classifier on a patch set.

:func:`train_model` fits a :mod:`deeppick.model` network to a :class:`~deeppick.patches.PatchSet`
(positives = particles, negatives = background) and returns a :class:`~deeppick.model.PickerModel` whose
``info`` records what it was trained on and how well it did on held-out patches.

Recipe: a stratified random ~1/9 of the particles is held out with their off-centre views, and ~1/9 of
the background patches (DeepPicker §4.3 holds out 1/9 of the patches); every epoch the network sees the
others once, shuffled, with random 90° rotations (DeepEM rotates its training images by 90°) and flips
(ours), and optional noise and contrast jitter; the held-out loss drives early stopping and the best
epoch's weights are kept.
Runs are deterministic for a given seed on one device: the randomness of epoch ``e`` is drawn from
``(seed, e)``, so a run resumed from its per-epoch checkpoint continues exactly as if uninterrupted.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .errors import ConfigError, ModelFileError
from .io import atomic_path
from .model import ARCHITECTURES, PickerModel, build_net, default_device
from .patches import PatchSet
from .preprocess import PreprocessConfig

CHECKPOINT_FORMAT = "deeppick-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; stored in the model file's ``info``."""

    arch: str = "deeppicker"  # DeepPicker §4.2 network; "deepem": DeepEM's layer pattern (model.deepem_net)
    optimizer: str = "sgd"  # DeepPicker §4.5: stochastic gradient descent
    learning_rate: float | None = None  # None: 0.01 for SGD (DeepPicker §4.5), 0.001 for Adam (Kingma & Ba)
    momentum: float = 0.9  # SGD momentum, the usual value (ours)
    weight_decay: float = 5e-4  # L2 penalty, as in the TensorFlow CNN example DeepPicker builds on
    batch_size: int = 64  # ours: small batches suit the few-thousand-patch sets of one dataset
    epochs: int = 100  # upper bound; early stopping usually ends sooner (ours: docs/measurements.md, Training length)
    val_fraction: float = 1 / 9  # DeepPicker §4.3: 1/9 of the patches validate
    # ours: hold out whole particles (a particle's patch with its off-centre views and the background beside
    # it, particle_groups), so validation never scores a view of a particle that was trained on; False:
    # patches one by one
    hold_out_particles: bool = True
    # ours, for partially labelled micrographs: the share of particles among the background patches, which are
    # then unlabelled, not background (non-negative PU learning, Kiryo et al. 2017, as Topaz trains); None:
    # background is background
    unlabelled_prior: float | None = None
    # ours, after HydraPicker (Brown et al. 2022): while training, every dataset of the patch set has a head of its
    # own on the shared layers beside the generic one, each patch training both; only the generic head is kept,
    # so the model is the plain network. For general models trained on many molecules; False: one head
    source_heads: bool = False
    patience: int = 10  # epochs without a lower validation loss before stopping (ours, as epochs)
    # ours: and at least this many optimiser steps without one: with few labels an epoch is a handful of steps,
    # and ten of them end training before it has learned (docs/measurements.md, Partial labels); 0: epochs only
    min_patience_steps: int = 250
    # random 90° rotations (DeepEM's fixed rotations of each training image) and flips (ours)
    rotate_flip: bool = True
    noise_sd: float = 0.0  # optional Gaussian noise added to the normalised patch (ours)
    contrast_jitter: float = 0.0  # optional contrast scale drawn from 1 ± jitter (ours)
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU

    def lr(self) -> float:
        """The learning rate in use (the optimiser's default when ``learning_rate`` is None)."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 0.01 if self.optimizer == "sgd" else 0.001

    def check(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture '{self.arch}'; use one of {', '.join(ARCHITECTURES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimiser '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"epochs must be ≥ 0 and batch size ≥ 1 (got {self.epochs}, {self.batch_size})")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr() <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr()}")
        if self.source_heads and (self.arch == "deepem" or self.unlabelled_prior is not None):
            raise ConfigError("source heads need a two-way network (deeppicker or wide) and full labels")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def train_model(patch_set: PatchSet, config: TrainConfig = TrainConfig(), *, box_px: float | None = None,
                preprocess: PreprocessConfig | None = None, init: PickerModel | None = None,
                progress: bool = True, checkpoint: str | os.PathLike | None = None,
                resume: bool = False) -> PickerModel:
    """Train a particle classifier on ``patch_set``.

    Parameters
    ----------
    patch_set
        Labelled model-frame patches (:func:`~deeppick.patches.extract_patches`).
    config
        Hyper-parameters; ``config.arch`` is ignored when ``init`` is given.
    box_px
        Box side in micrograph px the model is for; default: the patch set's (or ``init``'s) box.
        Required for patch sets that mix boxes.
    preprocess
        Preprocessing the patches went through; default: the patch set's. A different value is an error:
        the model must be used on pixels prepared the way it was trained on.
    init
        A model to start from (fine-tuning, self-training); its network is copied, not changed.
    progress
        Show a tqdm bar with loss and accuracy per epoch.
    checkpoint
        File written after every epoch (weights, optimiser, history). With ``resume`` and an existing
        file, training continues from it; the result equals an uninterrupted run.

    Returns
    -------
    PickerModel
        On the CPU, in eval mode; ``info`` holds ``trained_on``, ``training`` (the config), ``val_accuracy``,
        ``val_loss``, ``best_epoch``, ``epochs_run``, ``stopped_early``, ``history`` and ``seconds``.

    Example
    -------
    >>> model = train_model(extract_patches(image, picks, box_px=56), TrainConfig(epochs=10))  # doctest: +SKIP
    >>> model.info["val_accuracy"]  # doctest: +SKIP
    0.97
    """
    config.check()
    box_px, preprocess = _check_patch_set(patch_set, box_px, preprocess, init)
    device = torch.device(config.device) if config.device else default_device()
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    groups = particle_groups(patch_set) if config.hold_out_particles else None
    train_idx, val_idx = split_validation(patch_set.labels, config.val_fraction, config.seed, groups=groups)
    heads = dataset_heads(patch_set) if config.source_heads and init is None else None
    data = _Tensors(patch_set, train_idx, val_idx, device, heads)
    if init is not None:
        arch, arch_kwargs = init.arch, dict(init.arch_kwargs)
        net = copy.deepcopy(init.net)
    else:
        arch, arch_kwargs = config.arch, {}
        torch.manual_seed(_epoch_seed(config.seed, -1))
        net = build_net(arch)
        if heads is not None:
            _add_source_heads(net, int(heads.max()) + 1)
    net.to(device)
    optimiser = _optimiser(net, config)
    fingerprint = patch_set_fingerprint(patch_set)
    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "since_best": 0, "history": [],
             "best_state": None, "seconds": 0.0}
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        state = _load_checkpoint(checkpoint, net, optimiser, config, fingerprint, arch)

    started = time.perf_counter() - state["seconds"]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, initial=min(state["epoch"], config.epochs), desc="train", unit="epoch")
    patience = effective_patience(config, len(train_idx))
    while state["epoch"] < config.epochs and not (len(val_idx) and state["since_best"] >= patience):
        record = _train_epoch(net, optimiser, data, config, state["epoch"])
        _early_stopping(state, record, net)
        state["seconds"] = time.perf_counter() - started
        if checkpoint is not None:
            _save_checkpoint(checkpoint, net, optimiser, config, fingerprint, arch, state)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
            bar.update(1)
    if bar is not None:
        bar.close()
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    if heads is not None:
        _keep_generic_head(net)
    net.cpu().eval()
    info = _training_info(patch_set, config, device, init, state, len(train_idx), len(val_idx))
    if heads is not None:
        info["source_heads"] = int(heads.max()) + 1
    return PickerModel(net=net, arch=arch, box_px=float(box_px), preprocess=preprocess, arch_kwargs=arch_kwargs,
                       info=info)


class _Tensors:
    """The patch set as tensors on the training device, split into training and validation patches;
    ``hard_*`` flags the particle and background patches, which accuracy counts; ``head_train`` each
    training patch's dataset head (None: one head)."""

    def __init__(self, patch_set: PatchSet, train_idx: np.ndarray, val_idx: np.ndarray, device: torch.device,
                 heads: np.ndarray | None = None):
        x = torch.from_numpy(np.ascontiguousarray(patch_set.patches)).unsqueeze(1)
        y = torch.from_numpy(patch_set.training_targets)
        hard = torch.from_numpy(patch_set.hard)
        self.x_train, self.y_train, self.hard_train = (t[train_idx].to(device) for t in (x, y, hard))
        self.x_val, self.y_val, self.hard_val = (t[val_idx].to(device) for t in (x, y, hard))
        self.head_train = None if heads is None else torch.from_numpy(heads[train_idx]).long().to(device)


def dataset_heads(patch_set: PatchSet) -> np.ndarray:
    """(N,) int: the index of each patch's dataset (``metadata['sources'][i]['dataset']``, in order of first
    appearance), the head it trains besides the generic one."""
    names = [source.get("dataset") for source in patch_set.metadata.get("sources", [])]
    index = {name: i for i, name in enumerate(dict.fromkeys(names))}
    per_source = np.array([index[name] for name in names], dtype=np.int64)
    return per_source[patch_set.source] if len(per_source) else np.zeros(len(patch_set), dtype=np.int64)


def _add_source_heads(net: nn.Module, n: int) -> None:
    """Widen the last layer (the two-way output) to the generic pair and one pair per dataset."""
    last = net.body[-1]
    wide = nn.Conv2d(last.in_channels, 2 * (n + 1), last.kernel_size)
    with torch.no_grad():
        wide.weight[:2], wide.bias[:2] = last.weight, last.bias
    net.body[-1] = wide


def _keep_generic_head(net: nn.Module) -> None:
    """Cut the last layer back to the generic pair: the plain network, as the scanner and model file know it."""
    last = net.body[-1]
    generic = nn.Conv2d(last.in_channels, 2, last.kernel_size)
    with torch.no_grad():
        generic.weight.copy_(last.weight[:2])
        generic.bias.copy_(last.bias[:2])
    net.body[-1] = generic


def _check_patch_set(patch_set: PatchSet, box_px: float | None, preprocess: PreprocessConfig | None,
                     init: PickerModel | None) -> tuple[float, PreprocessConfig]:
    """The box and preparation the model is for; raise :class:`ConfigError` for a patch set that cannot
    train one."""
    labels = np.asarray(patch_set.labels)
    if len(patch_set) < 2 or labels.min() == labels.max():
        raise ConfigError(f"the patch set has {patch_set.n_positive} particle and {patch_set.n_negative} background "
                          "patches; training needs both: check the coordinates match the micrographs")
    if box_px and patch_set.box_px and abs(float(box_px) - float(patch_set.box_px)) > 1e-6:
        raise ConfigError(f"the patches were cut with a {patch_set.box_px:g}-px box, not {box_px:g} px; "
                          "extract them again with this box or leave the box size out")
    box_px = box_px or patch_set.box_px or (init.box_px if init is not None else None)
    if not box_px:
        raise ConfigError("the patch set mixes box sizes: give the model's box size (box_px / --box-px)")
    preprocess = _check_preprocess(patch_set, preprocess, init)
    if patch_set.patches.shape[-1] != preprocess.model_px:
        raise ConfigError(f"patches are {patch_set.patches.shape[-1]} px but the model box is "
                          f"{preprocess.model_px} px; extract them again")
    return box_px, preprocess


def _train_epoch(net: nn.Module, optimiser, data: _Tensors, config: TrainConfig, epoch: int) -> dict:
    """One pass over the training patches, shuffled and augmented with the draws of ``(seed, epoch)``;
    returns the epoch's figures, validation loss and accuracy included."""
    loss_fn = nn.BCEWithLogitsLoss() if config.unlabelled_prior is None else _pu_loss(config.unlabelled_prior)
    gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    torch.manual_seed(_epoch_seed(config.seed, epoch) + 1)  # dropout
    net.train()
    order = torch.randperm(len(data.y_train), generator=gen).to(data.x_train.device)
    total_loss, total_correct = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        idx = order[start:start + config.batch_size]
        xb = augment(data.x_train[idx], gen, config)
        yb = data.y_train[idx]
        if data.head_train is None:
            logits = net(xb)
            loss = (loss_fn(logits, yb) if config.unlabelled_prior is None
                    else loss_fn(logits, yb, data.hard_train[idx]))
        else:  # the generic pair (channels 0, 1) and the patch's own dataset's pair
            out = net.body(xb)[:, :, 0, 0]
            logits = out[:, 1] - out[:, 0]
            pair = 2 + 2 * data.head_train[idx]
            rows = torch.arange(len(idx), device=out.device)
            loss = loss_fn(logits, yb) + loss_fn(out[rows, pair + 1] - out[rows, pair], yb)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total_loss += float(loss.detach()) * len(idx)
        total_correct += int((((logits > 0).float() == yb) & data.hard_train[idx]).sum())
    record = {"epoch": epoch + 1, "loss": total_loss / len(order),
              "accuracy": total_correct / max(int(data.hard_train.sum()), 1)}
    if len(data.y_val):
        val_loss_fn = loss_fn if config.unlabelled_prior is None else (
            lambda logits, targets: loss_fn(logits, targets, data.hard_val))
        val_loss, val_acc = _evaluate(net, data.x_val, data.y_val, data.hard_val, val_loss_fn)
        record.update(val_loss=val_loss, val_accuracy=val_acc)
    return record


def _pu_loss(prior: float):
    """The non-negative positive-unlabelled risk (Kiryo et al. 2017) with the logistic loss: particle patches
    are positives, background patches unlabelled holding a share ``prior`` of particles; off-centre views
    keep their soft targets (binary cross-entropy)."""
    softplus = nn.functional.softplus

    def loss(logits: torch.Tensor, targets: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        positive, unlabelled = hard & (targets == 1), hard & (targets == 0)
        n = len(logits)
        total = logits.new_zeros(())
        if positive.any():
            as_positive = softplus(-logits[positive]).mean()
            as_negative = softplus(logits[positive]).mean()
        else:
            as_positive = as_negative = logits.new_zeros(())
        unlabelled_risk = softplus(logits[unlabelled]).mean() if unlabelled.any() else logits.new_zeros(())
        n_hard = int((positive | unlabelled).sum())
        total = total + (prior * as_positive + torch.clamp(unlabelled_risk - prior * as_negative, min=0.0)) * n_hard / n
        soft = ~hard
        if soft.any():
            total = total + nn.functional.binary_cross_entropy_with_logits(logits[soft], targets[soft],
                                                                            reduction="sum") / n
        return total

    return loss


def unlabelled_prior(patch_set: PatchSet, fraction_labelled: float) -> float:
    """The share of particles among a patch set's background patches when only ``fraction_labelled`` of each
    micrograph's particles are labelled: the unlabelled particles' centre discs (radius 0.25 box, where a
    patch shows a particle centred) over the area background is drawn from. A small share: most of what
    partial labels cost is elsewhere (docs/measurements.md, *Partial labels*)."""
    if not 0 < fraction_labelled <= 1:
        raise ConfigError(f"the labelled fraction must lie in (0, 1], got {fraction_labelled}")
    area, particle_area = 0.0, 0.0
    for index, source in enumerate(patch_set.metadata.get("sources", [])):
        if not source.get("shape") or not source.get("box_px"):
            continue
        rows, cols = source["shape"]
        box = float(source["box_px"])
        labelled = int(((patch_set.source == index) & (patch_set.labels == 1)).sum())
        unlabelled = labelled * (1 / fraction_labelled - 1)
        free = rows * cols - labelled * np.pi * (0.6 * box) ** 2
        area += max(free, 0.1 * rows * cols)
        particle_area += unlabelled * np.pi * (0.25 * box) ** 2
    return float(np.clip(particle_area / area, 0.0, 0.5)) if area else 0.0


def effective_patience(config: TrainConfig, n_train: int) -> int:
    """Epochs without a lower validation loss before training stops: ``config.patience``, or more when an
    epoch of ``n_train`` patches is too few steps for ``config.min_patience_steps``."""
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    return max(config.patience, math.ceil(config.min_patience_steps / steps_per_epoch))


def _early_stopping(state: dict, record: dict, net: nn.Module) -> None:
    """Add ``record`` to the history and keep the weights of the lowest validation loss so far."""
    if "val_loss" in record:
        if record["val_loss"] < state["best_loss"]:
            state.update(best_loss=record["val_loss"], best_epoch=record["epoch"], since_best=0,
                         best_state=_cpu_state(net))
        else:
            state["since_best"] += 1
    state["history"].append(record)
    state["epoch"] = record["epoch"]


def _training_info(patch_set: PatchSet, config: TrainConfig, device, init: PickerModel | None, state: dict,
                   n_train: int, n_val: int) -> dict:
    """What a trained model's ``info`` records of its training."""
    best = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), None)
    return {
        "trained_on": describe_patch_set(patch_set),
        "training": {**config.to_dict(), "learning_rate": config.lr(), "device": str(device),
                     "init": (init.info.get("name") or "a given model") if init is not None else None,
                     "n_train": int(n_train), "n_val": int(n_val),
                     "patience_epochs": effective_patience(config, n_train)},
        "val_accuracy": best["val_accuracy"] if best else None,
        "val_loss": best["val_loss"] if best else None,
        "best_epoch": state["best_epoch"] or state["epoch"],
        "epochs_run": state["epoch"],
        "stopped_early": state["epoch"] < config.epochs,
        "history": state["history"],
        "seconds": round(state["seconds"], 2),
        "deeppick_version": __version__,
    }


def augment(x: torch.Tensor, gen: torch.Generator, config: TrainConfig) -> torch.Tensor:
    """Randomly rotate by multiples of 90°, flip, add noise and scale contrast (per patch).

    ``x`` is (N, 1, P, P) on any device; the random draws come from ``gen`` (a CPU generator) so
    results do not depend on the device's generator.
    """
    n = x.shape[0]
    if config.rotate_flip:
        k = torch.randint(0, 4, (n,), generator=gen).to(x.device)
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = x.clone()
        for r in (1, 2, 3):
            sel = k == r
            if sel.any():
                out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        out[flip] = out[flip].flip(-1)
        x = out
    if config.contrast_jitter > 0:
        scale = 1 + config.contrast_jitter * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
        x = x * scale.to(x.device)
    if config.noise_sd > 0:
        x = x + config.noise_sd * torch.randn(x.shape, generator=gen).to(x.device)
    return x


def split_validation(labels: np.ndarray, fraction: float, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split: ``(train_index, val_index)`` with about ``fraction`` of each class held out.

    With ``groups`` (one id per patch, :func:`particle_groups`) whole groups are held out: a group is
    of the particle class when it holds a particle patch, and about ``fraction`` of each class's groups
    validate, so no view of a validation particle is trained on.
    """
    labels = np.asarray(labels)
    if groups is None:
        groups = np.arange(len(labels))
    groups = np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    group_class = np.zeros(len(ids), dtype=np.int64)
    np.maximum.at(group_class, inverse, (labels == 1).astype(np.int64))
    rng = np.random.default_rng([seed, 9])
    held = np.zeros(len(ids), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(group_class == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        held[idx[:n_val]] = True
    val = held[inverse]
    return np.flatnonzero(~val), np.flatnonzero(val)


def particle_groups(patch_set: PatchSet, reach_box: float = 0.6) -> np.ndarray:
    """One group id per patch: a particle patch and every patch centred within ``reach_box`` × box of it in
    the same micrograph (its off-centre views, the background beside it) share the particle's group;
    other patches are groups of their own. 0.6 box is DeepPicker's background distance: every view
    nearer a particle shows part of it."""
    from scipy.spatial import cKDTree

    groups = np.arange(len(patch_set), dtype=np.int64)
    sources = patch_set.metadata.get("sources", [])
    for source in np.unique(patch_set.source):
        here = np.flatnonzero(patch_set.source == source)
        particles = here[patch_set.labels[here] == 1]
        box = (sources[source].get("box_px") if source < len(sources) else None) or patch_set.box_px
        if not len(particles) or not box or not np.isfinite(patch_set.x[here]).all():
            continue  # without positions (a stack of boxed particles) each patch is its own group
        xy = np.column_stack([patch_set.x, patch_set.y]).astype(np.float64)
        distance, nearest = cKDTree(xy[particles]).query(xy[here], k=1)
        near = distance < reach_box * float(box)
        groups[here[near]] = particles[nearest[near]]
    return groups


@torch.no_grad()
def evaluate_patches(model: PickerModel, patch_set: PatchSet, *, device: str | torch.device | None = None,
                     batch_size: int = 512) -> dict:
    """Accuracy, loss, precision and recall of ``model`` on labelled patches (threshold 0.5).

    Off-centre views (soft targets) are left out: the figures are about particle vs background."""
    device = torch.device(device) if device else default_device()
    net = model.net.to(device).eval()
    patch_set = patch_set.subset(np.flatnonzero(patch_set.hard))
    x = torch.from_numpy(np.ascontiguousarray(patch_set.patches)).unsqueeze(1).to(device)
    y = torch.from_numpy(patch_set.labels.astype(np.float32)).to(device)
    logits = torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else y
    net.cpu()
    pred = logits > 0
    truth = y > 0.5
    tp = int((pred & truth).sum())
    return {
        "n": int(len(y)),
        "accuracy": float((pred == truth).float().mean()) if len(y) else float("nan"),
        "loss": float(nn.functional.binary_cross_entropy_with_logits(logits, y)) if len(y) else float("nan"),
        "precision": tp / max(int(pred.sum()), 1),
        "recall": tp / max(int(truth.sum()), 1),
    }


def describe_patch_set(patch_set: PatchSet) -> dict:
    """What a model was trained on, for its ``info``: datasets, micrographs, counts, box."""
    sources = patch_set.metadata.get("sources", [])
    datasets = sorted({s.get("dataset") for s in sources if s.get("dataset")})
    return {
        "datasets": datasets,
        "micrographs": [s.get("micrograph") for s in sources],
        "n_patches": len(patch_set),
        "n_positive": patch_set.n_positive,
        "n_negative": patch_set.n_negative,
        "n_off_centre": patch_set.n_off_centre,
        "box_px": patch_set.box_px,
        "split": (patch_set.metadata.get("dataset") or {}).get("split"),
        "patch_config": patch_set.metadata.get("patch_config"),
    }


def patch_set_fingerprint(patch_set: PatchSet) -> str:
    """A short hash of the patches and labels (a checkpoint only resumes on the same data)."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(patch_set.labels).tobytes())
    if patch_set.targets is not None:
        h.update(np.ascontiguousarray(patch_set.targets).tobytes())
    h.update(np.ascontiguousarray(patch_set.patches).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# internals


def _check_preprocess(patch_set: PatchSet, preprocess: PreprocessConfig | None,
                      init: PickerModel | None) -> PreprocessConfig:
    stored = patch_set.metadata.get("preprocess")
    stored = PreprocessConfig.from_dict(stored) if stored else None
    chosen = preprocess or stored or (init.preprocess if init is not None else PreprocessConfig())
    if stored is not None and stored != chosen:
        raise ConfigError(f"the patches were prepared with {stored} but the model is to use {chosen}; "
                          "extract the patches again with the model's preprocessing")
    if init is not None and init.preprocess != chosen:
        raise ConfigError(f"the initial model uses {init.preprocess} but the patches {chosen}; "
                          "extract the patches with the initial model's preprocessing")
    return chosen


def _optimiser(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=config.lr(), momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=config.lr(), weight_decay=config.weight_decay)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1, dtype=np.uint32)[0])


@torch.no_grad()
def _evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, hard: torch.Tensor, loss_fn, batch_size: int = 512):
    net.eval()
    logits = torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    correct = ((logits > 0).float() == y)[hard]
    return float(loss_fn(logits, y)), float(correct.float().mean()) if len(correct) else float("nan")


def _cpu_state(net: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _save_checkpoint(path, net, optimiser, config: TrainConfig, fingerprint: str, arch: str, state: dict) -> None:
    import json

    archive = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "state_json": json.dumps({k: v for k, v in state.items() if k != "best_state"}),
        "config_json": json.dumps(config.to_dict()),
        "fingerprint": fingerprint,
        "arch": arch,
        "net": _cpu_state(net),
        "optimiser": optimiser.state_dict(),
        "best_state": state["best_state"] or {},
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(archive, tmp)
    except (OSError, RuntimeError) as exc:  # torch reports a short write as a RuntimeError
        kept = (f"the checkpoint of epoch {state['epoch'] - 1} is kept: free some space and rerun with --resume"
                if Path(path).is_file() else "free some space and train again")
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = textwrap.shorten(" ".join(text.split()) or type(exc).__name__, width=160, placeholder=" …")
        raise ModelFileError(f"{path}: the training checkpoint could not be written ({reason}); {kept}") from None


def _load_checkpoint(path, net, optimiser, config: TrainConfig, fingerprint: str, arch: str) -> dict:
    import json

    try:
        archive = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(archive, dict) and archive.get("format") == CHECKPOINT_FORMAT
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable training checkpoint ({str(exc)[:100]}); "
                             "delete it or train without --resume") from None
    if not ok or archive.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ModelFileError(f"{path}: not a training checkpoint of this deeppick version; "
                             "delete it or train without --resume")
    saved = TrainConfig.from_dict(json.loads(archive["config_json"]))
    if archive["fingerprint"] != fingerprint or archive["arch"] != arch:
        raise ConfigError(f"{path}: this checkpoint was trained on other patches or another network; "
                          "delete it or train without --resume")
    differ = [k for k in ("optimizer", "learning_rate", "batch_size", "val_fraction", "hold_out_particles",
                          "unlabelled_prior", "seed",
                          "rotate_flip",
                          "noise_sd", "contrast_jitter", "momentum", "weight_decay")
              if getattr(saved, k) != getattr(config, k)]
    if differ:
        raise ConfigError(f"{path}: the checkpoint was trained with other settings ({', '.join(differ)}); "
                          "use the same options to resume, or train without --resume")
    net.load_state_dict(archive["net"])
    optimiser.load_state_dict(archive["optimiser"])
    state = json.loads(archive["state_json"])
    state["best_state"] = archive["best_state"] or None
    return state
