"""The architectures a model file can name, each a model class and its config class: ``"efderain"`` and its
variants (``"efderain-rep"``: trained with re-parameterisable convolutions; ``"efderain-refine"``: plus a
low-resolution refinement; ``"efderain-naf"``: NAFNet blocks in the KPN) and ``"prenet"``.

The bottom of the models layer: model files (:mod:`.checkpoint`) record and rebuild architectures
through it, and the registry of named configurations (:mod:`.registry`) builds on both.

>>> build_architecture("efderain", {"widths": [8, 8, 8], "depth": 1}).config.widths
(8, 8, 8)
>>> architecture_of(build_architecture("prenet", {}))
'prenet'
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .efderain import EfDeRain, EfDeRainConfig
from .efderain_naf import NAFEfDeRain
from .efderain_refine import RefineEfDeRain, RefineEfDeRainConfig
from .efderain_rep import RepEfDeRain, RepEfDeRainConfig
from .prenet import PReNet, PReNetConfig

__all__ = ["ARCHITECTURES", "architecture_of", "build_architecture"]

#: architecture name -> (model class, config class); every model class has ``.config.to_dict()``
ARCHITECTURES: dict[str, tuple[type[nn.Module], Any]] = {
    "efderain": (EfDeRain, EfDeRainConfig),
    "efderain-rep": (RepEfDeRain, RepEfDeRainConfig),
    "efderain-refine": (RefineEfDeRain, RefineEfDeRainConfig),
    "efderain-naf": (NAFEfDeRain, EfDeRainConfig),
    "prenet": (PReNet, PReNetConfig),
}


def build_architecture(architecture: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate ``architecture`` (a key of :data:`ARCHITECTURES`) from a config dict."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    cls, config_cls = ARCHITECTURES[architecture]
    return cls(config_cls.from_dict(dict(config)))


def architecture_of(model: nn.Module) -> str:
    """The :data:`ARCHITECTURES` name of ``model``'s class (``ValueError`` for any other module)."""
    for name, (cls, _) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a known architecture ({sorted(ARCHITECTURES)})")
