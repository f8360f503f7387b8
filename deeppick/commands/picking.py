"""``pick`` and ``evaluate``: a trained model's picks, and how they compare with references."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from ._shared import (PICK_FORMATS, LibraryDefault, check_output_file, load_model_file, pick_config, report_failures,
                      resolve_workers, scan_options, user_errors, workers_options)

# the post-processing options of pick and autopick; the model's stored choice is their default
top_option = click.option("--top", type=int, help="keep at most N picks per micrograph")
edge_margin_option = click.option(
    "--edge-margin", type=click.FloatRange(min=0),
    help="drop picks centred nearer the edge than this × box [default: the model's, learned from its training "
         "labels, else 0.5: the box inside the micrograph; 0 keeps all]")
peak_window_option = click.option(
    "--peak-window", type=click.FloatRange(min=0, min_open=True),
    help="one pick per window of this × box, picks ≥ half of it apart [default: the model's, chosen on held-out "
         "micrographs, else 0.8; lower it for crowded particles]")


REPORT_FILE = "report.html"  # what --report writes into the output folder


def step_line(model, config) -> str:
    """Which scan step is used (the scanner rounds the asked one to whole model px), and the dark-disc
    ranking where the model's post-processing has it (autopick's models)."""
    from ..pipeline import postprocess_config
    from ..scan import step_used

    model_step, step = step_used(config.scan, model.box_px, model.preprocess.model_px)
    line = (f"scanned every {step:g} micrograph px ({model_step} model px; asked {config.scan.step_px:g}) "
            f"{'with' if config.scan.rotations else 'without'} rotations")
    post = postprocess_config(model, config)
    if post.disc_rank_diameter_box is not None:
        disc_px, radius_box = post.disc_rank_diameter_box * model.box_px, post.disc_centre_radius_box
        centred = ("" if not radius_box else
                   f", each first moved onto the darkest disc within {radius_box * model.box_px:.0f} px")
        line += (f"; ranked by the network's score and a dark disc of {disc_px:.0f} px equally{centred} "
                 "(autopick --disc-rank off: the score alone)")
    return line


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="model file (.pt)")
@click.option("--micrographs", multiple=True, type=click.Path(path_type=Path),
              help="a folder of micrographs, or files (repeat the option)")
@click.option("--watch", type=click.Path(path_type=Path),
              help="instead of --micrographs: pick the micrographs of this folder as they appear (during collection), "
                   "each once its file has stopped growing; stops on Ctrl-C or --watch-timeout")
@click.option("--watch-timeout", type=click.FloatRange(min=0),
              help="with --watch: stop after this many seconds without a new micrograph [default: never]")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="folder for one coordinate file per micrograph")
@click.option("--format", "fmt", default="star", show_default=True,
              type=click.Choice(PICK_FORMATS), help="coordinate format")
@click.option("--threshold", type=float, help="score cut (default: the model's F2-optimal threshold)")
@click.option("--keep-all", is_flag=True, help="also write sub-threshold candidates, to re-threshold later")
@top_option
@scan_options
@click.option("--sd-range", nargs=2, type=float, help="keep patches whose SD is in [LO, HI] × micrograph SD")
@edge_margin_option
@peak_window_option
@click.option("--overwrite", is_flag=True,
              help="re-pick micrographs that already have an output file (needed when another model or other "
                   "settings wrote them)")
@workers_options
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--report", "with_report", is_flag=True, help="also write OUTPUT/report.html ('deeppick report')")
@user_errors
def pick(model_path, micrographs, watch, watch_timeout, output, fmt, threshold, keep_all, top, step_px, no_rotations,
         sd_range, edge_margin, peak_window, overwrite, workers, dask_scheduler, quiet, with_report):
    """Pick particles in micrographs with a trained model.

    Writes OUTPUT/<micrograph>.star (RELION: rlnCoordinateX/Y, rlnAutopickFigureOfMerit) by default,
    and OUTPUT/coordinate_files.star, the list of them that RELION's Particle extraction takes as its input
    coordinates (run pick from the RELION project folder so the micrograph names match). A rerun skips
    micrographs already picked; unreadable micrographs are listed at the end (exit 2).
    Files another model or other settings wrote in OUTPUT are not mixed with these: the run stops with
    one line unless --overwrite.
    """
    from ..batch import pick_micrographs
    from ..io import list_micrographs
    from ..model import default_device
    from ..pipeline import effective_threshold

    check_output_file(output, "picks", folder=True)
    model = load_model_file(model_path, device=default_device())
    config = pick_config(model, step_px=step_px, no_rotations=no_rotations, threshold=threshold, keep_all=keep_all,
                         top=top, sd_range=sd_range, edge_margin=edge_margin, peak_window=peak_window)
    if bool(micrographs) == (watch is not None):
        raise ConfigError("give the micrographs as --micrographs DIR|FILE, or --watch DIR to pick them as they "
                          "appear (one of the two)")
    workers = resolve_workers(workers)
    if watch is not None:
        from ..batch import watch_and_pick

        def progress(total):
            if not quiet:
                click.echo(f"{len(total.counts)} picked, {len(total.failed)} failed; watching {watch}", err=True)

        result = watch_and_pick(model, watch, output, fmt=fmt, config=config, overwrite=overwrite, workers=workers,
                                scheduler=dask_scheduler, timeout_s=watch_timeout, progress=progress)
        paths = [watch]
    else:
        paths = list_micrographs(micrographs)
        result = pick_micrographs(model, paths, output, fmt=fmt, config=config, overwrite=overwrite,
                                  progress=not quiet and len(paths) > 1, workers=workers, scheduler=dask_scheduler)
    click.echo(f"{result.summary(output, effective_threshold(model, config), keep_all)}; {step_line(model, config)}")
    if with_report:
        from .looking import write_report_for

        write_report_for(output, paths, output / REPORT_FILE, model=model, threshold=threshold, picks_fmt=fmt)
    report_failures(result.failed)


@click.command()
@click.option("--picks", "picks_path", required=True, type=click.Path(path_type=Path),
              help="picked coordinates: a folder, a file, or a RELION list of coordinate files "
                   "(an AutoPick job's autopick.star)")
@click.option("--picks-format", "picks_fmt", type=click.Choice(PICK_FORMATS),
              help="read only this format's files (default: from the suffix; needed where a folder holds several)")
@click.option("--references", type=click.Path(path_type=Path), help="reference coordinates: folder or file")
@click.option("--dataset", type=click.Path(path_type=Path), help="a dataset folder holding the references")
@click.option("--split", default=None, help="with --dataset: evaluate only this split (e.g. test)")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="take the box size and threshold from this model")
@click.option("--box-px", type=float, help="box side, micrograph px (default: model's, else dataset diameter)")
@click.option("--threshold", type=float, help="score cut for precision/recall (default: model's, else all picks)")
@click.option("--match-px", type=float, help="match distance in px [default: 0.2 × box, DeepPicker §4.4]")
@click.option("--beta", type=float, cls=LibraryDefault, library="metrics:BETA", help="F-beta for the optimal threshold")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="folder for the plots and JSON")
@click.option("--report", "with_report", is_flag=True,
              help="also write OUTPUT/report.html ('deeppick report'; needs --micrographs)")
@click.option("--micrographs", multiple=True, type=click.Path(path_type=Path),
              help="the micrographs picked, for --report's pictures [default: the --dataset's]")
@user_errors
def evaluate(picks_path, picks_fmt, references, dataset, split, model_path, box_px, threshold, match_px, beta,
             output, with_report, micrographs):
    """Compare picks with reference coordinates: precision, recall, F1, F2, AP, centre error, plots; also
    crYOLO's IoU-based figures and HydraPicker's AUROC.

    Picks and references are matched by micrograph name; micrographs that only one side names are left
    out (and listed), and the command stops with one line when no name matches.
    """
    from ..io import covered_micrographs, picks_cut_at, read_picks
    from ..metrics import BETA, evaluate_picks, shared_micrographs

    if (references is None) == (dataset is None):
        raise ConfigError("give the references with exactly one of --references DIR or --dataset DIR")
    beta = BETA if beta is None else beta
    if dataset is not None:
        from ..datasets import load_dataset

        ds = load_dataset(dataset)
        refs, referenced = ds.picks, set(ds.stems(split))
        box_px = box_px or (ds.diameter_px if model_path is None else None)
    else:
        refs = read_picks(references)
        referenced = covered_micrographs(references)
    if model_path is not None:
        from ..pipeline import effective_threshold

        model = load_model_file(model_path)
        box_px = box_px or model.box_px
        if threshold is None:
            threshold = effective_threshold(model)  # where pick cuts with this model
    if not box_px:
        raise ConfigError("the box size is unknown: give --box-px, --model or a dataset with diameter_px")
    picks = read_picks(picks_path, picks_fmt)
    names = shared_micrographs(covered_micrographs(picks_path, picks_fmt), referenced, picks=picks_path,
                               references=references or dataset)
    click.echo(names.summary())
    ev = evaluate_picks(picks, refs, box_px, match_px=match_px, threshold=threshold, beta=beta,
                        micrographs=names.shared)
    cut = "all picks" if ev.threshold is None else f"threshold {ev.threshold:.3g}"
    click.echo(f"{ev.n_micrographs} micrographs, {ev.n_refs} references, {ev.n_picks} picks at {cut}, "
               f"match ≤ {ev.max_dist_px:.1f} px")
    click.echo(f"precision {ev.precision:.3f}  recall {ev.recall:.3f}  F1 {ev.f1:.3f}  F2 {ev.f2:.3f}  "
               f"AP {ev.ap:.3f}")
    click.echo(f"F{beta:g}-optimal threshold on these micrographs {ev.best_threshold:.3g} (F{beta:g} "
               f"{ev.best_fbeta:.3f}; choose a threshold on held-out micrographs, not on these); centre error "
               f"{ev.centre_error_box:.3f} box")
    click.echo(f"as crYOLO counts (box IoU > {ev.min_iou:g}): precision {ev.precision_iou:.3f}  recall "
               f"{ev.recall_iou:.3f}  AP {ev.ap_iou:.3f}  mean IoU {ev.mean_iou:.3f}; as HydraPicker: AUROC "
               f"{ev.auroc:.3f} (of the candidates, true against false)")
    cut = picks_cut_at(picks_path, picks_fmt)
    if cut:
        click.echo(f"note: these picks were cut at a score of {cut:.3g} when picked, so the curve and AP cover only "
                   "the picks above it; pick with --keep-all to evaluate the whole ranked list")
    elif cut is None and ev.truncated_at is not None:
        click.echo(f"note: no pick scores below {ev.truncated_at:.3g}; if the picks were cut there, the curve and AP "
                   "cover only the picks above it")
    if output is not None:
        from ..report import write_report

        written = write_report(ev, output)
        click.echo("wrote " + ", ".join(str(p) for p in written))
    if with_report:
        if output is None or not (micrographs or dataset):
            raise ConfigError("--report writes OUTPUT/report.html with pictures of the micrographs: give -o and "
                              "--micrographs (or --dataset)")
        from .looking import write_report_for

        refs_for_report = refs[refs["micrograph"].isin(names.shared)]
        write_report_for(picks_path, list(micrographs) or [dataset / "micrographs"], output / REPORT_FILE,
                         references=refs_for_report, model=model if model_path is not None else None, box_px=box_px,
                         threshold=threshold, picks_fmt=picks_fmt)
