"""Training presets shipped with the package (``src/derain/configs/*.yaml``).

* the stages that reproduce the bundled weights, each from the previous stage's weights (``init_weights``):
  ``default-cpu-v11`` for ``default``, the last stage of a chain from scratch whose earlier stages, each from the
  one before's committed fp16 weights, are the repository's ``experiments/default-he-s*.yaml`` (MODEL_CARD.md,
  "Version 11"); ``default-cpu`` → ``default-cpu-ft`` → ``default-cpu-v3`` → ``default-cpu-v4`` →
  ``default-cpu-v5`` → ``default-cpu-v7`` for ``default`` version 7, whose ``default-cpu-v3`` run ``fast``'s
  ``fast-cpu-v4`` → ``fast-cpu-v7`` starts from (MODEL_CARD.md, "Training");
* the paper's ablation, ``paper-v1`` … ``paper-v4`` (Table 2), and ``released``, the authors' released recipe;
* :data:`TEMPLATE`, ``my-data``: a documented template for your own data, which validates once its data
  paths are set.

``derain train`` also takes the path of any YAML file, e.g. a stage tried and not shipped, kept in the
repository's ``experiments/`` folder.

>>> [p for p in list_presets() if p.startswith("paper-")]
['paper-v1', 'paper-v2', 'paper-v3', 'paper-v4']
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import ConfigError

__all__ = ["TEMPLATE", "list_presets", "resolve_preset"]

#: The preset that is a template for a user's own data: it names no data until its paths are set.
TEMPLATE = "my-data"


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
