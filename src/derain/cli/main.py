"""The ``derain`` command line.

``derain eval``, ``derain train``, ``derain models``; errors in the input (missing folders,
bad weights, bad configs, unreadable images) end with one clear line and exit code 1-2, never a
traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback

import click

from ..errors import UserError

__all__ = ["main", "cli"]

from .bench import bench_group, explain_cmd  # noqa: E402
from .common import USER_ERRORS, device_option, model_options, printable, precision_option, protocol_option, threads_option, user_errors  # noqa: E402,F401
from .demo import demo_cmd  # noqa: E402
from .export import export_cmd  # noqa: E402
from .run import DefaultRunGroup, run_cmd  # noqa: E402  (`derain PHOTO...` = `derain run PHOTO...`)
from .serve import serve_cmd  # noqa: E402
from .teach import teach_cmd  # noqa: E402
from .video import video_cmd  # noqa: E402


@click.group(cls=DefaultRunGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="derain")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def cli(verbose: bool) -> None:
    """derain: remove rain from photos, fast, on a CPU (EfficientDeRain).

    `derain PHOTO...` is short for `derain run PHOTO...`.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)


cli.add_command(run_cmd)
cli.add_command(demo_cmd)
cli.add_command(video_cmd)
cli.add_command(export_cmd)
cli.add_command(teach_cmd)
cli.add_command(bench_group)
cli.add_command(explain_cmd)
cli.add_command(serve_cmd)


@cli.command("models")
def models_cmd() -> None:
    """List the registered models."""
    import derain
    from derain.models.registry import model_spec

    for name in derain.list_models():
        spec = model_spec(name)
        click.echo(f"{name:18s} {'[weights] ' if spec.weights else ''}{spec.description}")


@cli.command("eval")
@click.argument("dataset_dir", type=click.Path(file_okay=False))
@model_options
@protocol_option(both=True)
@click.option("--layout", default="auto", show_default=True, help="Dataset layout (auto, plain, rain100, rain1400, rain13k, spa, raindrop).")
@click.option("--strict", is_flag=True, help="Unpaired files and size mismatches are errors.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N pairs (sorted file names).")
@click.option("--save-dir", type=click.Path(file_okay=False), help="Write the predictions here as PNG.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write per-image scores here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout (logs go to stderr).")
@device_option
@precision_option("fp32")
@threads_option()
@user_errors
def eval_cmd(dataset_dir, model_name, weights, protocol, layout, strict, limit, save_dir, csv_path, as_json, device, precision, threads) -> None:
    """Evaluate a model on a paired dataset: PSNR/SSIM under the y and/or efderain-rgb protocols."""
    import torch

    from derain.evaluation.evaluate import evaluate

    from .common import runner_for_cli

    if threads:
        torch.set_num_threads(threads)
    derainer = runner_for_cli(model_name, weights, device=device, precision=precision)
    result = evaluate(
        derainer, dataset_dir, protocol, limit=limit, save_dir=save_dir, layout=layout, strict=strict,
        progress=sys.stderr.isatty() or not as_json,
    )
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if csv_path:
        result.write_csv(csv_path)
    click.echo(result.to_json() if as_json else result.table())


@cli.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue the run in OUT_DIR (its checkpoint.pt); without it OUT_DIR must hold no earlier run.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Folder the presets' data names refer to "
              "(${DERAIN_DATA}; default: $DERAIN_DATA, else ../shared/data).")
@click.option("--allow-changes", is_flag=True, help="With --resume: accept changed schedule keys (iterations, decay_start, lr, checkpoint_every, validation).")
@click.option("--check", is_flag=True, help="Read the config, its data and its starting weights as training would, say what "
              "it would train on, and stop: nothing is trained or written.")
@user_errors
def train_cmd(config, overrides, resume, data_root, allow_changes, check) -> None:
    """Train a model: CONFIG.yaml or a PRESET (see below) plus key=value overrides.

    Results go to the config's out_dir (default runs/train; override with out_dir=PATH): config.yaml,
    checkpoint.pt, best.safetensors (by validation), last.safetensors, train_log.csv, val_log.csv.
    Config keys: see derain/training/config.py or any preset. Without CONFIG, lists the presets.
    Works unchanged under ``torchrun --nproc_per_node N`` (DistributedDataParallel).
    """
    from derain.training import check_run, list_presets, load_config, resolve_preset, train

    if not config:
        click.echo("presets (derain train PRESET [key=value ...]): " + ", ".join(list_presets()))
        return
    cfg = load_config(resolve_preset(config), overrides, data_root=data_root)
    if check:
        for line in check_run(cfg, resume=resume, allow_changes=allow_changes):
            click.echo(printable(line))
        return
    result = train(cfg, resume=resume, allow_changes=allow_changes)
    if result is not None:
        click.echo(result)


# click >= 8.2 shows a group's help through this usage error when it is called without arguments.
_HELP_ON_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The ``derain`` command. SIGTERM is handled like Ctrl-C: partial outputs are removed (``derain serve``
    replaces the handler with the server's graceful shutdown).

    The user's errors end as one line (each command's :func:`~derain.cli.common.user_errors`); any other
    exception is a bug in derain: one line that says so and how to see the traceback (``derain -v ...``,
    which prints it), exit code 1."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        _run(argv)
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM while the first one's message is printed
        sys.exit(1)


def _run(argv: list[str] | None) -> None:
    try:
        code = cli.main(args=argv, prog_name="derain", standalone_mode=False)
    except click.ClickException as err:
        if isinstance(err, _HELP_ON_NO_ARGS):  # `derain` alone: the help
            err.show()
        elif isinstance(err, click.UsageError):  # one line: click's own display adds the usage and a hint on lines of their own
            hint = f" (try '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            click.echo(f"Error: {printable(err.format_message().strip())}{hint}", err=True)
        else:  # a command's own error: its lines as it wrote them (a dataset's problems, one per line), each printable
            lines = err.format_message().strip().split("\n")
            click.echo("\n".join(printable(line) for line in [f"Error: {lines[0]}", *lines[1:]]), err=True)
        sys.exit(err.exit_code)
    except click.Abort:  # Ctrl-C or SIGTERM: each command has removed its partial outputs
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except UserError as err:  # a command without its own one_line_errors (a full disk while writing, say)
        click.echo(f"Error: {printable(str(err).strip())}", err=True)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - what is left is not the user's input
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        click.echo(f"error: internal error ({type(err).__name__}: {printable(message)}): a bug in derain, not in your input; "
                   "`derain -v ...` shows the traceback to report", err=True)
        sys.exit(1)
    sys.exit(code if type(code) is int else 0)  # a command's ctx.exit(N) arrives as N; commands return None


if __name__ == "__main__":  # pragma: no cover
    main()
