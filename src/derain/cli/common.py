"""What the subcommands share: the user-error → one-line-message decorator, model loading and the
options every model-running command takes (``--model/--weights``, ``--device``, ``--precision``,
``--threads``), declared once here."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import click

from ..data.pairs import DatasetError
from ..inference.precision import PRECISIONS
from ..metrics import PROTOCOLS
from ..io.images import ImageReadError
from ..models.checkpoint import CheckpointError
from ..training.config import ConfigError

__all__ = [
    "USER_ERRORS",
    "compile_option",
    "device_option",
    "load_for_cli",
    "model_options",
    "models_option",
    "one_line_errors",
    "precision_option",
    "printable",
    "protocol_option",
    "strength_option",
    "threads_option",
    "user_errors",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--model NAME`` (parameter ``model_name``) and ``--weights FILE``, resolved by :func:`load_for_cli`."""
    fn = click.option("--weights", type=click.Path(dir_okay=False),
                      help="Model file (.safetensors; .pth with --model).")(fn)
    return click.option("--model", "model_name",
                        help="Registered model name (its bundled weights unless --weights) [default: default].")(fn)


def models_option(default: tuple[str, ...] = (), *, required: bool = False,
                  forms: str = "NAME, NAME=WEIGHTS or WEIGHTS_FILE") -> Decorator:
    """``--model`` repeatable (parameter ``models``): the models a benchmark puts side by side."""
    return click.option("--model", "models", multiple=True, default=default, required=required,
                        show_default=bool(default), help=f"{forms}; repeatable.")


def precision_option(default: str | tuple[str, ...] = "auto", *, multiple: bool = False) -> Decorator:
    """``--precision`` with the choices of :data:`~derain.inference.precision.PRECISIONS`."""
    name = ("--precision", "precisions") if multiple else ("--precision",)
    return click.option(*name, type=click.Choice(PRECISIONS), default=default, multiple=multiple, show_default=True,
                        help="auto: bf16 where the CPU runs it natively (fp16 on CUDA), else fp32.")


def protocol_option(both: bool = False) -> Decorator:
    """``--protocol`` with the names of :data:`~derain.metrics.PROTOCOLS` (and ``both`` where a command runs each)."""
    return click.option("--protocol", type=click.Choice([*PROTOCOLS, *(["both"] if both else [])]), default="y", show_default=True,
                        help="y: the field's convention (MATLAB Y); efderain-rgb: the released code's.")


def device_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")(fn)


_COMPILE_HELP = ("Compile the network (torch.compile): 12-27% faster per image after 7-23 s of compilation "
                 "per image size (4-8 s once cached on disk)")


def compile_option(auto: bool = False) -> Decorator:
    """``--compile`` (parameter ``compile_``): the network's low-resolution stage compiled (:mod:`derain.inference.compiled`).

    With ``auto``, ``--compile/--no-compile`` whose default ``None`` lets the command decide
    (:func:`~derain.inference.compiled.compile_pays`)."""
    if auto:
        return click.option("--compile/--no-compile", "compile_", default=None,
                            help=f"{_COMPILE_HELP} [default: when the video is long enough to win it back].")
    return click.option("--compile", "compile_", is_flag=True,
                        help=f"{_COMPILE_HELP}; for large folders of one image size, not one photo.")


def threads_option(help: str = "Torch threads (default: all cores).") -> Decorator:
    return click.option("--threads", type=click.IntRange(min=1), help=help)


class StrengthType(click.ParamType):
    """``auto`` or a number from 0 to 1 (:func:`~derain.inference.derainer.resolve_strength`)."""

    name = "auto|0..1"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..inference.derainer import resolve_strength

        try:
            return resolve_strength(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def strength_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--strength``: how much of the rain removal to apply (parameter ``strength``)."""
    return click.option("--strength", type=StrengthType(), default="auto", show_default=True,
                        help="auto: the model judges each photo (one that looks dry comes back as it is); "
                             "0..1: that much removal whatever it judges (1: full, 0: the input back).")(fn)



def printable(text: object) -> str:
    r"""``text`` with control characters escaped, so a file name holding a newline cannot forge output lines.

    >>> print(printable("a.png\nerror: b.png: fake"))
    a.png\nerror: b.png: fake
    """
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in str(text))


# Errors that are the user's input, not a bug: printed as one line.
USER_ERRORS = (DatasetError, CheckpointError, ConfigError, ImageReadError, FileNotFoundError)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the known input errors (:data:`USER_ERRORS`, and ``ValueError`` from bad option values that
    reached the library) into ``click.ClickException`` (``Error: ...``, exit 1, no traceback)."""
    try:
        yield
    except (*USER_ERRORS, ValueError) as e:
        raise click.ClickException(str(e)) from None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose known input errors end as one line (:func:`one_line_errors`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_line_errors():
            return fn(*args, **kwargs)

    return wrapper


def load_for_cli(model: str | None, weights: str | None, default: str = "default") -> Any:
    """``--model NAME`` (bundled weights), ``--weights PATH`` (file's own config), or both (file into NAME).

    A missing or bad file or an unknown name ends as one line (:func:`one_line_errors`).
    """
    import derain

    with one_line_errors():
        return derain.load_model(weights, name=model or (None if weights else default))
