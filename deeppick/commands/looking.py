"""``report`` and ``show``: the picks drawn on the micrographs, in one HTML file or one picture."""

from __future__ import annotations

from pathlib import Path

import click

from ._shared import PICK_FORMATS, check_output_file, load_model_file, user_errors


def write_report_for(picks, micrographs, output: Path, *, references=None, model=None, box_px=None,
                     threshold=None, picks_fmt=None, gallery=None, every=False, title=None) -> Path:
    """Build and write the HTML report of a picks folder; print its problems (one line each) and its path."""
    from ..report import GALLERY_SIZE, build_report, write_html_report

    report = build_report(picks, micrographs, references=references, model=model, box_px=box_px,
                          threshold=threshold, picks_fmt=picks_fmt, title=title,
                          gallery=None if every else (gallery or GALLERY_SIZE))
    for problem in report.problems:
        click.echo(f"deeppick: note: {problem}", err=True)
    path = write_html_report(report, output)
    click.echo(f"report of {report.n_picks} picks on {report.n_micrographs} micrographs: {path}")
    return path


@click.command()
@click.option("--picks", "picks_path", required=True, type=click.Path(path_type=Path),
              help="picked coordinates: a folder, a file, or a RELION list of coordinate files")
@click.option("--micrographs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="the micrographs picked (a folder, or files; repeat the option)")
@click.option("--references", type=click.Path(path_type=Path),
              help="reference coordinates: true and false positives and misses are drawn and counted")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="the model that picked: its box, threshold and one micrograph's score map")
@click.option("--box-px", type=float, help="box side in micrograph px [default: the model's]")
@click.option("--threshold", type=float, help="show picks scoring at least this [default: the model's]")
@click.option("--picks-format", "picks_fmt", type=click.Choice(PICK_FORMATS), help="read only this format's files")
@click.option("--gallery", type=click.IntRange(min=1), help="micrographs drawn, the fewest and most picks among "
              "them [default: report.GALLERY_SIZE]")
@click.option("--all", "every", is_flag=True, help="draw every micrograph (a large file for a large dataset)")
@click.option("--title", help="the page's title [default: the picks' path]")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="HTML file to write")
@user_errors
def report(picks_path, micrographs, references, model_path, box_px, threshold, picks_fmt, gallery, every, title,
           output):
    """Write ONE self-contained HTML file of picks on micrographs: summary, gallery, curves, score map.

    Images are embedded; the file opens from a laptop or a file share in any browser, with no network.
    """
    check_output_file(output, "report")
    model = load_model_file(model_path) if model_path is not None else None
    write_report_for(picks_path, list(micrographs), output, references=references, model=model, box_px=box_px,
                     threshold=threshold, picks_fmt=picks_fmt, gallery=gallery, every=every, title=title)


@click.command()
@click.argument("micrograph", type=click.Path(path_type=Path))
@click.option("--picks", "picks_path", required=True, type=click.Path(path_type=Path),
              help="coordinates: a file, or a folder holding this micrograph's file")
@click.option("--references", type=click.Path(path_type=Path), help="reference coordinates (file or folder)")
@click.option("--model", "model_path", type=click.Path(path_type=Path), help="take the box and threshold from it")
@click.option("--box-px", type=float, help="box side in micrograph px [default: the model's]")
@click.option("--threshold", type=float, help="draw picks scoring at least this [default: the model's, else all]")
@click.option("--width", "width_px", type=click.IntRange(min=64), default=1024, show_default=True,
              help="at most this many px wide")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="PNG to write [default: MICROGRAPH.png here]")
@user_errors
def show(micrograph, picks_path, references, model_path, box_px, threshold, width_px, output):
    """Draw one micrograph with its picks (circles of the box's diameter) as a PNG."""
    from ..errors import ConfigError
    from ..io import atomic_path, micrograph_stem, read_micrograph, read_picks
    from ..views import png_bytes, show_picks

    if model_path is not None:
        from ..pipeline import effective_threshold

        model = load_model_file(model_path)
        box_px = box_px or model.box_px
        threshold = threshold if threshold is not None else effective_threshold(model)
    if not box_px:
        raise ConfigError("the box size is unknown: give --box-px or --model")
    stem = micrograph_stem(micrograph)
    picks = read_picks(picks_path)
    picks = picks[picks["micrograph"] == stem] if picks["micrograph"].nunique() > 1 or Path(picks_path).is_dir() \
        else picks
    refs = None
    if references is not None:
        refs = read_picks(references)
        refs = refs[refs["micrograph"] == stem] if refs["micrograph"].nunique() > 1 or Path(references).is_dir() \
            else refs
    rgb = show_picks(read_micrograph(micrograph), picks, box_px=box_px, references=refs, threshold=threshold,
                     width_px=width_px)
    output = output or Path(f"{stem}.png")
    check_output_file(output, "picture")
    with atomic_path(output) as tmp:
        tmp.write_bytes(png_bytes(rgb))
    drawn = len(picks) if threshold is None else int((picks["score"].fillna(1.0) >= threshold).sum())
    click.echo(f"wrote {output}: {drawn} picks on {micrograph}")
