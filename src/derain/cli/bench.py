"""``derain bench speed|quality|noharm|real|ablation|frontier`` and ``derain explain``: the paper's tables and figures.

Each prints a markdown table and writes what it is asked to (``--json``/``--csv``, a PNG plot).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..io.pixels import to_float
from .common import device_option, model_for_cli, model_options, models_option, precision_option, printable, protocol_option, strength_option, threads_option, user_errors

__all__ = ["bench_group", "explain_cmd"]


def _size(text: str) -> tuple[int, int]:
    """``WxH`` → ``(H, W)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: sizes look like 481x321 (width x height)") from None
    if w < 1 or h < 1:
        raise click.BadParameter(f"{text!r}: width and height must be positive")
    return h, w


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _need_matplotlib() -> None:
    """Fail before any work when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException("plots need matplotlib: pip install 'derain[bench]'") from None


def _echo_row(text: str) -> None:
    click.echo(text, err=True)


@click.group("bench")
def bench_group() -> None:
    """Benchmarks that reproduce the paper's tables and figures on this machine."""


@bench_group.command("speed")
@models_option(forms="Registered name or 'efderain-paper (released path)' (default: default, fast, efderain-paper, "
               "the released path, prenet)")
@click.option("--size", "sizes", multiple=True, default=("481x321", "1920x1080"), show_default=True, help="WxH; repeatable.")
@click.option("--batch", "batches", multiple=True, type=click.IntRange(min=1), default=(1, 8), show_default=True)
@precision_option(("fp32", "bf16"), multiple=True)
@device_option
@threads_option()
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--max-cell-seconds", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Time budget per (size, batch, precision) cell: fewer repeats when slow; skipped when one call is estimated above half of it.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the rows as JSON here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the rows as CSV here.")
@user_errors
def speed_cmd(models, sizes, batches, precisions, device, threads, repeats, warmup, max_cell_seconds, json_path, csv_path) -> None:
    """Milliseconds per image of each model, side by side, with GFLOPs and speed-up ratios."""
    from derain.bench.speed import DEFAULT_MODELS, run_speed

    _threads(threads)
    shape = [_size(s) for s in sizes]
    report = run_speed(
        models or DEFAULT_MODELS, shape, batches, precisions, device=device, warmup=warmup, repeats=repeats,
        max_cell_seconds=max_cell_seconds,
        progress=lambda r: _echo_row(f"{r.model} {r.size[1]}x{r.size[0]} b{r.batch} {r.precision}: " + (r.skipped or f"{r.ms:.1f} ms/image")),
    )
    click.echo(report.table())
    if json_path:
        report.write_json(json_path)
    if csv_path:
        report.write_csv(csv_path)


@bench_group.command("quality")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@models_option(required=True)
@protocol_option()
@precision_option("fp32")
@threads_option()
@click.option("--limit", type=click.IntRange(min=1), help="First N pairs only.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG: PSNR and SSIM vs ms per image (log x).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the points as JSON here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the points as CSV here.")
@user_errors
def quality_cmd(dataset_dir, models, protocol, precision, threads, limit, plot_path, json_path, csv_path) -> None:
    """Quality vs time of models on one paired folder (paper Fig. 1/4)."""
    from derain.bench.quality import plot_quality, quality_table, run_quality, write_points

    if plot_path:
        _need_matplotlib()
    _threads(threads)
    points = run_quality(
        models, dataset_dir, protocol, precision, limit,
        progress=lambda p: _echo_row(f"{p.model}: {p.psnr:.2f} dB / {p.ssim:.4f}, {p.ms:.1f} ms/image"),
    )
    click.echo(quality_table(points, precision))
    if json_path:
        write_points(points, json_path, "json")
    if csv_path:
        write_points(points, csv_path, "csv")
    if plot_path:
        plot_quality(points, plot_path)


@bench_group.command("noharm")
@models_option(("default", "fast"))
@click.option("--set", "sets", multiple=True, required=True,
              help="Rain-free images: a folder, a paired folder's clean/ side, FOLDER@lastN for its last N; repeatable.")
@precision_option("auto")
@threads_option()
@click.option("--jpeg", type=int, default=None, metavar="QUALITY",
              help="Also measure every set as web-size JPEGs (long side at most 640 px) of this quality (1-100).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the rows as JSON here.")
@user_errors
def noharm_cmd(models, sets, precision, threads, jpeg, json_path) -> None:
    """What each model does to rain-free photos: identity Y-PSNR (mean, minimum and the worst image), how many it
    judges rainy as a whole (judgement >= 0.5), mean shift per channel, grey and near-grey spread."""
    from derain.bench.noharm import noharm_table, run_noharm, write_rows

    _threads(threads)
    rows = run_noharm(
        models, sets, precision,
        progress=lambda r: _echo_row(f"{r.model} on {r.dataset}: {r.psnr_mean:.2f} dB (min {r.psnr_min:.2f}{' on ' + r.worst if r.worst else ''})"), jpeg=jpeg,
    )
    click.echo(noharm_table(rows, precision))
    if json_path:
        write_rows(rows, json_path)


@bench_group.command("real")
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@models_option(("default", "fast"))
@click.option("--peer", help="A model that is not bundled, reported beside the others: NAME=WEIGHTS, e.g. "
              "prenet=../shared/data/peers/prenet/Rain100H.pth.")
@click.option("--only", type=click.Choice(["all", "odd", "even"]), default="all", show_default=True,
              help="Keep the files whose numeric stem is odd / even (InternetData147: odd-numbered photos are for evaluation only).")
@click.option("--max-side", type=click.IntRange(min=16), default=640, show_default=True,
              help="Downscale photos and video frames to this long side first (LANCZOS).")
@click.option("--video", type=click.Path(), help="A video from a fixed camera: rain left, against its temporal median.")
@click.option("--video-stride", type=click.IntRange(min=1), default=20, show_default=True, help="Take every Nth frame of --video.")
@click.option("--sheet", "sheet_path", type=click.Path(), help="PNG contact sheet: input | each model | the peer, a row per photo.")
@click.option("--sheet-rows", type=click.IntRange(min=1), default=12, show_default=True,
              help="Rows of the sheet: the photos the first model changes least.")
@click.option("--json", "json_path", type=click.Path(), help="Write the report as JSON here.")
@strength_option
@precision_option("auto")
@threads_option()
@user_errors
def real_cmd(folders, models, peer, only, max_side, video, video_stride, sheet_path, sheet_rows, json_path, strength, precision,
             threads) -> None:
    """How much each model changes real rainy photos (Y-PSNR output vs input; no ground truth) and, with
    --video, how much rain it leaves in a fixed camera's frames.

    \b
    derain bench real ../shared/data/InternetData147 --only odd --sheet real.png
    derain bench real photos/ --model fast --peer prenet=Rain100H.pth --video yard.mp4
    """
    from derain.bench.real import run_real
    from derain.inference.video import VideoError

    for option, path in (("--sheet", sheet_path), ("--json", json_path)):
        if path and Path(path).is_dir():
            raise click.ClickException(f"{option} {printable(path)}: is a folder; give a file name")
    _threads(threads)
    try:
        report = run_real(
            models, folders, peer=peer, only=only, max_side=max_side, precision=precision, video=video,
            video_stride=video_stride, sheet=sheet_path, sheet_rows=sheet_rows, strength=strength,
            on_skip=lambda err: _echo_row(f"skipped: {printable(err)}"), progress=_echo_row,
        )
    except VideoError as err:
        raise click.ClickException(str(err)) from None
    click.echo(report.table())
    if json_path:
        report.write_json(json_path)
    if sheet_path:
        _echo_row(f"wrote {sheet_path} ({len(report.sheet_order)} rows)")


@bench_group.command("video")
@click.option("--data", "data_root", default=None, type=click.Path(file_okay=False),
              help="The data folder with clean/ (and SIRR_val/, JORDER_heavy5/ for real rain layers) [default: ../shared/data "
                   "next to the current folder].")
@click.option("--model", "model_name", default="default", show_default=True, help="The single-image model of both modes.")
@click.option("--clip", "clips", multiple=True, help="Only these clips (light, heavy, heavy+fog, real-light, real-heavy+fog, "
              "heavy+jitter, light+jitter); repeatable.")
@click.option("--size", default="384x256", show_default=True, help="WxH of the generated clips.")
@click.option("--frames", type=click.IntRange(min=3), default=48, show_default=True, help="Frames per clip.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--yard", type=click.Path(), help="A real fixed-camera video (e.g. ../shared/data/RealRainVideo/yard.mp4) for the temporal-median check.")
@click.option("--yard-stride", type=click.IntRange(min=1), default=20, show_default=True, help="Score every Nth frame of --yard.")
@click.option("--strip", "strip_path", type=click.Path(dir_okay=False), help="Before/after PNG of a --yard frame: input | frame by frame | temporal.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@precision_option("auto")
@threads_option()
@user_errors
def video_bench_cmd(data_root, model_name, clips, size, frames, seed, yard, yard_stride, strip_path, json_path, precision, threads) -> None:
    """Video with ground truth: generated fixed-camera clips (moving objects, rain per frame, fog, jitter), frame by
    frame vs --temporal; PSNR/SSIM overall, static and moving pixels, ms per frame; and the yard.mp4 check.

    \b
    derain bench video --yard ../shared/data/RealRainVideo/yard.mp4 --strip docs/yard_temporal.png
    """
    from derain.bench.video import run_video_bench

    if strip_path and not yard:
        raise click.UsageError("--strip needs --yard")
    _threads(threads)
    root = Path(data_root) if data_root else Path("..") / "shared" / "data"
    report = run_video_bench(model_name, root, clips=clips or None, size=_size(size), frames=frames, seed=seed,
                             precision=precision, yard=yard, yard_stride=yard_stride, strip=strip_path, progress=_echo_row)
    click.echo(report.table())
    if json_path:
        report.write_json(json_path)
    if strip_path:
        _echo_row(f"wrote {strip_path}")


@bench_group.command("ablation")
@click.option("--iterations", type=click.IntRange(min=1), default=1500, show_default=True,
              help="Training steps per variant (the budget; the paper-size run is 50000 on a GPU).")
@click.option("--model", help="Architecture for every variant (default: each preset's, the released network).")
@click.option("--variant", "variants", multiple=True, type=click.Choice(["v1", "v2", "v3", "v4"]), help="Repeatable (default: all four).")
@click.option("--test", "tests", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Test folders scored for reporting only (never used to choose anything); repeatable.")
@click.option("--in-domain", "in_domain", type=click.Path(exists=True, file_okay=False),
              help="Train every variant on this family's training pairs only (e.g. ../shared/data/RainTrainL), "
              "select on its last --holdout pairs; report on --test (e.g. ../shared/data/Rain100L).")
@click.option("--holdout", type=click.IntRange(min=1), default=20, show_default=True, help="Held-out pairs of --in-domain.")
@click.option("--out-dir", default="runs/ablation", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the rows as JSON here.")
@click.argument("overrides", nargs=-1)
@user_errors
def ablation_cmd(iterations, model, variants, tests, in_domain, holdout, out_dir, json_path, overrides) -> None:
    """Paper Table 2: train v1-v4 with one budget, score on validation (and test) sets.

    OVERRIDES are training config key=value pairs applied to every variant (crop=128 threads=2 ...).
    """
    from derain.bench.ablation import VARIANTS, ablation_table, run_ablation, write_rows

    rows = run_ablation(
        iterations, out_dir, tests, model, overrides, variants or tuple(VARIANTS), log=_echo_row,
        in_domain=in_domain, holdout=holdout,
    )
    click.echo(ablation_table(rows))
    if json_path:
        write_rows(rows, json_path)


@bench_group.command("frontier")
@click.option("--candidate", "candidates", multiple=True, help="A candidate network (derain.bench.frontier.CANDIDATES); repeatable (default: all).")
@click.option("--minutes", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Training budget per candidate (wall-clock at this machine's speed, measured before training); "
              "0: the memorisation test alone (both 0: speed alone).")
@click.option("--memorise-minutes", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Also train each candidate this long on 10 pairs and score it on them (0: skip).")
@click.option("--train-dir", type=click.Path(exists=True, file_okay=False),
              help="The family's training pairs (default: the rain100l preset's, $DERAIN_DATA/RainTrainL); the last 20 select.")
@click.option("--test", "tests", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Test folders scored for reporting only (never used to choose anything); repeatable.")
@click.option("--prenet", "prenet_weights", type=click.Path(exists=True, dir_okay=False),
              help="PReNet weights (e.g. ../shared/data/peers/prenet/Rain100L.pth): scored and timed in the same run.")
@click.option("--out-dir", default="runs/frontier", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write quality vs milliseconds as a PNG here.")
@click.argument("overrides", nargs=-1)
@user_errors
def frontier_cmd(candidates, minutes, memorise_minutes, train_dir, tests, prenet_weights, out_dir, json_path, plot_path, overrides) -> None:
    """The CPU frontier: candidate networks trained with one in-domain protocol for the same time, then timed.

    OVERRIDES are training config key=value pairs applied to every candidate (threads=2 ...).
    """
    from derain.bench.frontier import CANDIDATES, frontier_plot, frontier_table, run_frontier, write_report

    report = run_frontier(
        candidates or tuple(CANDIDATES), minutes, memorise_minutes, train_dir or "", out_dir, tests, prenet_weights,
        overrides=overrides, log=lambda line: click.echo(line, err=True),
    )
    click.echo(frontier_table(report))
    if json_path:
        write_report(report, json_path)
    if plot_path:
        frontier_plot(report, plot_path)


@click.command("explain")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@model_options
@click.option("--point", "points", multiple=True, help="Y,X pixel to explain; repeatable (default: picked automatically).")
@click.option("--n-points", type=click.IntRange(min=1, max=8), default=4, show_default=True)
@click.option("--max-side", type=click.IntRange(min=16), default=800, show_default=True, help="Downscale larger images to this side first.")
@user_errors
def explain_cmd(image, output, model_name, weights, points, n_points, max_side) -> None:
    """Draw the predicted per-pixel kernels at each dilation, with centre-weight and entropy maps (paper Fig. 2c)."""
    import numpy as np
    from PIL import Image

    from derain.bench.explain import explain_image, plot_explanation
    from derain.io.images import read_image

    _need_matplotlib()
    parsed = []
    for p in points:
        try:
            y, x = (int(v) for v in p.split(","))
        except ValueError:
            raise click.BadParameter(f"{p!r}: points look like Y,X (e.g. 120,200)", param_hint="--point") from None
        parsed.append((y, x))
    rgb = read_image(image)
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
        click.echo(f"downscaled to {size[0]}x{size[1]} (--max-side {max_side}); points refer to that size", err=True)
    model = model_for_cli(model_name, weights)
    e = explain_image(model, to_float(rgb), parsed or None, n_points)
    plot_explanation(e, output)
    for n, (y, x, kind) in enumerate(e.points, start=1):
        click.echo(f"{n}: {kind} y={y} x={x} centre weight {e.centre_weight[y, x]:.3f} entropy {e.entropy[y, x]:.3f}")
    click.echo(f"wrote {Path(output)}", err=True)
