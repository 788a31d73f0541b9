"""Training presets shipped with the package (``src/derain/configs/*.yaml``).

>>> [p for p in list_presets() if p.startswith("paper-")]
['paper-v1', 'paper-v2', 'paper-v3', 'paper-v4']
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import ConfigError

__all__ = ["list_presets", "resolve_preset"]


def _folder() -> Path:
    return Path(str(resources.files("derain") / "configs"))


def list_presets() -> list[str]:
    """Names of the bundled presets (file names without ``.yaml``)."""
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def resolve_preset(name_or_path: str) -> Path:
    """A YAML file path as given, or the bundled preset of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = _folder() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"no config file {name_or_path!r} and no preset of that name; presets: {', '.join(list_presets())}")
