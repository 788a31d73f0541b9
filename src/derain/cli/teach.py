"""``derain teach``: a teacher's pairs for training on real rain (:mod:`derain.data.teacher`)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import precision_option, printable, threads_option, user_errors

__all__ = ["teach_cmd"]


@click.command("teach")
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@click.option("--teacher", required=True, help="The teacher: a model name, NAME=WEIGHTS (prenet=../shared/data/peers/prenet/Rain100H.pth) or a weights file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="The paired folder to write (rainy/, clean/, teacher.json).")
@click.option("--only", type=click.Choice(["all", "odd", "even"]), default="all", show_default=True,
              help="Keep the files whose numeric stem is odd / even (InternetData147: only the even half may train).")
@click.option("--max-side", type=click.IntRange(min=16), default=640, show_default=True, help="Downscale photos to this long side first (LANCZOS).")
@click.option("--window", type=click.IntRange(min=3), default=15, show_default=True,
              help="Odd size (px) of the neighbourhood a streak must stand out of to be removed.")
@click.option("--floor", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Removals below this many levels are left in place.")
@precision_option("auto")
@threads_option()
@user_errors
def teach_cmd(folders, teacher, out_dir, only, max_side, window, floor, precision, threads) -> None:
    """Pair real rainy photos with the light a teacher removes where the photo agrees it is rain.

    Writes OUT/rainy/NAME.png (the photo), OUT/clean/NAME.png (the target) and OUT/teacher.json; name OUT as a
    paired source in a training config. Resumable: photos already written are kept.

    \b
    derain teach ../shared/data/InternetData147/rainy --only even --teacher prenet=../shared/data/peers/prenet/Rain100H.pth -o runs/teacher-even
    """
    import torch

    import derain
    from derain.data.photos import photo_files
    from derain.data.teacher import write_teacher_pairs

    if window % 2 == 0:
        raise click.BadParameter(f"must be odd, got {window}", param_hint="--window")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise click.BadParameter(f"{out_dir} is a file; give a folder", param_hint="--out")
    if threads:
        torch.set_num_threads(threads)
    files = photo_files(folders, only)
    runner = derain.load_derainer(teacher, precision=precision)
    photos = write_teacher_pairs(files, runner, out_dir, label=teacher, max_side=max_side, window=window, floor=floor,
                                 log=lambda line: click.echo(printable(line), err=True))
    trusted = sum(p.trusted for p in photos) / max(1, len(photos))
    click.echo(f"wrote {len(photos)} pairs to {out_dir} (on average {trusted:.1%} of a photo's pixels changed)")
