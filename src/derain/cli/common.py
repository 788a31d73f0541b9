"""What the subcommands share: the user-error → one-line-message decorator and model loading."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from ..evaluation.pairs import DatasetError
from ..io.images import ImageReadError
from ..models.checkpoint import CheckpointError
from ..training.config import ConfigError

__all__ = ["USER_ERRORS", "user_errors", "load_for_cli", "printable"]


def printable(text: object) -> str:
    r"""``text`` with control characters escaped, so a file name holding a newline cannot forge output lines.

    >>> print(printable("a.png\nerror: b.png: fake"))
    a.png\nerror: b.png: fake
    """
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in str(text))


# Errors that are the user's input, not a bug: printed as one line.
USER_ERRORS = (DatasetError, CheckpointError, ConfigError, ImageReadError, FileNotFoundError)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the known input errors into ``click.ClickException`` (``Error: ...``, exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from None
        except ValueError as e:  # bad option values that reached the library
            raise click.ClickException(str(e)) from None

    return wrapper


def load_for_cli(model: str | None, weights: str | None, default: str = "default") -> Any:
    """``--model NAME`` (bundled weights), ``--weights PATH`` (file's own config), or both (file into NAME)."""
    import derain

    if weights:
        return derain.load_model(weights, name=model)
    return derain.create_model(model or default, pretrained=True)
