"""``derain demo``: synthesise a photo, render rain on it, derain it, write rainy | derained | clean.

Works on a fresh machine with no file of the user's (no download): the scene is drawn with Pillow
and the rain comes from :class:`derain.data.render.RainRenderer`.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..io.images import save_image
from ..io.pixels import to_float
from .common import model_options, printable

__all__ = ["demo_cmd", "synthetic_scene", "first_free"]

DEFAULT_OUTPUT = "derain_demo.png"


def first_free(path: Path) -> Path:
    """``path`` if nothing is there, else the first of ``stem-2.ext``, ``stem-3.ext``, ... that is free.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.png").write_bytes(b"")
    >>> first_free(folder / "a.png").name, first_free(folder / "b.png").name
    ('a-2.png', 'b.png')
    """
    n, free = 1, path
    while free.exists() or free.is_symlink():
        n += 1
        free = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return free


def synthetic_scene(width: int = 481, height: int = 321, seed: int = 0) -> np.ndarray:
    """A street-like scene (sky, sun, buildings with windows, road), ``H×W×3`` uint8.

    >>> synthetic_scene(64, 48).shape
    (48, 64, 3)
    """
    rng = np.random.default_rng(seed)
    sky = np.linspace([110, 150, 200], [200, 215, 230], height)[:, None, :].repeat(width, axis=1)
    img = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    horizon = int(height * 0.68)
    draw.ellipse([width * 0.75, height * 0.08, width * 0.75 + height * 0.14, height * 0.22], fill=(250, 235, 180))
    x = 0
    while x < width:
        w = int(rng.integers(width // 12, width // 6))
        top = int(rng.integers(height // 6, horizon - height // 8))
        colour = tuple(int(c) for c in rng.integers(60, 190, 3))
        draw.rectangle([x, top, x + w, horizon], fill=colour, outline=(40, 40, 40))
        for wy in range(top + 8, horizon - 10, 14):
            for wx in range(x + 6, x + w - 8, 12):
                lit = rng.random() < 0.4
                draw.rectangle([wx, wy, wx + 6, wy + 8], fill=(240, 220, 120) if lit else (50, 60, 80))
        x += w + int(rng.integers(0, 6))
    draw.rectangle([0, horizon, width, height], fill=(70, 72, 78))
    for lx in range(0, width, width // 8):
        draw.rectangle([lx, int(height * 0.84), lx + width // 16, int(height * 0.86)], fill=(230, 230, 210))
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    noise = rng.normal(0, 3, (height, width, 3))
    return np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


@click.command("demo")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=DEFAULT_OUTPUT, show_default=True,
              help="Where to write the rainy | derained | clean strip (by default the first free name of "
                   "derain_demo.png, derain_demo-2.png, ...).")
@click.option("--rain", type=click.Choice(["light", "medium", "heavy"]), default="medium", show_default=True)
@model_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (default: refuse, like export and video).")
@click.pass_context
def demo_cmd(ctx: click.Context, output: str, rain: str, model_name: str | None, weights: str | None, seed: int,
             overwrite: bool) -> None:
    """Derain a synthetic rainy photo and write before/after side by side (no input file needed)."""
    path = Path(output)
    if not overwrite and ctx.get_parameter_source("output") is click.core.ParameterSource.DEFAULT:
        path = first_free(path)  # running the demo again keeps the earlier strip and still works
    if path.exists() and not overwrite:
        raise click.ClickException(f"{printable(path)} exists (use --overwrite to replace it, or -o another name)")
    from .common import runner_for_cli
    from derain.data.render import RainRenderer
    from derain.metrics import calculate_psnr, quantize

    clean = synthetic_scene(seed=seed)
    rainy = quantize(RainRenderer(rain).render(to_float(clean), np.random.default_rng(seed)))
    derainer = runner_for_cli(model_name, weights)
    t0 = time.perf_counter()
    derained = quantize(derainer(to_float(rainy)))
    seconds = time.perf_counter() - t0
    strip = np.concatenate([rainy, derained, clean], axis=1)
    save_image(Image.fromarray(strip), path, "PNG")
    before = calculate_psnr(rainy, clean, test_y_channel=True)
    after = calculate_psnr(derained, clean, test_y_channel=True)
    click.echo(
        f"wrote {path} (rainy | derained | clean): Y-PSNR {before:.2f} -> {after:.2f} dB, "
        f"{seconds * 1000:.0f} ms (first call) on {derainer.device} ({derainer.precision})"
    )
