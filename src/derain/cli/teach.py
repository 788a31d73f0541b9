"""``derain teach FOLDER --model prenet --weights Rain100H.pth -o pairs/``: real rainy photos labelled by a teacher.

The pairs (:mod:`derain.data.teacher`: the input less the colourless darkening the teacher makes) become a paired
dataset that a training source reads (``{kind: paired, path: pairs/}``).
"""

from __future__ import annotations

import click

from ..data.folders import SELECT
from .common import model_options, precision_option, printable, runner_for_cli, threads_option, user_errors

__all__ = ["teach_cmd"]


@click.command("teach")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@model_options
@click.option("-o", "--out", required=True, type=click.Path(), help="New folder for the pairs (rainy/, clean/).")
@click.option("--only", type=click.Choice(SELECT), default="all", show_default=True,
              help="Keep the files whose numeric stem is odd / even (InternetData147: only even-numbered photos may "
                   "be trained on).")
@click.option("--max-side", type=click.IntRange(min=16), default=640, show_default=True,
              help="Downscale photos to this long side first (LANCZOS), as the real-rain report does.")
@precision_option()
@threads_option()
@user_errors
def teach_cmd(folders, model_name, weights, out, only, max_side, precision, threads) -> None:
    """Label real rainy photos with a teacher model: pairs of the photo and the teacher's output less anything
    rain cannot explain (brightening, colour), for training on real rain.

    \b
    derain teach ../shared/data/InternetData147/rainy --only even --model prenet \\
        --weights ../shared/data/peers/prenet/Rain100H.pth -o runs/teacher-even
    """
    from ..data.teacher import check_new_folder, teach

    if not model_name and not weights:
        raise click.UsageError("name the teacher: --model NAME and/or --weights FILE")
    check_new_folder(out)  # before the teacher loads
    runner = runner_for_cli(model_name, weights, precision=precision, threads=threads)
    report = teach(folders, runner, out, only=only, max_side=max_side,
                   on_skip=lambda err: click.echo(f"skipped: {printable(err)}", err=True),
                   progress=lambda text: click.echo(printable(text), err=True))
    click.echo(f"wrote {len(report.names)} pairs to {report.out} (taken off the photos: "
               f"{sum(report.removed) / len(report.removed):.2f} of 255 levels on average; {len(report.skipped)} photos skipped)")
