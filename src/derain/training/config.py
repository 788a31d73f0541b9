"""Training configuration: YAML file + ``key.sub=value`` overrides → a typed :class:`TrainConfig` (pydantic).

Every field has a default equal to the released recipe (reference.md §2) where the paper
specifies one; see ``configs/*.yaml`` for the presets (Table 2 v1-v4, the released recipe, the bundled
models' stages, ``my-data`` for your own data). A config is validated once: pydantic converts and checks
the values (types, ranges, unknown keys) and expands the data paths in the same pass
(:data:`~derain.data.folders.DataPath`); a bad value is one :class:`ConfigError` line naming the key. A
:class:`TrainConfig` is frozen: what was validated is what trains.

The data a run reads is described once, in three keys: ``sources`` (what trains), ``holdout``
(``{FOLDER: N}``: the last N pairs or photos of FOLDER never train, and validation scores them instead, once
each, also where photo folders nest (a source on ``clean/Urban100`` leaves out what ``clean``'s hold-out holds);
:class:`~derain.data.folders.HoldOut`, which training and validation both read) and ``validation``
(:class:`~derain.evaluation.validation.ValidationConfig`: folders used only for validation, and when).
The hold-out's other spellings (a source's ``holdout``, ``validation.held_out`` ...) are read as ``holdout``
(:func:`upgrade_spellings`).

``judgement`` (:class:`JudgementConfig`, optional) adds labels for a model's image gate: whole photos from
folders of real rainy photos and of dry ones (:mod:`derain.training.judgement`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..data.folders import DATA_ROOT_VARIABLE, DataPath, HoldOut, default_data_root, expand_in_context
from ..errors import UserError
from ..evaluation.validation import ValidationConfig
from ..models.registry import model_spec

__all__ = [
    "SourceConfig", "JudgementConfig", "ValidationConfig", "TrainConfig", "load_config", "apply_overrides", "build_config", "ConfigError",
    "DATA_ROOT_VARIABLE", "default_data_root", "upgrade_spellings", "config_changes", "RUNTIME_KEYS", "SCHEDULE_KEYS",
]


class ConfigError(UserError, ValueError):
    """A training configuration is malformed."""


class _Config(BaseModel):
    """Unknown keys are errors; values are converted (YAML strings from overrides) and checked by pydantic; frozen.
    Numbers must be finite: ``.inf`` or ``.nan`` (``lr=.inf``) would only surface as a diverged run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class SourceConfig(_Config):
    """One source of training pairs.

    kind:
        ``paired``: (rainy, clean) pairs from a folder in any layout :func:`derain.data.pairs.find_pairs` knows.
        ``synthetic``: clean photos from ``path`` with rain rendered on the fly (``preset``: light/medium/heavy/mixed/
        real); with ``streaks_only`` the target is the clean photo under the rainy one's veil and JPEG compression,
        so that only the streaks are learned as rain (fog and compression are the photo's).
        ``rain_layers``: clean photos from ``path`` with real rain layers (rainy − clean) of the pairs in
        ``layers`` composited onto them. Each layer's intensity is scaled by U(``scale``), and with ``zoom``
        (``[low, high]`` within [0.25, 4], default ``[1, 1]``) its size by a factor log-uniform in that range:
        streaks wider and longer (close to the camera) or more of them, shorter and, below 2 px, fainter (far
        off) than the pairs' own (:meth:`~derain.data.rain_layers.RainLayerBank.sample`).

    max_rotation:
        degrees; each sample's rain turns by U(−max_rotation, max_rotation): a rain layer before it is composited,
        a ``synthetic`` source's streak direction (the preset's range shifted; the photo, its veil and JPEG blocks
        stay upright), a ``paired`` sample rainy and clean alike (cropped from a larger window and turned, bicubic,
        so no corner is empty; a pair too small for the window stays upright). Rain in photographs falls at any
        slant that wind and a tilted camera give it, while the paired sets' and the presets' streaks are near
        vertical, and a network trained on those leaves streaks slanted by 40° as they are
        (``benchmarks/slant.py``).

    A source reads what the config's ``holdout`` leaves of its folders (``path`` and ``layers``).
    """

    kind: str = "synthetic"
    path: DataPath = ""
    weight: float = Field(1.0, gt=0)
    preset: str = "mixed"
    layers: list[DataPath] = Field(default_factory=list)
    layout: str = "auto"  # a paired folder's layout (find_pairs); validation of its held-out pairs uses it too
    scale: tuple[float, float] = (0.7, 1.1)
    zoom: tuple[float, float] = (1.0, 1.0)  # rain_layers: each layer resized by a log-uniform factor in this range
    max_rotation: float = Field(0.0, ge=0, le=90)
    # synthetic: the target keeps the rainy image's veil and JPEG compression (only the streaks are to be removed)
    streaks_only: bool = False

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
        if not 0.25 <= self.zoom[0] <= self.zoom[1] <= 4:
            raise ValueError(f"source zoom must be [low, high] with 0.25 <= low <= high <= 4, got {list(self.zoom)}")
        if tuple(self.zoom) != (1.0, 1.0) and self.kind != "rain_layers":
            raise ValueError(f"zoom resizes rain layers (kind: rain_layers), not a {self.kind} source's rain")
        if self.streaks_only and self.kind != "synthetic":
            raise ValueError(f"streaks_only is for rendered rain (kind: synthetic), not a {self.kind} source")
        return self


SOURCE_KINDS = ("paired", "synthetic", "rain_layers")

#: Folders whose odd-numbered photos are a report's held-out half: training reads them only with ``select: even``.
EVEN_ONLY_FOLDERS = ("InternetData147",)


class JudgementConfig(_Config):
    """Image-level labels for a model's image gate (``gate_global``): each step adds ``weight`` × the binary
    cross-entropy of ``image_gate`` on ``batch`` whole photos, half from ``rainy`` (label 1) and half from ``dry``
    (label 0) (:mod:`derain.training.judgement`).

    rainy:
        folders of real rainy photos (no ground truth needed); ``select`` picks their files by the number in the
        stem: ``all``, ``even`` or ``odd`` (:func:`~derain.data.folders.numbered`; a file without a number is
        left out by ``even``/``odd``). InternetData147 trains only with ``select: even``: its odd half is the
        real-rain report's (``derain bench real --only odd``).
    dry:
        folders of rain-free photos; what the config's ``holdout`` leaves of them (held-out photos never train).
    size, zoom:
        each photo is resized so that its short side is ``size`` × U(``zoom``) px, then a random ``size``² crop
        is taken (zoom 1: the crop spans the short side): most of the photo, as the gate judges whole photos.
    jpeg_p, jpeg_quality:
        each view, rainy or dry alike, is re-encoded as JPEG with probability ``jpeg_p`` at a quality drawn from
        ``jpeg_quality``: real rainy photos are mostly JPEGs, so compression must not tell the labels apart.
    """

    rainy: list[DataPath] = Field(default_factory=list)
    dry: list[DataPath] = Field(default_factory=list)
    select: Literal["all", "odd", "even"] = "all"
    batch: int = Field(4, ge=2)
    weight: float = Field(0.1, gt=0)
    size: int = Field(256, ge=32)
    zoom: tuple[float, float] = (1.0, 1.5)
    jpeg_p: float = Field(0.75, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (50, 95)

    @model_validator(mode="after")
    def _consistent(self) -> JudgementConfig:
        if not self.rainy or not self.dry:
            raise ValueError("judgement needs `rainy` and `dry`: folders of real rainy photos and of rain-free ones")
        if self.batch % 2:
            raise ValueError(f"judgement.batch must be even (half rainy, half dry), got {self.batch}")
        if not 1 <= self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"judgement.zoom must be [low, high] with 1 <= low <= high, got {list(self.zoom)}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"judgement.jpeg_quality must be [low, high] within [1, 100], got {list(self.jpeg_quality)}")
        for folder in self.rainy:
            if self.select != "even" and any(part in EVEN_ONLY_FOLDERS for part in Path(folder).parts):
                raise ValueError(f"judgement.rainy {folder}: its odd-numbered photos are held out for the real-rain "
                                 "report; train on its even half only (judgement.select: even)")
        return self
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: the optimizer's step sizes are float32 numbers


class TrainConfig(_Config):
    """A training run, as ``derain train`` reads it: model, data (``sources``, ``holdout``, ``validation``), loss,
    schedule and where the run goes (``out_dir``)."""

    model: str = "efderain-paper"
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig()])
    holdout: dict[str, int] = Field(default_factory=dict)  # folder -> its last N pairs or photos: never trained, validated
    rainmix: bool = False
    rainmix_mode: Literal["paper", "released"] = "paper"
    streaks: DataPath = ""
    rainmix_p: float = Field(1.0, ge=0, le=1)  # probability of applying RainMix to a sample
    identity_p: float = Field(0.0, ge=0, le=1)  # share of samples whose input is their clean image (rain-free -> unchanged)
    identity_weight: float = Field(1.0, gt=0)  # loss weight of those rain-free samples relative to the rainy ones
    gate_weight: float = Field(0.0, ge=0)  # weight of the rain gate's loss against the rain mask (models with a gate)
    colour_jitter: float = Field(0.0, ge=0, le=1)  # probability of an exposure and white-balance change of both images
    grey_p: float = Field(0.0, ge=0, le=1)  # probability of turning both images grey (R = G = B in -> R = G = B out)
    crop: int = Field(256, ge=16)
    # each step's batch loses 0..crop_trim rows at the bottom and 0..crop_trim columns at the right (drawn from the
    # seed and the step), so the padding to the network's multiple varies as it does on photos of any size and the
    # network trains at every distance from the image's edge to the canvas's zero padding (the bottom and right edges;
    # all four with the model's `centre_canvas`); 0: every batch `crop`²
    crop_trim: int = Field(0, ge=0)
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
    init_weights: DataPath = ""  # start from these weights (fine-tuning, as the released v3/v4)
    ema: float = Field(0.0, ge=0, lt=1)  # >0: validate and save an exponential moving average of the weights with this decay
    # train only the parameters of these submodules (e.g. [refine]: a new head on trained weights); the others stay
    # as init_weights left them. Empty: all
    train_only: tuple[str, ...] = ()
    # a step whose loss or gradient norm is not finite is skipped; this many in a row stop the run (TrainingDiverged)
    max_bad_steps: int = Field(5, ge=1)
    judgement: JudgementConfig | None = None  # labels for the image gate from real rainy and dry photos (None: none)

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, value: Any) -> Any:
        ok = isinstance(value, (list, tuple)) and len(value) == 2
        ok = ok and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value)
        if not ok:
            raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")
        return value

    @field_validator("train_only", mode="before")
    @classmethod
    def _train_only(cls, value: Any) -> Any:
        """One name or a list of names of submodules (``refine``; a trailing dot is dropped); none empty."""
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"train_only must be a list of submodule names (e.g. [refine]), got {value!r}")
        names = [n.strip().rstrip(".") for n in names]
        if not all(names):
            raise ValueError(f"train_only names must not be empty, got {value!r}")
        return tuple(names)

    @field_validator("holdout")
    @classmethod
    def _holdout(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        """Counts of at least 1, keyed by the expanded folders (as the sources' paths are)."""
        folders: dict[str, int] = {}
        for folder, n in value.items():
            if n < 1:
                raise ValueError(f"holdout counts must be >= 1, got {value}")
            path = expand_in_context(folder, info.context)
            if folders.setdefault(path, n) != n:
                raise ValueError(f"holdout names the folder {path} twice, with {folders[path]} and {n}")
        return folders

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.lr / (1 - self.betas[0]) > FLOAT32_MAX:  # torch refuses such a step (an overflow error, not a diverged run)
            raise ValueError(f"lr must be at most {FLOAT32_MAX * (1 - self.betas[0]):.3g} (Adam's first step, lr / (1 - betas[0]), "
                             f"must fit a float32), got {self.lr:g}")
        if not 0 <= self.decay_start <= self.iterations:
            raise ValueError(f"decay_start must be in [0, iterations={self.iterations}], got {self.decay_start}")
        if not self.sources:
            raise ValueError("at least one data source is needed")
        if self.crop_trim >= self.crop // 2:
            raise ValueError(f"crop_trim must be below half the crop ({self.crop // 2}), got {self.crop_trim}")
        if self.rainmix and not self.streaks:
            raise ValueError("rainmix needs `streaks`: a folder of rain-streak images")
        if self.gate_weight and not _has_gate(self.model, self.model_overrides):
            raise ValueError(f"gate_weight needs a model with a rain gate; {self.model} has none (model_overrides: {{gate: true}})")
        if self.train_only:
            if not self.init_weights:
                raise ValueError("train_only needs init_weights: the parameters it leaves out keep those weights")
            if self.gate_weight and "gate" not in self.train_only:
                raise ValueError("gate_weight trains the rain gate: train_only must name `gate` (or set gate_weight: 0)")
            if self.judgement is not None and "gate_global" not in self.train_only:
                raise ValueError("judgement trains the image gate: train_only must name `gate_global` (or drop judgement)")
        if self.judgement is not None:
            if not _has_gate(self.model, self.model_overrides, "gate_global"):
                raise ValueError(f"judgement needs a model that judges whole images (an image gate); {self.model} has none "
                                 "(model_overrides: {gate: true, gate_global: true})")
            held = [folder for folder in self.judgement.rainy if folder in self.holdout]
            if held:
                raise ValueError(f"holdout names {held[0]}, a judgement.rainy folder: real rainy photos have no clean "
                                 "image to validate on; keep photos out of training with judgement.select")
        return self

    def hold_out(self) -> HoldOut:
        """The hold-out as training and validation both read it: ``holdout``, with the sources telling which folders
        hold clean photos (a synthetic or rain-layer source's ``path``, ``judgement.dry``), which hold pairs (a paired
        source's ``path``, a rain-layer source's ``layers``) and which layout a paired folder has."""
        photos = frozenset(s.path for s in self.sources if s.kind != "paired") | frozenset(self.judgement.dry if self.judgement else ())
        layouts = {s.path: s.layout for s in self.sources if s.kind == "paired" and s.layout != "auto"}
        pairs = frozenset(s.path for s in self.sources if s.kind == "paired") | frozenset(
            folder for s in self.sources for folder in s.layers)
        return HoldOut(dict(self.holdout), photos, layouts, pairs)


def _has_gate(model: str, overrides: dict[str, Any], key: str = "gate") -> bool:
    """Whether the model's config (with ``overrides``) turns ``key`` on: ``gate`` (a rain gate), ``gate_global``
    (an image gate)."""
    try:
        config = model_spec(model).config
    except ValueError:
        return True  # an unknown model is reported when it is built
    return bool({**config, **overrides}.get(key, False))


# Config keys that change how fast a run goes, what it prints or when it gives up, not what it learns: free to
# change on --resume (``max_bad_steps`` only says how many skipped steps in a row end a run).
RUNTIME_KEYS = frozenset({"threads", "workers", "log_every", "sample_every", "max_bad_steps"})
# Keys that change the schedule of a run, not its model or data: changed on --resume only with allow_changes.
SCHEDULE_KEYS = frozenset({"iterations", "decay_start", "lr", "checkpoint_every", "validation"})


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so a config read back from a checkpoint compares equal to a fresh one."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _saved_value(saved: dict[str, Any], key: str) -> Any:
    """``saved[key]``; a key the checkpoint's config lacks (a run older than that key) has its default, and so has
    a key that a saved section (``validation: {...}``) lacks."""
    if key not in TrainConfig.model_fields:
        return saved.get(key)
    field = TrainConfig.model_fields[key]
    if key not in saved:
        default = field.get_default(call_default_factory=True)
        return default.model_dump() if isinstance(default, BaseModel) else default
    sections = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type) and issubclass(t, BaseModel)]
    try:
        if sections and isinstance(saved[key], dict):
            return sections[0].model_validate(saved[key]).model_dump()
        if sections and isinstance(saved[key], list):  # a list of sections (``sources``): each with its defaults
            return [sections[0].model_validate(item).model_dump() for item in saved[key]]
    except ValueError:  # not a section this version reads: it differs
        pass
    return saved[key]


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The top-level keys (other than :data:`RUNTIME_KEYS`) whose values differ between a checkpoint's config and
    ``cfg``; a key the checkpoint lacks counts as its default (runs from before the key was added resume), and
    the hold-out's other spellings count as ``holdout`` (:func:`upgrade_spellings`)."""
    saved = upgrade_spellings(saved)
    wanted = cfg.to_dict()
    keys = (set(saved) | set(wanted)) - RUNTIME_KEYS
    return sorted(k for k in keys if _plain(_saved_value(saved, k)) != _plain(wanted.get(k)))


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
    if kind == "value_error":  # a section's own check (a source's, the judgement's) names the section
        message = str(ctx.get("error", error["msg"]))
        return f"{key}: {message}" if key and not message.startswith(key) else message
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, name = bounds[kind]
        if key in ("identity_p", "colour_jitter", "grey_p", "rainmix_p"):
            return f"{key} must be in [0, 1], got {got!r}"
        return f"{key} must be {op} {ctx[name]}, got {got!r}"
    if kind == "literal_error":
        return f"{key} must be {ctx['expected']}, got {got!r}"
    if kind == "finite_number":
        return f"{key} must be a finite number, got {got!r}"
    if kind in ("int_parsing", "float_parsing", "int_type", "float_type"):
        return f"{key} must be a number, got {got!r}"
    if kind == "int_from_float":
        return f"{key} must be a whole number, got {got!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{key} must be true or false, got {got!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key} must be a mapping, got {got!r}"
    return f"{key}: {error['msg'][0].lower()}{error['msg'][1:]}, got {got!r}"


def _count(value: Any, key: str) -> int:
    """A hold-out count as YAML or an override gives it (a whole number >= 0)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{key} must be a whole number >= 0, got {value!r}")
    return value


def upgrade_spellings(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the hold-out's other spellings read as ``holdout: {FOLDER: N}``, which means the same:

    * ``sources[i].holdout: N`` — N of a paired source's ``path``, N of each folder in a rain-layer source's ``layers``;
    * ``validation.holdout_only: [FOLDER, ...]`` with ``validation.holdout: N``, and ``validation.held_out: {FOLDER: N}``;
    * ``validation.synthetic: N`` — N photos of each clean-photo folder (a synthetic or rain-layer source's ``path``).

    These spell one hold-out twice, for training and for validation; where the two disagree, or where the config
    also has ``holdout``, :class:`ConfigError` says so in one line. Saved run configs are read through this too,
    so that a run folder written with these keys resumes.
    """
    validation = data.get("validation") if isinstance(data.get("validation"), dict) else {}
    sources = data.get("sources") if isinstance(data.get("sources"), list) else []
    old = [f"validation.{k}" for k in ("holdout_only", "holdout", "held_out", "synthetic") if k in validation]
    old += [f"sources[{i}].holdout" for i, s in enumerate(sources) if isinstance(s, dict) and "holdout" in s]
    if not old:
        return data
    if "holdout" in data:
        raise ConfigError(f"{old[0]}: this config names its hold-out in `holdout: {{FOLDER: N}}`; give the folders there")
    counts: dict[str, tuple[int, str]] = {}  # folder -> (N, the key that said so)

    def hold(folders: Iterable[Any], n: int, key: str) -> None:
        for folder in folders:
            if not n or not isinstance(folder, str) or not folder:
                continue
            if folder in counts and counts[folder][0] != n:
                raise ConfigError(f"{key} holds out {n} of {folder} but {counts[folder][1]} {counts[folder][0]}: "
                                  "one hold-out serves training and validation; write holdout: {FOLDER: N}")
            counts.setdefault(folder, (n, key))

    rest = dict(validation)
    n = _count(rest.pop("holdout", 0), "validation.holdout")
    hold(rest.pop("holdout_only", None) or [], n, "validation.holdout")
    held_out = rest.pop("held_out", None) or {}
    if not isinstance(held_out, dict):
        raise ConfigError(f"validation.held_out must be a mapping FOLDER: N, got {held_out!r}")
    held_counts = {folder: _count(k, "validation.held_out") for folder, k in held_out.items()}
    if any(k < 1 for k in held_counts.values()):
        raise ConfigError(f"validation.held_out counts must be >= 1, got {held_out}")
    for folder, k in held_counts.items():
        hold([folder], k, "validation.held_out")
    photos = _count(rest.pop("synthetic", 0), "validation.synthetic")

    kept: list[Any] = []
    for i, source in enumerate(sources):
        if isinstance(source, dict) and "holdout" in source:
            source = dict(source)
            k = _count(source.pop("holdout"), f"sources[{i}].holdout")
            kind = source.get("kind", "synthetic")
            if kind == "paired":
                hold([source.get("path")], k, f"sources[{i}].holdout")
            elif kind == "rain_layers":
                hold(source.get("layers") or [], k, f"sources[{i}].holdout")
        kept.append(source)
    photo_folders = [s.get("path") for s in kept if isinstance(s, dict) and s.get("kind", "synthetic") != "paired"]
    hold(photo_folders, photos, "validation.synthetic")

    upgraded = {**data, "holdout": {folder: k for folder, (k, _) in counts.items()}}
    if isinstance(data.get("validation"), dict):
        upgraded["validation"] = rest
    if isinstance(data.get("sources"), list):
        upgraded["sources"] = kept
    return upgraded


def build_config(data: dict[str, Any], base: Path | None = None, data_root: Path | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a (parsed YAML) mapping, validated once: the hold-out's other spellings read as
    ``holdout`` (:func:`upgrade_spellings`) and, given ``base``, every data path expanded against it
    (``${DERAIN_DATA}`` = ``data_root``, default :func:`default_data_root`); :class:`ConfigError` naming the first bad key."""
    context = {"base": base, "data_root": data_root or default_data_root()} if base is not None else None
    try:
        return TrainConfig.model_validate(upgrade_spellings(data), context=context)
    except ValidationError as e:
        raise ConfigError(_message(e.errors()[0])) from None


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict; a number indexes a list
    (``sources.1.weight=0.5``). What the caller passed is not changed: each level on the way is copied.

    >>> apply_overrides({"sources": [{"weight": 1}, {"weight": 2}]}, ["sources.1.weight=0.5", "lr=0.001"])
    {'sources': [{'weight': 1}, {'weight': 0.5}], 'lr': 0.001}
    """
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(raw) if raw else ""
        node: dict[str, Any] | list[Any] = data
        parts = key.split(".")
        for part in parts[:-1]:
            slot = _slot(node, part, key)
            child = node[slot] if isinstance(node, list) else node.get(slot)  # type: ignore[call-overload]
            if child is None and isinstance(node, dict):
                child = {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"override {key}: {part} holds a value, not keys to set")
            child = dict(child) if isinstance(child, dict) else list(child)
            node[slot] = child  # type: ignore[index]
            node = child
        node[_slot(node, parts[-1], key)] = value  # type: ignore[index]
    return data


def _slot(node: dict[str, Any] | list[Any], part: str, key: str) -> Any:
    """Where ``part`` of the override ``key`` goes in ``node``: the key itself, or a list's index."""
    if isinstance(node, dict):
        return part
    if not (part.isascii() and part.isdigit()) or int(part) >= len(node):
        which = f"0 to {len(node) - 1}" if node else "it is empty"
        raise ConfigError(f"override {key}: {part!r} is not an index of a list of {len(node)} ({which})")
    return int(part)


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Iterable[str] = (),
    base: Path | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply overrides, validate (:func:`build_config`).

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
    return build_config(apply_overrides(data, overrides), base or Path.cwd(), Path(data_root) if data_root else None)
