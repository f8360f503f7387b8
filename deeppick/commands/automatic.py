"""``pretrain`` and ``autopick``: a general model, and picking a new molecule with no labels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ._shared import (PICK_FORMATS, LibraryDefault, check_output_file, given, highpass_option, load_model_file,
                      pick_config, preprocess_config, report_failures, resolve_workers, scan_options, user_errors,
                      workers_options)
from .picking import edge_margin_option, peak_window_option, step_line

# a given box below this × the estimated diameter gets a note: the fine-tuned model's weakest boxes are those
# that crop the particle (docs/measurements.md, *Ranking with dark discs*); the estimate is approximate, so
# the note waits for a clear gap
SMALL_BOX_DIAMETERS = 0.8


def parse_factors(text: str | None) -> tuple[float, ...] | None:
    """``"0.8,1,1.2"`` → (0.8, 1.0, 1.2); a bad list is a usage error that names it."""
    if text is None:
        return None
    try:
        factors = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of numbers, e.g. 0.8,1,1.2,1.4,1.6")
    if min(factors) <= 0:
        raise click.BadParameter(f"'{text}': box factors must be positive")
    return factors


@click.command()
@click.option("--dataset", "datasets", required=True, multiple=True, type=click.Path(path_type=Path),
              help="a dataset folder of one molecule, real or simulated (repeat: one per molecule)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="general model file to write (.pt)")
@click.option("--positives", type=int, cls=LibraryDefault, library="pretrain:PretrainConfig.total_positives",
              help="particles in the mix, shared equally by the molecules (DeepPicker §4.3)")
@click.option("--max-micrographs", type=int, help="use at most the first N train micrographs of each dataset")
@click.option("--max-valid", type=int, cls=LibraryDefault, library="pretrain:PretrainConfig.max_valid_micrographs",
              help="held-out micrographs per dataset for the pooled F2 threshold")
@click.option("--epochs", type=int, cls=LibraryDefault, library="pretrain:PRETRAIN_TRAINING.epochs",
              help="most epochs (early stopping may end sooner)")
@click.option("--box-factors", callback=lambda ctx, param, value: parse_factors(value), cls=LibraryDefault,
              library="pretrain:PretrainConfig.box_factors",
              help="cut each molecule's particles at these boxes × its diameter, comma-separated (1: one box per "
                   "molecule, as DeepPicker)")
@click.option("--junk-share", type=click.FloatRange(0, 1), cls=LibraryDefault,
              library="pretrain:PretrainConfig.junk_share",
              help="share of the background centred on the contaminants a dataset marks (simulated junk/)")
@click.option("--background", "backgrounds", multiple=True, type=click.Path(path_type=Path),
              help="a dataset folder of particle-free micrographs (ice, carbon, empty holes) taught as background "
                   "(repeat; e.g. deeppick simulate --empty)")
@click.option("--empty-share", type=click.FloatRange(0, 1, max_open=True), cls=LibraryDefault,
              library="pretrain:PretrainConfig.empty_share",
              help="share of all background from the --background micrographs")
@click.option("--seed", type=int, cls=LibraryDefault, library="pretrain:PretrainConfig.seed", help="random seed")
@click.option("--quiet", is_flag=True, help="no progress bars")
@highpass_option
@user_errors
def pretrain(datasets, output, positives, max_micrographs, max_valid, epochs, box_factors, junk_share, backgrounds,
             empty_share, seed, quiet, highpass):
    """Train a general model on several molecules (balanced mix) for picking new ones without labels."""
    from ..model import save_model
    from ..pretrain import PRETRAIN_TRAINING, PretrainConfig, pretrain as run_pretrain

    check_output_file(output, "general model")
    config = PretrainConfig(**given(total_positives=positives, max_train_micrographs=max_micrographs,
                                    max_valid_micrographs=max_valid, box_factors=box_factors, junk_share=junk_share,
                                    empty_share=empty_share, seed=seed))
    model = run_pretrain(list(datasets), config=config,
                         train_config=replace(PRETRAIN_TRAINING, **given(epochs=epochs, seed=seed)),
                         progress=not quiet, preprocess=preprocess_config(highpass), background=list(backgrounds))
    save_model(model, output)
    sources = model.info["pretrain"]["sources"]
    mix = ", ".join(f"{s['dataset']} {s['n_positive']} (boxes {', '.join(f'{b:g}' for b in s['boxes_px'])})"
                    for s in sources if not s.get("particle_free"))
    click.echo(f"wrote {output}: particles per molecule: {mix}; held-out patch accuracy "
               f"{model.info['val_accuracy']:.3f}; pooled F2 threshold {model.threshold:.3g}")


@click.command()
@click.option("--micrographs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="a folder of micrographs of the new molecule, or files (repeat the option)")
@click.option("--box-px", type=float,
              help="box side of the new molecule, micrograph px: one that holds its longest view [default: estimated "
                   "from the micrographs, where the general model's picks are strongest]")
@click.option("--box-a", type=float, help="box side in Å instead of --box-px, by the pixel size the MRC headers store")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="folder for one coordinate file per micrograph and the fine-tuned model")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="general model [default: the one shipped with deeppick]")
@click.option("--iterations", type=int, cls=LibraryDefault, library="autopick:AutopickConfig.iterations",
              help="self-training rounds (0: no fine-tuning)")
@click.option("--top", type=int, help="particles to self-train on: the best N candidates, even below the threshold "
              "[default: half the picks above the threshold, at most AutopickConfig.max_top]")
@click.option("--epochs", type=int, cls=LibraryDefault, library="pretrain:PRETRAIN_TRAINING.epochs",
              help="most fine-tuning epochs")
@click.option("--general-box", type=click.Choice(["estimate", "given"]), cls=LibraryDefault,
              library="autopick:AutopickConfig.general_box",
              help="the box the general model picks the pseudo-labels at: 'estimate', where its picks are strongest "
                   "in these micrographs; 'given', the box of --box-px (the fine-tuned model's, raised where it "
                   "crops the particle: --min-box-diameters)")
@click.option("--min-box-diameters", type=click.FloatRange(min=0), cls=LibraryDefault,
              library="autopick:AutopickConfig.min_box_diameters",
              help="the fine-tuned model's box is at least this × the particle diameter the micrographs show, so a "
                   "--box-px that crops the particle is raised for it (the picks are centres either way; 0: "
                   "exactly --box-px)")
@click.option("--disc-rank", type=click.Choice(["all", "picks", "off"]), cls=LibraryDefault,
              library="autopick:AutopickConfig.disc_rank",
              help="rank candidates by the network's score and by how dark a disc of the particle's size around them "
                   "is, equally: in 'all' passes (the pseudo-labels too), only the 'picks' written, or 'off'")
@click.option("--off-centre", "off_centre_ratio", type=click.FloatRange(min=0), cls=LibraryDefault,
              library="autopick:AutopickConfig.off_centre_ratio",
              help="off-centre views per self-training particle, with a soft target that falls with the distance to "
                   "the nearest top pick (0: DeepPicker's patches)")
@click.option("--format", "fmt", default="star", show_default=True,
              type=click.Choice(PICK_FORMATS), help="coordinate format")
@click.option("--threshold", type=float, help="score cut [default: the general model's, see the docs]")
@click.option("--keep-all", is_flag=True, help="also write sub-threshold candidates, to re-threshold later")
@scan_options
@edge_margin_option
@peak_window_option
@click.option("--seed", type=int, cls=LibraryDefault, library="autopick:AutopickConfig.seed", help="random seed")
@click.option("--overwrite", is_flag=True,
              help="fine-tune and pick again even where an earlier run left its model and picks in OUTPUT")
@workers_options
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option("--report", "with_report", is_flag=True, help="also write OUTPUT/report.html ('deeppick report')")
@user_errors
def autopick(micrographs, box_px, box_a, output, model_path, iterations, top, epochs, general_box,
             min_box_diameters, disc_rank, off_centre_ratio,
             fmt, threshold, keep_all, step_px, no_rotations, edge_margin, peak_window, seed, overwrite, workers,
             dask_scheduler, quiet, with_report):
    """Pick a new molecule with no labels: general model, self-train on its top picks, pick again.

    Writes OUTPUT/autopick_model.pt once fine-tuned, then OUTPUT/<micrograph>.star as each is picked. No
    coordinate file is read. With too few picks above the threshold to self-train on, the general model's
    picks are written (it is then the model saved) and the summary says so. A rerun with the same options
    reuses the fine-tuned model and skips the micrographs already picked (with only another --threshold or
    --keep-all it reuses the model and picks them again); unreadable micrographs are left out and listed
    at the end (exit 2).
    """
    from ..autopick import AUTOPICK_MODEL, AutopickConfig, autopick as run_autopick
    from ..model import default_device
    from ..pipeline import effective_threshold
    from ..pretrain import PRETRAIN_TRAINING, load_general_model

    from ..errors import ConfigError
    from ..io import box_px_from_angstrom, list_micrographs

    check_output_file(output, "picks and the fine-tuned model", folder=True)
    if box_px is not None and box_a is not None:
        raise ConfigError("give the particle's box as --box-px N or --box-a Å, not both (or neither: estimated)")
    if box_a is not None:
        box_px = box_px_from_angstrom(box_a, list_micrographs(list(micrographs)))
    model = load_general_model(device=default_device()) if model_path is None else load_model_file(
        model_path, device=default_device())
    config = pick_config(model, step_px=step_px, no_rotations=no_rotations, threshold=threshold, keep_all=keep_all,
                         edge_margin=edge_margin, peak_window=peak_window)
    if edge_margin is None and peak_window is None:  # the window follows the particle's size, estimated
        config = replace(config, post=None)
    result = run_autopick(model, list(micrographs), box_px=box_px, out_dir=output,
                          config=AutopickConfig(**given(iterations=iterations, top=top, general_box=general_box,
                                                        disc_rank=disc_rank, off_centre_ratio=off_centre_ratio,
                                                        seed=seed),
                                      **({} if min_box_diameters is None else
                                         {"min_box_diameters": min_box_diameters or None})),
                          train_config=replace(PRETRAIN_TRAINING, **given(epochs=epochs, seed=seed)),
                          pick_config=config, fmt=fmt, progress=not quiet, resume=not overwrite,
                          workers=resolve_workers(workers), scheduler=dask_scheduler)
    if result.box_estimate is not None:
        estimate = result.box_estimate
        said = "estimated" if box_px is None else "given; the micrographs suggest"
        click.echo(f"box {result.given_box_px or result.box_px:g} px ({said} {estimate.box_px:g} px, a particle of "
                   f"about {estimate.diameter_px:.0f} px: {estimate.why})", err=True)
        fine_tuned = bool(result.model.info.get("autopick", {}).get("n_top"))
        if fine_tuned and result.given_box_px is not None and result.box_px > result.given_box_px:
            click.echo(f"the fine-tuned model works at box {result.box_px:g} px: the given {result.given_box_px:g} px "
                       f"crops the particle these micrographs show (about {estimate.diameter_px:.0f} px), and picks "
                       "are weakest in a frame that does not hold it; the picks are particle centres, to extract "
                       "at any box (--min-box-diameters 0 keeps the given box)", err=True)
        elif box_px is not None and box_px < SMALL_BOX_DIAMETERS * estimate.diameter_px:
            click.echo(f"note: box {box_px:g} px is smaller than the particle these micrographs show (about "
                       f"{estimate.diameter_px:.0f} px); picks are weakest at a box that does not hold the whole "
                       "particle: 1.0–1.3× its diameter holds it", err=True)
    if result.general_box_px != result.box_px:
        kept = ("its picks are written" if result.model.box_px == result.general_box_px else
                f"the fine-tuned model picks at {result.box_px:g} px")
        click.echo(f"the general model picked at box {result.general_box_px:g} px, where its picks are strongest; "
                   f"{kept}", err=True)
    if result.skipped is not None:
        trained = f"not self-trained: {result.skipped}"
    elif result.resumed:
        trained = f"reused the fine-tuned model in {output / AUTOPICK_MODEL}"
    else:
        trained = f"self-trained on the top {', '.join(str(n) for n in result.n_top) or 'no'} picks"
    summary = result.batch.summary(output, effective_threshold(result.model, config), keep_all)
    click.echo(f"{trained}; {summary}; {step_line(result.model, result.pick_config)}")
    if with_report:
        from .looking import write_report_for
        from .picking import REPORT_FILE

        write_report_for(output, list(micrographs), output / REPORT_FILE, model=result.model, threshold=threshold,
                         picks_fmt=fmt)
    report_failures(result.batch.failed)
