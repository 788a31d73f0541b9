"""Training configuration: YAML file + ``key.sub=value`` overrides → a typed :class:`TrainConfig`.

Every field has a default equal to the released recipe (reference.md §2) where the paper
specifies one; see ``configs/*.yaml`` for the presets (Table 2 v1-v4, released recipe).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = [
    "SourceConfig", "ValidationConfig", "TrainConfig", "load_config", "apply_overrides", "ConfigError", "DATA_ROOT_VARIABLE",
    "default_data_root",
]

#: Presets name their data as ``${DERAIN_DATA}/<set>``: ``derain train --data-root DIR``, this environment
#: variable, or the first existing ``../shared/data`` (beside the current folder or the source checkout).
DATA_ROOT_VARIABLE = "DERAIN_DATA"


class ConfigError(ValueError):
    """A training configuration is malformed."""


@dataclass
class SourceConfig:
    """One source of training pairs.

    kind:
        ``paired``: (rainy, clean) pairs from a folder in any layout :func:`derain.evaluation.find_pairs` knows.
        ``synthetic``: clean photos from ``path`` with rain rendered on the fly (``preset``: light/medium/heavy/mixed).
        ``rain_layers``: clean photos from ``path`` with real rain layers (rainy − clean) of the pairs in
        ``layers`` composited onto them; the last ``holdout`` pairs of ``layers`` are left out (validation).
        For ``paired`` sources ``holdout`` leaves out the folder's last pairs the same way.
        Each layer's intensity is scaled by U(``scale``) and rotated by up to ``max_rotation`` degrees.
    """

    kind: str = "synthetic"
    path: str = ""
    weight: float = 1.0
    preset: str = "mixed"
    layers: list[str] = field(default_factory=list)
    holdout: int = 0
    layout: str = "auto"
    scale: tuple[float, float] = (0.7, 1.1)
    max_rotation: float = 0.0


@dataclass
class ValidationConfig:
    """Validation sets (never test sets): paired folders, each optionally restricted to its last ``holdout`` pairs."""

    paired: list[str] = field(default_factory=list)
    holdout_only: list[str] = field(default_factory=list)  # folders of which only the held-out pairs are used
    holdout: int = 0
    synthetic: int = 0  # rendered pairs from held-out clean photos
    held_out: dict[str, int] = field(default_factory=dict)  # folder -> its last N pairs (overrides `holdout`)
    noharm: bool = False  # identity Y-PSNR on rain-free held-out images (reported, not in the mean)
    every: int = 500
    max_side: int = 0  # downscale nothing by default; >0 crops validation images to this many pixels per side
    limit: int = 0  # at most this many pairs per folder (0 = all)


@dataclass
class TrainConfig:
    model: str = "efderain-paper"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    rainmix: bool = False
    rainmix_mode: str = "paper"
    streaks: str = ""
    rainmix_p: float = 1.0  # probability of applying RainMix to a sample
    identity_p: float = 0.0  # share of samples whose input is their clean image (rain-free -> unchanged)
    identity_weight: float = 1.0  # loss weight of those rain-free samples relative to the rainy ones
    colour_jitter: float = 0.0  # probability of an exposure and white-balance change of both images
    crop: int = 256
    flips: bool = False
    batch_size: int = 16
    iterations: int = 1000
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_start: int = 400  # constant lr until here, then linear decay to 0 at `iterations`
    loss: str = "l1_ssim"  # "l1" or "l1_ssim"
    ssim_weight: float = 0.2
    precision: str = "fp32"  # fp32 | bf16 (CPU autocast)
    threads: int = 0  # 0: torch default
    workers: int = 0
    seed: int = 0
    out_dir: str = "runs/train"
    log_every: int = 10
    sample_every: int = 0
    checkpoint_every: int = 100
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    init_weights: str = ""  # start from these weights (fine-tuning, as the released v3/v4)

    def validate(self) -> None:
        if self.loss not in ("l1", "l1_ssim"):
            raise ConfigError(f"loss must be 'l1' or 'l1_ssim', got {self.loss!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.rainmix_mode not in ("paper", "released"):
            raise ConfigError(f"rainmix_mode must be 'paper' or 'released', got {self.rainmix_mode!r}")
        for name, low in (("iterations", 1), ("batch_size", 1), ("crop", 16), ("log_every", 1), ("checkpoint_every", 1),
                          ("threads", 0), ("workers", 0), ("seed", 0), ("sample_every", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.validation.every < 0 or self.validation.synthetic < 0 or self.validation.holdout < 0:
            raise ConfigError("validation.every, validation.synthetic and validation.holdout must be >= 0")
        if any(int(n) < 1 for n in self.validation.held_out.values()):
            raise ConfigError(f"validation.held_out counts must be >= 1, got {self.validation.held_out}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(self.betas)!r}")
        if not 0 <= self.decay_start <= self.iterations:
            raise ConfigError(f"decay_start must be in [0, iterations={self.iterations}], got {self.decay_start}")
        if not self.sources:
            raise ConfigError("at least one data source is needed")
        for s in self.sources:
            if s.kind not in ("paired", "synthetic", "rain_layers"):
                raise ConfigError(f"source kind must be paired, synthetic or rain_layers, got {s.kind!r}")
            if not s.path:
                raise ConfigError(f"source of kind {s.kind!r} needs a path")
            if s.weight <= 0:
                raise ConfigError(f"source weights must be > 0, got {s.weight}")
            if s.kind == "rain_layers" and not s.layers:
                raise ConfigError("a rain_layers source needs `layers`: paired folders to take rain layers from")
            if len(s.scale) != 2 or not 0 < s.scale[0] <= s.scale[1]:
                raise ConfigError(f"source scale must be [low, high] with 0 < low <= high, got {list(s.scale)}")
            if not 0 <= s.max_rotation <= 90:
                raise ConfigError(f"source max_rotation must be in [0, 90] degrees, got {s.max_rotation}")
        if not self.identity_weight > 0:
            raise ConfigError(f"identity_weight must be > 0, got {self.identity_weight}")
        for name in ("identity_p", "colour_jitter", "rainmix_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.rainmix and not self.streaks:
            raise ConfigError("rainmix needs `streaks`: a folder of rain-streak images")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, target: Any, name: str) -> Any:
    """Convert a YAML/override value to the type of the default ``target``."""
    if dataclasses.is_dataclass(target) and not isinstance(target, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping")
        return _build(type(target), value, f"{name}.")
    if isinstance(target, list) and target and dataclasses.is_dataclass(target[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list")
        return [_build(type(target[0]), v, f"{name}[{i}].") for i, v in enumerate(value)]
    if isinstance(target, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(target, (int, float)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if isinstance(target, int):
            if not number.is_integer():
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            return int(number)
        return number
    if isinstance(target, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        return tuple(value)
    if isinstance(target, (list, dict)) and isinstance(value, str):
        return yaml.safe_load(value)
    return value


_LIST_DEFAULTS = {("TrainConfig", "sources"): [SourceConfig()]}


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(sorted(prefix + k for k in unknown))}")
    default = cls()
    kwargs = {}
    for key, value in data.items():
        target = _LIST_DEFAULTS.get((cls.__name__, key), getattr(default, key))
        kwargs[key] = _coerce(value, target, prefix + key)
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def default_data_root() -> Path:
    """``$DERAIN_DATA``, else ``../shared/data`` beside the current folder or the source checkout (the first that
    exists), else ``../shared/data`` (a missing folder is reported by the source that needs it)."""
    if os.environ.get(DATA_ROOT_VARIABLE):
        return Path(os.environ[DATA_ROOT_VARIABLE]).expanduser()
    candidates = [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


def _expand_paths(cfg: TrainConfig, base: Path, data_root: Path) -> None:
    """Resolve relative data paths against ``base``; ``${DERAIN_DATA}`` is ``data_root``, other ``${VAR}`` expanded."""

    def fix(p: str) -> str:
        if not p:
            return p
        p = p.replace("${" + DATA_ROOT_VARIABLE + "}", str(data_root)).replace("$" + DATA_ROOT_VARIABLE, str(data_root))
        p = os.path.expandvars(os.path.expanduser(p))
        return p if os.path.isabs(p) else str((base / p).resolve())

    for s in cfg.sources:
        s.path = fix(s.path)
        s.layers = [fix(p) for p in s.layers]
    cfg.streaks = fix(cfg.streaks)
    cfg.validation.paired = [fix(p) for p in cfg.validation.paired]
    cfg.validation.holdout_only = [fix(p) for p in cfg.validation.holdout_only]
    cfg.validation.held_out = {fix(p): int(n) for p, n in cfg.validation.held_out.items()}
    cfg.init_weights = fix(cfg.init_weights)


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Iterable[str] = (),
    base: Path | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply overrides, validate.

    Relative data paths are resolved against ``base`` (default: the current directory);
    ``${DERAIN_DATA}`` in a path (the presets' data) is ``data_root`` (default :func:`default_data_root`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    cfg = _build(TrainConfig, data)
    _expand_paths(cfg, base or Path.cwd(), Path(data_root) if data_root else default_data_root())
    cfg.validate()
    return cfg
