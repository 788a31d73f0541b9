"""Base class of the architecture configs: plain dicts in and out (model files, the registry)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["ArchConfig"]

T = TypeVar("T", bound="ArchConfig")


class ArchConfig:
    """Mixin for frozen dataclass configs: ``to_dict()`` and a strict ``from_dict()`` (lists become tuples)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
