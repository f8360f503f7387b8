"""``extract``, ``train``, ``fit``, ``threshold``: from labelled micrographs to a tuned model."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from ._labels import labelled_patches, patch_source_options
from ._shared import (LibraryDefault, check_output_file, given, highpass_option, load_model_file, preprocess_config,
                      user_errors)


@click.command()
@patch_source_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="patch set to write (.npz)")
@user_errors
def extract(output, **options):
    """Crop labelled training patches (particles and background) into a reusable patch set."""
    from ..patches import save_patch_set

    check_output_file(output, "patch set")
    ps, _ = labelled_patches(**options)
    save_patch_set(ps, output)
    click.echo(f"wrote {ps.summary()} to {output}")


@click.command()
@click.option("--patches", type=click.Path(path_type=Path), help="patch set from 'deeppick extract'")
@click.option("--positives", type=click.Path(path_type=Path),
              help="an MRC stack of boxed particles (e.g. RELION's extracted particles of good 2-D classes), "
                   "with --negatives-stack and --box-px (the particle's box in the stack's pixels)")
@click.option("--negatives-stack", type=click.Path(path_type=Path),
              help="an MRC stack of boxed background or junk (e.g. the particles of junk classes), with --positives")
@patch_source_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="model file to write (.pt)")
@click.option("--arch", type=click.Choice(["deeppicker", "deepem", "wide"]), cls=LibraryDefault,
              library="train:TrainConfig.arch",
              help="network (with --init: the initial model's)")
@click.option("--init", "init_model",
              help="fine-tune this model instead of starting from random weights: a model file, or 'general' "
                   "for the shipped general model; its network and micrograph preparation are kept, the box is "
                   "--box-px's (docs/measurements.md, How little must be labelled)")
@click.option("--epochs", type=int, cls=LibraryDefault, library="train:TrainConfig.epochs",
              help="most epochs (early stopping may end sooner)")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), cls=LibraryDefault,
              library="train:TrainConfig.optimizer")
@click.option("--lr", type=float, help="learning rate [default: 0.01 for sgd, 0.001 for adam]")
@click.option("--batch-size", type=int, cls=LibraryDefault, library="train:TrainConfig.batch_size")
@click.option("--patience", type=int, cls=LibraryDefault, library="train:TrainConfig.patience",
              help="epochs without improvement before stopping (more when an epoch is fewer optimiser steps than "
                   "TrainConfig.min_patience_steps needs: few labels)")
@click.option("--no-augment", is_flag=True, help="no random 90° rotations and flips")
@click.option("--noise", type=float, cls=LibraryDefault, library="train:TrainConfig.noise_sd",
              help="SD of Gaussian noise added to patches")
@click.option("--contrast", type=float, cls=LibraryDefault, library="train:TrainConfig.contrast_jitter",
              help="contrast jitter: scale by 1 ± this")
@click.option("--device", help="torch device (default: cuda when present, else cpu)")
@click.option("--resume", is_flag=True, help="continue from OUTPUT.ckpt, the checkpoint written each epoch")
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option("--validation", type=click.Path(path_type=Path),
              help="dataset folder of held-out labelled micrographs for the F2 threshold "
                   "(default: the --dataset's valid split)")
@user_errors
def train(patches, positives, negatives_stack, output, arch, init_model, epochs, optimizer, lr, batch_size, patience,
          no_augment, noise, contrast, device, resume, quiet, validation, **options):
    """Train a particle classifier on a patch set, or on micrographs with their particle coordinates.

    The validation micrographs of a --dataset are never trained on: the model's patch accuracy on them
    is reported, and the score threshold that maximises F2 on them is stored in the model file, so
    'deeppick pick' needs no threshold (--validation DIR names other held-out micrographs). The peak
    window and the large-region cleaning that give the best AP there are stored too. With --init the
    network starts from another model's weights (e.g. the shipped general model) and is fine-tuned.
    """
    from ..model import save_model
    from ..patches import load_patch_set
    from ..train import TrainConfig
    from ..tuning import train_picker, training_summary

    check_output_file(output, "model")
    init = None
    if init_model is not None:
        from ..pretrain import load_general_model

        init = load_general_model() if init_model == "general" else load_model_file(Path(init_model))
    ds = None
    if positives is not None or negatives_stack is not None:
        if positives is None or negatives_stack is None or not options["box_px"]:
            raise ConfigError("training from particle stacks needs --positives, --negatives-stack and --box-px (the "
                              "particle's box in the stacks' pixels)")
        if patches is not None or options["dataset"] is not None or options["micrographs"] is not None:
            raise ConfigError("give either the stacks or --patches / --dataset / --micrographs, not both")
        from ..patches import patches_from_stacks

        prep = init.preprocess if init is not None else preprocess_config(options["highpass"])
        ps = patches_from_stacks(positives, negatives_stack, options["box_px"], preprocess=prep)
    elif patches is not None:
        if options["dataset"] is not None or options["micrographs"] is not None:
            raise ConfigError("give either --patches or --dataset / --micrographs, not both")
        if options["highpass"] is not None:
            raise ConfigError(f"--highpass applies where patches are cut, and {patches} was cut already (its "
                              f"preparation is stored in it): give it to 'deeppick extract', or train from "
                              f"--dataset / --micrographs")
        ps = load_patch_set(patches)
    else:
        ps, ds = labelled_patches(progress=not quiet, preprocess=init.preprocess if init else None, **options)
    held_out = None
    if validation is not None:
        from ..datasets import load_dataset

        vds = load_dataset(validation)
        held_out = (vds.paths(), vds.picks)
    elif ds is not None and ds.paths("valid") and options["split"] != "valid":
        held_out = (ds.paths("valid"), ds.picks)
    start = f", fine-tuning {init.info.get('name') or init_model}" if init is not None else ""
    click.echo(f"training on {ps.summary()}{start}")
    config = TrainConfig(**given(arch=arch, optimizer=optimizer, learning_rate=lr, batch_size=batch_size,
                                 epochs=epochs, patience=patience, noise_sd=noise, contrast_jitter=contrast,
                                 seed=options["seed"], device=device), rotate_flip=not no_augment)
    model = train_picker(ps, held_out=held_out, train_config=config, init=init, progress=not quiet,
                         checkpoint=output.with_name(output.name + ".ckpt"), resume=resume)
    save_model(model, output)
    checkpoint = output.with_name(output.name + ".ckpt")
    click.echo(f"wrote {output}: {training_summary(model)}; {checkpoint.name} is kept beside it, so --resume with "
               "more --epochs continues this training (delete it when done)")


@click.command()
@click.option("--dataset", type=click.Path(path_type=Path),
              help="dataset folder with train and valid splits (dataset.json, micrographs/, coords/)")
@click.option("--micrographs", type=click.Path(path_type=Path),
              help="instead of --dataset: micrographs (a folder or file), with --coords; the last 15 % of those "
                   "with labels (at least one) are held out to choose the threshold on")
@click.option("--coords", type=click.Path(path_type=Path),
              help="with --micrographs: particle centres (coordinate files, RELION's particles STAR, cryoSPARC's .cs)")
@click.option("--classes", help="with --coords from a 2-D classification: use only these classes, e.g. 1,4,7")
@click.option("--diameter-px", type=float,
              help="with --micrographs: the particle's diameter in px (boxes of 1.0× and 1.3× it are tried)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="model file to write (.pt)")
@click.option("--epochs", type=int, cls=LibraryDefault, library="train:TrainConfig.epochs",
              help="most epochs per model trained (early stopping may end sooner)")
@click.option("--max-micrographs", type=int, help="train on at most the first N train micrographs")
@click.option("--seed", type=int, cls=LibraryDefault, library="train:TrainConfig.seed", help="random seed")
@click.option("--quiet", is_flag=True, help="no progress bars")
@highpass_option
@user_errors
def fit(dataset, micrographs, coords, classes, diameter_px, output, epochs, max_micrographs, seed, quiet, highpass):
    """Train on labelled micrographs and tune on held-out ones (what the benchmarks run).

    Trains models with and without off-centre views, then per box (1.0× and 1.3× the particle diameter)
    and low-pass, keeps the one with the best AP on the valid split (or held-out train micrographs),
    decides whether the large-region cleaning helps and how wide the peak window is (narrower where
    particles crowd), and stores the F2-optimal threshold: 'deeppick pick' then needs only the model.
    """
    from ..model import save_model
    from ..train import TrainConfig
    from ..tuning import fit_dataset, recipe_summary

    check_output_file(output, "model")
    if (dataset is None) == (micrographs is None or coords is None):
        raise ConfigError("give the labelled micrographs as --dataset DIR, or as --micrographs DIR --coords FILE|DIR "
                          "--diameter-px N")
    if dataset is not None:
        from ..datasets import load_dataset

        ds = load_dataset(dataset)
    else:
        from ..datasets import dataset_from
        from ..io import labels_on, list_micrographs, parse_classes, read_picks

        if not diameter_px:
            raise ConfigError("--diameter-px is needed with --micrographs: the boxes fit tries are multiples of it")
        picks, use = labels_on(read_picks(coords, classes=parse_classes(classes)), list_micrographs(micrographs),
                               source=coords)
        use.classes = parse_classes(classes)
        click.echo(f"--coords: {use.summary()}", err=True)
        ds = dataset_from(micrographs, picks, name=Path(micrographs).name, diameter_px=diameter_px)
    model = fit_dataset(ds, train_config=TrainConfig(**given(epochs=epochs, seed=seed)),
                        max_micrographs=max_micrographs, progress=not quiet, preprocess=preprocess_config(highpass))
    save_model(model, output)
    info = model.info
    click.echo(f"wrote {output}: {recipe_summary(model)}; held-out AP {info['threshold']['ap']:.3f}, "
               f"F2 {info['threshold']['fbeta']:.3f} at threshold {model.threshold:.3f}")


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="the model to refine")
@click.option("--micrographs", required=True, type=click.Path(path_type=Path),
              help="the micrographs whose picks were verified (a folder or file)")
@click.option("--accepted", required=True, type=click.Path(path_type=Path),
              help="picks verified as particles (true positives): coordinate files, a particles STAR or .cs")
@click.option("--accepted-classes", help="with --accepted from a 2-D classification: these (good) classes")
@click.option("--rejected", type=click.Path(path_type=Path),
              help="picks verified as not particles (false positives): coordinate files, a particles STAR or .cs")
@click.option("--rejected-classes", help="with --rejected from a 2-D classification: these (junk) classes")
@click.option("--validation", type=click.Path(path_type=Path),
              help="a dataset folder of held-out labelled micrographs: the threshold is chosen again there "
                   "[default: the model's is kept]")
@click.option("--epochs", type=int, cls=LibraryDefault, library="train:TrainConfig.epochs",
              help="most fine-tuning epochs")
@click.option("--seed", type=int, cls=LibraryDefault, library="train:TrainConfig.seed", help="random seed")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="refined model to write (.pt)")
@click.option("--quiet", is_flag=True, help="no progress bars")
@user_errors
def refine(model_path, micrographs, accepted, accepted_classes, rejected, rejected_classes, validation, epochs, seed,
           output, quiet):
    """DeepEM's loop: fine-tune a model on picks verified on new micrographs (accepted and rejected)."""
    from ..io import empty_picks, labels_on, list_micrographs, parse_classes, read_picks
    from ..model import save_model
    from ..train import TrainConfig
    from ..tuning import refine_picker, training_summary

    check_output_file(output, "model")
    model = load_model_file(model_path)
    paths = list_micrographs(micrographs)
    good, use = labels_on(read_picks(accepted, classes=parse_classes(accepted_classes)), paths, source=accepted)
    click.echo(f"--accepted: {use.summary()}", err=True)
    bad = empty_picks()
    if rejected is not None:
        bad, use = labels_on(read_picks(rejected, classes=parse_classes(rejected_classes)), paths, source=rejected)
        click.echo(f"--rejected: {use.summary()}", err=True)
    held_out = None
    if validation is not None:
        from ..datasets import load_dataset

        vds = load_dataset(validation)
        held_out = (vds.paths(), vds.picks)
    tuned = refine_picker(model, paths, good, bad, held_out=held_out,
                          train_config=TrainConfig(**given(epochs=epochs, seed=seed)), progress=not quiet)
    save_model(tuned, output)
    kept = "" if held_out is not None else f"; the model's threshold {_threshold(tuned)} is kept"
    click.echo(f"wrote {output}: refined on {len(good)} accepted and {len(bad)} rejected picks; "
               f"{training_summary(tuned) if held_out is not None else _patch_line(tuned)}{kept}")


def _threshold(model) -> str:
    return "none" if model.threshold is None else f"{model.threshold:.3g}"


def _patch_line(model) -> str:
    info = model.info
    return (f"held-out patch accuracy {info['val_accuracy']:.3f}" if info.get("val_accuracy") is not None
            else "no held-out patches")


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="model file to update")
@click.option("--dataset", type=click.Path(path_type=Path), help="dataset folder whose split is used")
@click.option("--split", default="valid", show_default=True, help="with --dataset: the held-out split")
@click.option("--validation", type=click.Path(path_type=Path),
              help="a dataset folder of held-out labelled micrographs (all of them are used)")
@click.option("--beta", type=float, cls=LibraryDefault, library="metrics:BETA", help="F-beta to maximise")
@click.option("--threshold-only", is_flag=True,
              help="keep the model's cleaning and peak window; choose only the threshold")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="write here instead of updating --model")
@user_errors
def threshold(model_path, dataset, split, validation, beta, threshold_only, output):
    """Choose the F-beta-optimal score threshold on held-out labelled micrographs; store it in the model.

    Unless --threshold-only is given, the region cleaning (on/off) and the peak window (0.8, 0.6, 0.4 box)
    are chosen on the same micrographs first, by AP, as 'train' and 'fit' do.
    """
    from ..datasets import load_dataset
    from ..metrics import BETA
    from ..model import save_model
    from ..tuning import choose_postprocess, postprocess_summary, select_threshold

    if (dataset is None) == (validation is None):
        raise ConfigError("give exactly one of --dataset DIR (with --split) or --validation DIR")
    ds = load_dataset(dataset or validation)
    paths = ds.paths(split) if dataset is not None else ds.paths()
    beta = BETA if beta is None else beta
    model = load_model_file(model_path)
    if threshold_only:
        model = select_threshold(model, paths, ds.picks, beta=beta)
    else:
        model = choose_postprocess(model, paths, ds.picks, beta=beta)
    save_model(model, output or model_path)
    info, post = model.info["threshold"], postprocess_summary(model)
    click.echo(f"threshold {model.threshold:.3g} (F{beta:g} {info['fbeta']:.3f}, AP {info['ap']:.3f} on "
               f"{len(paths)} micrographs; {post}) stored in {output or model_path}")
