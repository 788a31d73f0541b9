"""What the subcommands share: the user-error → one-line-message decorator, model loading and the
options every model-running command takes (``--model/--weights``, ``--device``, ``--precision``,
``--threads``), declared once here."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import click

from ..errors import InvalidArgument, UserError
from ..inference.precision import PRECISIONS
from ..metrics import PROTOCOLS

__all__ = [
    "USER_ERRORS",
    "compile_option",
    "device_option",
    "model_for_cli",
    "model_options",
    "models_option",
    "one_line_errors",
    "precision_option",
    "printable",
    "protocol_option",
    "runner_for_cli",
    "strength_option",
    "threads_option",
    "user_errors",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--model NAME`` (parameter ``model_name``) and ``--weights FILE``, resolved by :func:`runner_for_cli`
    (or :func:`model_for_cli` where a command needs the torch model itself)."""
    fn = click.option("--weights", type=click.Path(),  # a folder is refused by the loader, in one line
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


_COMPILE_HELP = ("Compile the network (torch.compile): faster per image, after a compilation of seconds to tens of "
                 "seconds per new image size (BENCHMARKS.md, \"Compiled path\")")


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
                        help="auto: the model judges each image (one that looks dry comes back as it is); "
                             "0..1: that much removal whatever it judges (1: full, 0: the input back).")(fn)



def printable(text: object) -> str:
    r"""``text`` with control characters escaped, so a file name holding a newline cannot forge output lines.

    >>> print(printable("a.png\nerror: b.png: fake"))
    a.png\nerror: b.png: fake
    """
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in str(text))


# Errors that are the user's input, not a bug: printed as one line.
USER_ERRORS = (UserError, FileNotFoundError)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the user's errors (:data:`USER_ERRORS`) into one line without a traceback: an
    :class:`~derain.errors.InvalidArgument` that names its option is a usage error (exit 2), the others
    ``Error: ...`` (exit 1). Any other exception is a bug and goes on (:func:`~derain.cli.main.main` reports it)."""
    try:
        yield
    except InvalidArgument as e:
        if e.option and str(e).startswith(e.option):  # the message names its option itself
            raise click.UsageError(str(e)) from None
        if e.option:
            raise click.BadParameter(str(e), param_hint=e.option) from None
        raise click.ClickException(str(e)) from None
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose known input errors end as one line (:func:`one_line_errors`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_line_errors():
            return fn(*args, **kwargs)

    return wrapper


def model_for_cli(model: str | None, weights: str | None) -> Any:
    """The torch model of ``--model NAME`` (bundled weights), ``--weights PATH`` (the file's own config) or
    both (the file in NAME's architecture): :func:`~derain.inference.loading.load_source`; a missing or bad
    file or an unknown name ends as one line."""
    from ..inference.loading import load_source

    with one_line_errors():
        return load_source(model, weights)


def runner_for_cli(
    model: str | None,
    weights: str | None,
    *,
    onnx_path: str | None = None,
    device: str = "cpu",
    precision: str = "auto",
    threads: int | None = None,
    backend: str = "torch",
    compile_: bool = False,
    strength: Any = "auto",
) -> Any:
    """The runner of a model-running command from its options (:func:`~derain.inference.loading.load_derainer`,
    the one way to a runner): ``--onnx PATH`` or ``--model``/``--weights``; its errors end as one line."""
    from ..inference.loading import load_derainer

    if onnx_path and (model or weights):
        raise click.UsageError("--onnx PATH is the model: leave out --model/--weights")
    with one_line_errors():
        return load_derainer(onnx_path or model, weights=weights, device=device, precision=precision, threads=threads,
                             backend=backend, compile=compile_, strength=strength)
