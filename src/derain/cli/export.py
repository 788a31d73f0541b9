"""``derain export --format onnx -o model.onnx``: write a model for ONNX Runtime (and other runtimes).

The file has dynamic batch, height and width; EfDeRain's padding to a multiple is left to the
runtime (see :mod:`derain.inference.onnx_export`). By default the export is checked: ONNX Runtime
and torch run the same random odd-sized image and must agree within 1e-3.

``derain run --onnx FILE`` (and ``--backend onnxruntime``) run such a file through
:func:`~derain.inference.loading.load_derainer`, like every other model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..inference.onnx_export import DEFAULT_OPSET
from ..io.atomic import WriteError
from .common import model_for_cli, model_options, printable

__all__ = ["export_cmd", "VERIFY_TOLERANCE"]

#: Largest max-abs difference between ONNX Runtime and torch that ``--verify`` accepts.
VERIFY_TOLERANCE = 1e-3


def _verify(model: Any, path: Path, multiple: int) -> float:
    """Max abs difference between ONNX Runtime and torch on one random image of odd size."""
    import torch

    from ..inference.derainer import Derainer
    from ..inference.onnx_export import OnnxDerainer

    gen = torch.Generator().manual_seed(0)
    h, w = (multiple + 13, 2 * multiple + 7) if multiple > 1 else (45, 67)  # odd: padding is exercised
    x = torch.rand(1, 3, h, w, generator=gen)
    reference = Derainer(model, precision="fp32").run_tensor(x)
    result = OnnxDerainer(path).run_tensor(x)
    return float((reference - result).abs().max())


@click.command("export")
@model_options
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True, help="Export format.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write (e.g. model.onnx).")
@click.option("--opset", type=click.IntRange(min=13), default=DEFAULT_OPSET, show_default=True, help="ONNX opset version.")
@click.option("--dynamo", is_flag=True, help="Use the torch.export-based exporter (same results, much slower to export).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help=f"Check ONNX Runtime against torch on a random image (max abs difference <= {VERIFY_TOLERANCE:g}).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def export_cmd(model_name, weights, fmt, output, opset, dynamo, verify, overwrite) -> None:
    """Export a model to ONNX (dynamic batch, height and width; pad to the model's multiple at run time).

    \b
    derain export --model efderain-cpu -o derain.onnx
    derain export --weights my.safetensors -o my.onnx
    derain run photos/ --onnx derain.onnx
    """
    from ..inference.onnx_export import export_onnx, exportable_core

    out = Path(output)
    if out.exists() and not overwrite:
        raise click.ClickException(f"{printable(out)} exists (use --overwrite to replace it)")
    if not out.parent.is_dir() and str(out.parent):
        raise click.ClickException(f"{printable(out.parent)}: output folder does not exist")
    model = model_for_cli(model_name, weights)
    _, multiple = exportable_core(model)
    try:
        export_onnx(model, out, opset=opset, dynamo=dynamo)
    except WriteError as err:  # a full disk or an I/O error: nothing was left at OUT
        raise click.ClickException(str(err)) from None
    except Exception as err:  # noqa: BLE001 - exporter failures: one line
        raise click.ClickException(f"export failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    size_mb = os.path.getsize(out) / 1e6
    click.echo(f"wrote {out} ({size_mb:.1f} MB, {fmt}, opset {opset}; input 'image' (batch, 3, height, width), "
               f"sides multiples of {multiple}: `derain --onnx FILE` pads for you, a program of your own pads as "
               f"derain.ops.padding.pad_canvas does)", err=True)
    if verify:
        diff = _verify(model, out, multiple)
        if diff > VERIFY_TOLERANCE:
            out.unlink(missing_ok=True)
            raise click.ClickException(f"verification failed: onnxruntime differs from torch by {diff:.2e} (> {VERIFY_TOLERANCE:g}); file removed")
        click.echo(f"verified: onnxruntime matches torch within {diff:.1e} (max abs)", err=True)
