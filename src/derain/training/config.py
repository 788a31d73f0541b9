"""Training configuration: YAML file + ``key.sub=value`` overrides → a typed :class:`TrainConfig` (pydantic).

Every field has a default equal to the released recipe (reference.md §2) where the paper
specifies one; see ``configs/*.yaml`` for the presets (Table 2 v1-v4, released recipe). Values
are converted and checked by pydantic (types, ranges, unknown keys); a bad value is one
:class:`ConfigError` line naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..models.registry import model_spec

__all__ = [
    "SourceConfig", "ValidationConfig", "TrainConfig", "load_config", "apply_overrides", "build_config", "ConfigError",
    "DATA_ROOT_VARIABLE", "default_data_root",
]

#: Presets name their data as ``${DERAIN_DATA}/<set>``: ``derain train --data-root DIR``, this environment
#: variable, or the first existing ``../shared/data`` (beside the current folder or the source checkout).
DATA_ROOT_VARIABLE = "DERAIN_DATA"


class ConfigError(ValueError):
    """A training configuration is malformed."""


class _Config(BaseModel):
    """Unknown keys are errors; values are converted (YAML strings from overrides) and checked by pydantic."""

    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class SourceConfig(_Config):
    """One source of training pairs.

    kind:
        ``paired``: (rainy, clean) pairs from a folder in any layout :func:`derain.data.pairs.find_pairs` knows.
        ``synthetic``: clean photos from ``path`` with rain rendered on the fly (``preset``: light/medium/heavy/mixed).
        ``rain_layers``: clean photos from ``path`` with real rain layers (rainy − clean) of the pairs in
        ``layers`` composited onto them; the last ``holdout`` pairs of ``layers`` are left out (validation).
        For ``paired`` sources ``holdout`` leaves out the folder's last pairs the same way.
        Each layer's intensity is scaled by U(``scale``) and rotated by up to ``max_rotation`` degrees.
    """

    kind: str = "synthetic"
    path: str = ""
    weight: float = Field(1.0, gt=0)
    preset: str = "mixed"
    layers: list[str] = Field(default_factory=list)
    holdout: int = Field(0, ge=0)
    layout: str = "auto"
    scale: tuple[float, float] = (0.7, 1.1)
    max_rotation: float = Field(0.0, ge=0, le=90)

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source kind must be paired, synthetic or rain_layers, got {self.kind!r}")
        if not self.path:
            raise ValueError(f"source of kind {self.kind!r} needs a path")
        if self.kind == "rain_layers" and not self.layers:
            raise ValueError("a rain_layers source needs `layers`: paired folders to take rain layers from")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"source scale must be [low, high] with 0 < low <= high, got {list(self.scale)}")
        return self


SOURCE_KINDS = ("paired", "synthetic", "rain_layers")


class ValidationConfig(_Config):
    """Validation sets (never test sets): paired folders, each optionally restricted to its last ``holdout`` pairs."""

    paired: list[str] = Field(default_factory=list)
    holdout_only: list[str] = Field(default_factory=list)  # folders of which only the held-out pairs are used
    holdout: int = Field(0, ge=0)
    synthetic: int = Field(0, ge=0)  # rendered pairs from held-out clean photos
    held_out: dict[str, int] = Field(default_factory=dict)  # folder -> its last N pairs (overrides `holdout`)
    noharm: bool = False  # identity Y-PSNR on rain-free held-out images (reported, not in the mean)
    every: int = Field(500, ge=0)
    max_side: int = Field(0, ge=0)  # >0 crops validation images to this many pixels per side
    limit: int = Field(0, ge=0)  # at most this many pairs per folder (0 = all)

    @field_validator("held_out")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        if any(n < 1 for n in value.values()):
            raise ValueError(f"validation.held_out counts must be >= 1, got {value}")
        return value


class TrainConfig(_Config):
    model: str = "efderain-paper"
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig()])
    rainmix: bool = False
    rainmix_mode: Literal["paper", "released"] = "paper"
    streaks: str = ""
    rainmix_p: float = Field(1.0, ge=0, le=1)  # probability of applying RainMix to a sample
    identity_p: float = Field(0.0, ge=0, le=1)  # share of samples whose input is their clean image (rain-free -> unchanged)
    identity_weight: float = Field(1.0, gt=0)  # loss weight of those rain-free samples relative to the rainy ones
    gate_weight: float = Field(0.0, ge=0)  # weight of the rain gate's loss against the rain mask (models with a gate)
    colour_jitter: float = Field(0.0, ge=0, le=1)  # probability of an exposure and white-balance change of both images
    crop: int = Field(256, ge=16)
    flips: bool = False
    batch_size: int = Field(16, ge=1)
    iterations: int = Field(1000, ge=1)
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    decay_start: int = 400  # constant lr until here, then linear decay to 0 at `iterations`
    loss: Literal["l1", "l1_ssim"] = "l1_ssim"
    ssim_weight: float = 0.2
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: CPU autocast
    threads: int = Field(0, ge=0)  # 0: torch default
    workers: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    out_dir: str = "runs/train"
    log_every: int = Field(10, ge=1)
    sample_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(100, ge=1)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    init_weights: str = ""  # start from these weights (fine-tuning, as the released v3/v4)
    ema: float = Field(0.0, ge=0, lt=1)  # >0: validate and save an exponential moving average of the weights with this decay

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, value: Any) -> Any:
        ok = isinstance(value, (list, tuple)) and len(value) == 2
        ok = ok and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value)
        if not ok:
            raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if not 0 <= self.decay_start <= self.iterations:
            raise ValueError(f"decay_start must be in [0, iterations={self.iterations}], got {self.decay_start}")
        if not self.sources:
            raise ValueError("at least one data source is needed")
        if self.rainmix and not self.streaks:
            raise ValueError("rainmix needs `streaks`: a folder of rain-streak images")
        if self.gate_weight and not _has_gate(self.model, self.model_overrides):
            raise ValueError(f"gate_weight needs a model with a rain gate; {self.model} has none (model_overrides: {{gate: true}})")
        return self

    def check(self) -> None:
        """Check the config again (after its fields were changed in place); :class:`ConfigError` naming the key."""
        build_config(self.model_dump())


def _has_gate(model: str, overrides: dict[str, Any]) -> bool:
    try:
        config = model_spec(model).config
    except ValueError:
        return True  # an unknown model is reported when it is built
    return bool({**config, **overrides}.get("gate", False))


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: dict[str, Any]) -> str:
    """One line naming the key for a pydantic error."""
    key, kind, ctx, got = _key(error["loc"]), error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return f"unknown config key(s) {key}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, name = bounds[kind]
        if key in ("identity_p", "colour_jitter", "rainmix_p"):
            return f"{key} must be in [0, 1], got {got!r}"
        return f"{key} must be {op} {ctx[name]}, got {got!r}"
    if kind == "literal_error":
        return f"{key} must be {ctx['expected']}, got {got!r}"
    if kind in ("int_parsing", "float_parsing", "int_type", "float_type"):
        return f"{key} must be a number, got {got!r}"
    if kind == "int_from_float":
        return f"{key} must be a whole number, got {got!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{key} must be true or false, got {got!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key} must be a mapping, got {got!r}"
    return f"{key}: {error['msg'][0].lower()}{error['msg'][1:]}, got {got!r}"


def build_config(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a (parsed YAML) mapping; :class:`ConfigError` naming the first bad key."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_message(e.errors()[0])) from None


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
    cfg = build_config(data)
    _expand_paths(cfg, base or Path.cwd(), Path(data_root) if data_root else default_data_root())
    return cfg
