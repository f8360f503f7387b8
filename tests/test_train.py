"""Tests of deeppick.train: learning, determinism, checkpoints and the train command."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.errors import ConfigError
from deeppick.model import load_model
from deeppick.patches import PatchSet, extract_patches, save_patch_set
from deeppick.preprocess import PreprocessConfig
from deeppick.train import TrainConfig, augment, evaluate_patches, particle_groups, split_validation, train_model
from tests.test_patches import synthetic_micrograph, write_dataset

FAST = TrainConfig(epochs=3, batch_size=32, optimizer="adam", patience=100)


@pytest.fixture(scope="module")
def separable():
    """Bright discs vs pure noise: a patch set any working classifier separates (default patches:
    particles, background and off-centre views)."""
    rng = np.random.default_rng(7)
    images = {f"m{i}": synthetic_micrograph(rng, size=256, box_px=32, n=20, contrast=2.5) for i in range(4)}
    return extract_patches({k: v[0] for k, v in images.items()}, {k: v[1] for k, v in images.items()}, 32,
                           seed=0)


@pytest.fixture(scope="module")
def small(separable):
    """60 particle and background patches of the separable set: enough for the mechanics of training."""
    background = separable.hard & (separable.labels == 0)
    index = np.r_[np.flatnonzero(separable.labels == 1)[:30], np.flatnonzero(background)[:30]]
    return separable.subset(np.sort(index))


def weights(model):
    return torch.cat([p.detach().reshape(-1) for p in model.net.parameters()])


def test_learns_a_trivially_separable_patch_set(separable):
    model = train_model(separable, TrainConfig(epochs=12), progress=False)  # the default SGD recipe
    assert model.info["training"]["learning_rate"] == 0.01
    assert model.info["val_accuracy"] >= 0.95
    rng = np.random.default_rng(99)
    image, xy = synthetic_micrograph(rng, size=256, box_px=32, n=20, contrast=2.5)
    fresh = extract_patches(image, xy, 32, seed=1)
    assert evaluate_patches(model, fresh)["accuracy"] >= 0.9
    assert model.box_px == 32 and model.arch == "deeppicker"
    assert model.info["trained_on"]["n_patches"] == len(separable)
    assert model.info["trained_on"]["micrographs"] == ["m0", "m1", "m2", "m3"]
    held_out = split_validation(separable.labels, 1 / 9, 0, groups=particle_groups(separable))[1]
    assert model.info["training"]["n_val"] == len(held_out) == pytest.approx(len(separable) / 9, rel=0.25)


def test_off_centre_targets_are_fitted_and_left_out_of_the_accuracy(small):
    # The particle patches again as "off-centre views" with a low or a high target: the same pixels, so
    # only the targets can make the two trainings differ, and the one told "high" must score them higher.
    particles = np.flatnonzero(small.labels == 1)
    n = len(particles)

    def with_views(target: float) -> PatchSet:
        return PatchSet(np.r_[small.patches, small.patches[particles]], np.r_[small.labels, np.zeros(n)],
                        np.r_[small.source, small.source[particles]], np.r_[small.x, small.x[particles]],
                        np.r_[small.y, small.y[particles]], small.metadata,
                        targets=np.r_[small.labels, np.full(n, target)])

    assert with_views(0.0).n_off_centre == 0  # a target equal to the label is a plain background patch
    config = TrainConfig(epochs=4, batch_size=32, optimizer="adam", patience=100, val_fraction=0.0)
    scores = {}
    for target in (0.05, 0.95):
        ps = with_views(target)
        assert ps.n_off_centre == n
        model = train_model(ps, config, progress=False)
        assert evaluate_patches(model, ps)["n"] == len(small)  # accuracy on particle and background only
        with torch.no_grad():
            logits = model.net.eval()(torch.from_numpy(small.patches[particles]).unsqueeze(1))
        scores[target] = float(torch.sigmoid(logits).mean())
    assert scores[0.95] > scores[0.05] + 0.05, scores


def test_deepem_network_trains(small):
    model = train_model(small, TrainConfig(arch="deepem", epochs=2, optimizer="adam", patience=100),
                        progress=False)
    assert model.arch == "deepem" and model.info["epochs_run"] == 2


def test_same_seed_same_model_other_seed_other_model(small):
    a, b = (train_model(small, FAST, progress=False) for _ in range(2))
    c = train_model(small, TrainConfig(**{**FAST.to_dict(), "seed": 1}), progress=False)
    assert torch.equal(weights(a), weights(b))
    assert not torch.equal(weights(a), weights(c))


def test_resume_from_checkpoint_equals_an_uninterrupted_run(small, tmp_path):
    full = train_model(small, FAST, progress=False)
    ckpt = tmp_path / "m.pt.ckpt"
    half = TrainConfig(**{**FAST.to_dict(), "epochs": 1})
    train_model(small, half, progress=False, checkpoint=ckpt)
    assert ckpt.is_file()
    resumed = train_model(small, FAST, progress=False, checkpoint=ckpt, resume=True)
    assert resumed.info["epochs_run"] == 3 and len(resumed.info["history"]) == 3
    assert torch.equal(weights(full), weights(resumed))
    other = TrainConfig(**{**FAST.to_dict(), "seed": 3})
    with pytest.raises(ConfigError, match="other settings.*seed"):
        train_model(small, other, progress=False, checkpoint=ckpt, resume=True)
    with pytest.raises(ConfigError, match="other patches"):
        train_model(small.subset(np.arange(len(small) - 2)), FAST, progress=False, checkpoint=ckpt,
                    resume=True)


def test_early_stopping_keeps_the_best_epoch(small):
    model = train_model(small, TrainConfig(epochs=20, optimizer="adam", learning_rate=0.003, patience=2,
                                           min_patience_steps=0), progress=False)
    history = model.info["history"]
    best = min(history, key=lambda r: r["val_loss"])
    assert model.info["best_epoch"] == best["epoch"]
    assert model.info["val_accuracy"] == best["val_accuracy"]
    assert model.info["stopped_early"] == (model.info["epochs_run"] < 20)
    assert model.info["epochs_run"] - model.info["best_epoch"] <= 2


def test_a_small_patch_set_waits_enough_steps_before_stopping(small):
    from deeppick.train import effective_patience

    config = TrainConfig(epochs=40, optimizer="adam", learning_rate=0.003, patience=2, batch_size=32)
    steps = -(-len(small) * 8 // 9 // 32)  # about an epoch's optimiser steps
    assert effective_patience(config, 10_000) == 2  # many steps an epoch: the patience in epochs holds
    assert effective_patience(config, 32) == 250 and effective_patience(replace(config, min_patience_steps=0), 32) == 2
    waiting = replace(config, min_patience_steps=12 * steps)
    model = train_model(small, waiting, progress=False)
    patience = model.info["training"]["patience_epochs"]
    assert patience == effective_patience(waiting, model.info["training"]["n_train"]) >= 10
    # it stops only `patience` epochs after its best one, or at the cap
    assert model.info["epochs_run"] == 40 or model.info["epochs_run"] - model.info["best_epoch"] == patience


def test_fine_tuning_starts_from_init_and_leaves_it_alone(small):
    base = train_model(small, TrainConfig(arch="deepem", epochs=2, optimizer="adam"), progress=False)
    before = weights(base).clone()
    tuned = train_model(small, TrainConfig(epochs=1, optimizer="adam"), init=base, progress=False)
    assert tuned.arch == "deepem"  # the init's network, not config.arch
    assert tuned.info["training"]["init"] is not None
    assert torch.equal(weights(base), before)
    assert not torch.equal(weights(tuned), before)


def test_bad_training_input_is_a_config_error(small):
    only_particles = small.subset(np.flatnonzero(small.labels == 1))
    with pytest.raises(ConfigError, match="needs both"):
        train_model(only_particles, FAST, progress=False)
    with pytest.raises(ConfigError, match="prepared with"):
        train_model(small, FAST, preprocess=PreprocessConfig(clip_sd=2.0), progress=False)
    mixed = PatchSet(small.patches, small.labels, small.source, small.x, small.y,
                     {**small.metadata, "box_px": None})
    with pytest.raises(ConfigError, match="mixes box sizes"):
        train_model(mixed, FAST, progress=False)
    with pytest.raises(ConfigError, match="optimiser"):
        train_model(small, TrainConfig(optimizer="lbfgs"), progress=False)


def test_validation_split_is_stratified_and_disjoint():
    labels = np.r_[np.ones(90), np.zeros(180)].astype(np.uint8)
    train, val = split_validation(labels, 1 / 9, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 270
    assert labels[val].sum() == 10 and (labels[val] == 0).sum() == 20
    assert not np.array_equal(val, split_validation(labels, 1 / 9, seed=1)[1])


def test_validation_holds_out_whole_particles_with_their_off_centre_views(separable):
    groups = particle_groups(separable)
    train, val = split_validation(separable.labels, 1 / 9, seed=0, groups=groups)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(separable)
    off_centre = ~separable.hard
    assert off_centre.sum() >= 4 * separable.n_positive - 10  # the test means something: many views
    # every off-centre view belongs to the particle it was cut beside, and shares its side of the split
    particles = np.flatnonzero(separable.labels == 1)
    assert set(groups[off_centre]) <= set(particles)
    for particle in particles[np.isin(particles, val)]:
        assert np.isin(np.flatnonzero(groups == particle), val).all()
    # background far from every particle is its own group; about 1/9 of particles and of the rest validate
    n_val_particles = int(np.isin(particles, val).sum())
    assert n_val_particles == round(len(particles) / 9)
    # patch by patch, a particle's views fall on both sides
    loose_train, loose_val = split_validation(separable.labels, 1 / 9, seed=0)
    assert any(np.isin(np.flatnonzero(groups == p), loose_train).any() for p in particles[np.isin(particles,
                                                                                                  loose_val)])


def test_augmentation_applies_only_dihedral_moves():
    x = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(2, 1, 64, 64).repeat(20, 1, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0), TrainConfig())
    seen = set()
    for xi, oi in zip(x, out):
        moves = [k + 4 * f for f in (0, 1) for k in range(4)
                 if torch.equal(oi, torch.rot90(xi, k, dims=(-2, -1)).flip(-1) if f else torch.rot90(xi, k, dims=(-2,
                                                                                                                  -1)))]
        assert len(moves) == 1
        seen.add(moves[0])
    assert len(seen) >= 5  # the moves really vary
    jittered = augment(x, torch.Generator().manual_seed(0), TrainConfig(rotate_flip=False, noise_sd=0.5,
                                                                         contrast_jitter=0.2))
    assert not torch.equal(jittered, x)
    assert float((jittered - x).std()) > 0.1


def test_train_command_on_a_dataset_keeps_validation_micrographs_out(tmp_path):
    root = write_dataset(tmp_path / "ds", np.random.default_rng(3))
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(cli, ["train", "--dataset", str(root), "-o", str(out), "--epochs", "3",
                                      "--optimizer", "adam", "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert model.box_px == 32
    assert model.info["trained_on"]["micrographs"] == ["mic00", "mic01"]
    assert model.info["held_out_patches"]["n"] == 24
    assert 0 <= model.info["held_out_patches"]["accuracy"] <= 1
    assert (tmp_path / "model.pt.ckpt").is_file()
    # the threshold is chosen on the valid micrographs, or the output says why not
    if model.threshold is not None:
        assert model.info["threshold"]["micrographs"] == ["mic02"] and "F2-optimal threshold" in result.output
        # so are the peak window and the cleaning, and pick will follow them
        assert f"peak window {model.postprocess.peak_window_box:g} box" in result.output
        assert len(model.info["postprocess_tried"]) == 6
    else:
        assert "threshold not chosen" in result.output
    # resume with more epochs continues the same run
    result = CliRunner().invoke(cli, ["train", "--dataset", str(root), "-o", str(out), "--epochs", "4",
                                      "--optimizer", "adam", "--quiet", "--resume"])
    assert result.exit_code == 0, result.output
    assert load_model(out).info["epochs_run"] == 4


def test_train_command_on_a_patch_set_and_its_errors(tmp_path, separable):
    save_patch_set(separable, tmp_path / "p.npz")
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(cli, ["train", "--patches", str(tmp_path / "p.npz"), "-o", str(out),
                                      "--epochs", "1", "--arch", "deepem", "--quiet"])
    assert result.exit_code == 0, result.output
    assert load_model(out).arch == "deepem"
    result = CliRunner().invoke(cli, ["train", "--patches", str(tmp_path / "missing.npz"), "-o", str(out)])
    assert result.exit_code == 2 and "no such patch set" in result.output


def test_train_command_fine_tunes_the_general_model_with_init(tmp_path):
    from deeppick.pretrain import load_general_model

    root = write_dataset(tmp_path / "ds", np.random.default_rng(5))
    general = load_general_model()
    out = tmp_path / "tuned.pt"
    result = CliRunner().invoke(cli, ["train", "--dataset", str(root), "-o", str(out), "--epochs", "1",
                                      "--optimizer", "adam", "--arch", "deepem", "--init", "general", "--quiet"])
    assert result.exit_code == 0, result.output
    tuned = load_model(out)
    # the general model's network and preparation, the dataset's box, and the origin on record
    assert tuned.arch == general.arch == "deeppicker" and tuned.preprocess == general.preprocess
    assert tuned.box_px == 32 and tuned.info["training"]["init"] == general.info["name"]
    # one epoch of Adam moves the weights only a little from where they started: the general model's
    first = [w for w in (general.net.state_dict(), tuned.net.state_dict())]
    key = next(k for k in first[0] if k.endswith("weight"))
    a, b = first[0][key].flatten(), first[1][key].flatten()
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.9
    # a preparation other than the initial model's is refused in one line
    result = CliRunner().invoke(cli, ["train", "--dataset", str(root), "-o", str(tmp_path / "x.pt"),
                                      "--init", "general", "--highpass", "64", "--quiet"])
    assert result.exit_code == 2 and "initial model" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["train", "--dataset", str(root), "-o", str(tmp_path / "x.pt"),
                                      "--init", str(tmp_path / "missing.pt"), "--quiet"])
    assert result.exit_code == 2 and "missing.pt" in result.output and len(result.output.strip().splitlines()) == 1


def test_box_size_must_match_the_patches(small):
    with pytest.raises(ConfigError, match="32-px box"):
        train_model(small, FAST, box_px=40, progress=False)


def test_positive_unlabelled_training_runs_and_its_prior_follows_the_labelled_fraction(separable):
    from deeppick.train import unlabelled_prior

    few, most = unlabelled_prior(separable, 0.1), unlabelled_prior(separable, 0.9)
    assert 0 < most < few <= 0.5 and unlabelled_prior(separable, 1.0) == 0.0
    model = train_model(separable, TrainConfig(epochs=6, unlabelled_prior=few), progress=False)
    assert model.info["training"]["unlabelled_prior"] == few and model.info["val_accuracy"] >= 0.8
    with pytest.raises(ConfigError, match="labelled fraction"):
        unlabelled_prior(separable, 0)


def test_source_heads_train_one_head_per_dataset_and_keep_only_the_generic_one(separable, tmp_path):
    from deeppick.train import dataset_heads

    # two "datasets": the separable set's micrographs m0, m1 and m2, m3
    sources = [dict(s, dataset="a" if s["micrograph"] in ("m0", "m1") else "b")
               for s in separable.metadata["sources"]]
    two = PatchSet(separable.patches, separable.labels, separable.source, separable.x, separable.y,
                   {**separable.metadata, "sources": sources}, separable.targets)
    heads = dataset_heads(two)
    assert set(heads.tolist()) == {0, 1}
    assert all(sources[s]["dataset"] == "ab"[h] for s, h in zip(two.source, heads))
    config = TrainConfig(**{**FAST.to_dict(), "source_heads": True})
    model = train_model(two, config, progress=False)
    assert model.net.body[-1].out_channels == 2 and model.info["source_heads"] == 2
    assert torch.equal(weights(model), weights(train_model(two, config, progress=False)))  # same seed, same
    assert not torch.equal(weights(model), weights(train_model(two, FAST, progress=False)))
    from deeppick.model import save_model

    save_model(model, tmp_path / "m.pt")  # the plain network: a model file like any other
    x = torch.from_numpy(two.patches[:8]).unsqueeze(1)
    torch.testing.assert_close(load_model(tmp_path / "m.pt").score_patches(x), model.score_patches(x))
    with pytest.raises(ConfigError, match="source heads"):
        TrainConfig(arch="deepem", source_heads=True).check()
