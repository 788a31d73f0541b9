"""EfficientDeRain (Guo et al., AAAI 2021): the architecture.

A UNet-like kernel prediction network (KPN) predicts one k×k kernel per pixel and colour
channel; the rainy image is filtered with those kernels at several dilations (pixel-wise
dilation filtering) and a 3×3 convolution fuses the results.

With :data:`PAPER` this is the authors' released network exactly (27,395,406 parameters,
same layer order and state-dict keys): encoder ``conv1..conv5`` (``Basic`` = 3 × [conv3×3 +
ReLU], average-pool down), decoder ``conv6..conv8`` on ``cat[skip, up(x)]`` (bilinear ×2,
``align_corners=False``, no skip from conv1), ``outc`` (1×1) at full resolution, filtering at
dilations 1, 2, 3, 4 and ``conv_final`` (3×3, 12 → 3).

The config generalises it for CPU-sized variants: widths, convs per block, the level at which
the decoder stops (kernels predicted at ``1/2**kernel_level`` resolution and upsampled),
kernel size, dilation set, and whether ``outc`` runs before or after the upsampling (it is
1×1 and linear, and bilinear weights sum to one, so both orders give the same result).

This file is the architecture only. The no-harm constraints are :mod:`.constraints`, the rain gate's heads
:mod:`.gate`, the starting weights :mod:`.init`; how the model runs (its two stages, padding, compiled and
exported paths, precision) is the interface of :mod:`.interface`; the full-resolution stage's op is
:func:`derain.ops.full_resolution.dilation_filter_fuse` (the fused C kernel on the CPU where it is built).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.full_resolution import bilinear_up, dilation_filter_fuse, filtering_layout, fused_path_applies, gate_map
from ..ops.padding import pad_border, pad_canvas, pad_to_multiple
from ..ops.shuffle import pixel_unshuffle
from .arch_config import ArchConfig
from .constraints import channel_preserving_params, conv_fp32, unit_kernel_params
from .gate import GATE_GAIN, GATE_INIT_BIAS, ImageJudge, gate_head, gate_parts, image_factor
from .init import INITS, kpn_init_
from .interface import FeatureStage, staged_forward

__all__ = ["EfDeRainConfig", "EfDeRain", "Basic", "PAPER", "GATE_GAIN", "GATE_INIT_BIAS", "pad_to_multiple", "pad_border"]


@dataclass(frozen=True)
class EfDeRainConfig(ArchConfig):
    """Architecture of an :class:`EfDeRain` network.

    Attributes:
        widths: encoder widths, one per level (level ``l`` runs at ``1/2**l`` resolution).
        depth: convolutions (each followed by ReLU) per ``Basic`` block.
        kernel_level: level at which the decoder stops and kernels are predicted
            (1 = half resolution, as released). 0 uses conv1 as a skip.
        kernel_size: odd size ``k`` of the per-pixel kernels.
        dilations: dilations of the pixel-wise filtering, fused in this order.
        fusion: 3×3 fusion convolution over the dilated results; without it (``v1``) the
            output is the filtering result at the single dilation.
        outc_at_full_resolution: apply the 1×1 ``outc`` after upsampling (as released) or
            before it (same function, less memory traffic).
        in_channels: colour channels of the image.
        stem: ``f`` > 1 starts the KPN at ``1/f`` resolution with a pixel-unshuffle (space-to-depth) of
            the input (``C·f²`` channels), so no convolution runs at full resolution; 1 = as released.
        identity_init: initialise ``outc`` (and the fusion) so the untrained network returns its
            input (centre tap 1, fusion averaging the dilations); 0 = released init.
        unit_kernels: every predicted kernel sums to one, so each filtered pixel is an affine
            combination of its neighbours: flat areas come back exactly and rain can only be replaced
            from its surroundings (it cannot be dimmed in place). Enforced by projecting ``outc``'s
            parameters in the forward pass (:func:`.constraints.unit_kernel_params`).
        channel_fusion: the fusion maps each colour channel onto itself with weights summing to one
            (cross-channel weights summing to zero) and no bias (:func:`.constraints.channel_preserving_params`): it
            cannot shift brightness or colour globally. With either option the image is reflect-padded
            by the filters' reach so borders are not darkened by zero padding. State-dict keys are
            unchanged; both ``False`` = as released.
        gate: the KPN also predicts a per-pixel rain gate ``m`` in (0, 1) (a 1×1 ``gate`` head on the
            kernel features, sigmoid, upsampled like the kernels) and the output is ``x + m·(y − x)``
            for the filtered-and-fused ``y``: where it sees no rain the network can return its input
            exactly by closing the gate, instead of having to predict exact identity kernels. ``False`` =
            as released (no ``gate`` parameters).
        gate_width: ``0``: the gate head is one 1×1 convolution; ``N``: a 3×3 convolution to ``N``
            channels, ReLU, then the 1×1 (it sees each pixel's neighbourhood of kernel features).
        gate_global: the gate is also multiplied by one value per image in (0, 1) (``gate_global``: a
            linear head on the mean of the deepest features, or of the judge's), so a photo judged dry as a whole
            comes back as it went in, whatever its texture looks like up close.
        judge_widths: empty: the image head reads the KPN's deepest features; else a judge of its own
            (:class:`~.gate.ImageJudge`, ``judge``: one strided 3×3 convolution + ReLU per width, He's init) on
            the image averaged over ``judge_scale`` × ``judge_scale`` blocks (needs ``gate_global``), so the
            kernels and the judgement train apart: training one does not move the other.
        judge_scale: the area-average factor in front of the judge.
        gate_detach: the gate heads read the KPN's features without passing gradients back into it: the gates' losses
            (and the output's loss through the gates) train the heads (and a judge) only, so gates and KPN can train
            side by side without the gates pulling on the kernels' features. The function is the same either way.
        init: the starting weights of the KPN's blocks: ``"released"`` (the released code's xavier gain 0.02) or
            ``"he"`` (He's init: trains from scratch much sooner; :mod:`.init`). The output heads start small either way.
        centre_canvas: the image sits in the middle of the canvas padded to the multiple (the slack split around it)
            instead of at its top-left with the slack bottom/right (:func:`~derain.ops.padding.pad_canvas`): its
            top and left sides lie as far from the convolutions' zero padding as its bottom and right, which
            otherwise darkens a bright flat image's top rows. A network runs best with the layout it trained with.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    depth: int = 3
    kernel_level: int = 1
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 3, 4)
    fusion: bool = True
    outc_at_full_resolution: bool = True
    in_channels: int = 3
    stem: int = 1
    identity_init: bool = False
    unit_kernels: bool = False
    channel_fusion: bool = False
    gate: bool = False
    gate_width: int = 0
    gate_global: bool = False
    judge_widths: tuple[int, ...] = ()
    judge_scale: int = 2
    gate_detach: bool = False
    init: str = "released"
    centre_canvas: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        object.__setattr__(self, "judge_widths", tuple(int(w) for w in self.judge_widths))
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths needs at least two positive entries, got {self.widths}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if not 0 <= self.kernel_level < len(self.widths) - 1:
            raise ValueError(f"kernel_level must be in [0, {len(self.widths) - 2}], got {self.kernel_level}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be non-empty and >= 1, got {self.dilations}")
        if self.stem < 1 or self.stem & (self.stem - 1):
            raise ValueError(f"stem must be a power of two >= 1, got {self.stem}")
        if self.gate_width < 0 or (self.gate_width and not self.gate):
            raise ValueError(f"gate_width must be >= 0 and needs gate=True, got {self.gate_width}")
        if self.gate_global and not self.gate:
            raise ValueError("gate_global needs gate=True")
        if self.judge_widths and (not self.gate_global or min(self.judge_widths) < 1):
            raise ValueError(f"judge_widths needs gate_global=True and positive widths, got {self.judge_widths}")
        if self.judge_scale < 1:
            raise ValueError(f"judge_scale must be >= 1, got {self.judge_scale}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not self.fusion and len(self.dilations) != 1:
            raise ValueError("without fusion there must be exactly one dilation")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (one halving per level)."""
        return self.stem * 2 ** (len(self.widths) - 1)

    @property
    def kernel_channels(self) -> int:
        return self.in_channels * self.kernel_size**2



PAPER = EfDeRainConfig()


class Basic(nn.Sequential):
    """``depth`` × [Conv3×3 + ReLU]; the Sequential is stored as ``.conv1`` like the release."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n in range(depth):
            layers += [nn.Conv2d(in_channels if n == 0 else out_channels, out_channels, 3, padding=1), nn.ReLU(True)]
        # Named like the released code (`convN.conv1.0.weight`) so its checkpoints load strictly.
        self.conv1 = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.conv1(x)


class EfDeRain(nn.Module):
    """Kernel prediction network + pixel-wise dilation filtering + fusion (a :class:`~.interface.StagedModel`): ``(B, C,
    H, W)`` images in [0, 1] of any size → the output, unclamped.

    >>> EfDeRain(EfDeRainConfig(widths=(8, 8, 8), depth=1))(torch.rand(1, 3, 17, 33)).shape
    torch.Size([1, 3, 17, 33])
    """

    channels_last_input = False  # padding, pixel-unshuffle and the fused kernel's image copy are faster on NCHW

    def __init__(self, config: EfDeRainConfig = PAPER) -> None:
        super().__init__()
        self.config = config
        self.filter_implementation = "auto"  # the full-resolution stage's path (ops.full_resolution.FILTER_PATHS)
        w, d, kl = config.widths, config.depth, config.kernel_level
        levels = len(w)
        for lv in range(levels):  # encoder: conv1..conv{levels}
            first = config.in_channels * config.stem**2
            self.add_module(f"conv{lv + 1}", Basic(first if lv == 0 else w[lv - 1], w[lv], d))
        # decoder: one block per level from levels-2 down to kernel_level, named on from conv{levels+1}
        self.decoder_levels = list(range(levels - 2, kl - 1, -1))
        below = w[-1]
        for n, lv in enumerate(self.decoder_levels):
            out = config.kernel_channels if lv == kl else w[lv]
            self.add_module(f"conv{levels + 1 + n}", Basic(w[lv] + below, out, d))
            below = out
        self.outc = nn.Conv2d(config.kernel_channels, config.kernel_channels, 1)
        if config.fusion:
            self.conv_final = nn.Conv2d(config.in_channels * len(config.dilations), config.in_channels, 3, padding=1)
        if config.gate:
            self.gate = gate_head(config.kernel_channels, config.gate_width)
        if config.judge_widths:
            self.judge = ImageJudge(config.in_channels, config.judge_widths, config.judge_scale)
        if config.gate_global:
            self.gate_global = nn.Linear((config.judge_widths or config.widths)[-1], 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``config.init`` (released or He's), gates open, and with ``identity_init`` the identity (:func:`.init.kpn_init_`)."""
        kpn_init_(self)

    def autocast_modules(self) -> list[nn.Module]:
        """The KPN's blocks, ``outc`` (unless ``unit_kernels`` runs it in fp32) and the gate heads; not the fusion."""
        layers: list[nn.Module] = [m for m in self.children() if isinstance(m, Basic)]
        if not self.config.unit_kernels:
            layers.append(self.outc)
        return layers + [getattr(self, name) for name in ("gate", "gate_global", "judge") if hasattr(self, name)]

    def encoder(self, x: Tensor) -> list[Tensor]:
        """The encoder's features at every level (``1/(stem·2**l)`` resolution), shallowest first."""
        cfg = self.config
        skips, feat = [], pixel_unshuffle(x, cfg.stem) if cfg.stem > 1 else x
        for lv in range(len(cfg.widths)):
            feat = getattr(self, f"conv{lv + 1}")(F.avg_pool2d(feat, 2, 2) if lv > 0 else feat)
            skips.append(feat)
        return skips

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The low-resolution stage: the kernel features (before ``outc``) and the image head's features (the deepest
        encoder features, or the judge's)."""
        levels, skips = len(self.config.widths), self.encoder(x)
        feat = skips[-1]
        for n, lv in enumerate(self.decoder_levels):
            up = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
            feat = getattr(self, f"conv{levels + 1 + n}")(torch.cat([skips[lv], up], dim=1))
        return feat, self.image_features(x, skips[-1])

    def kernel_features(self, x: Tensor) -> Tensor:
        return self.features(x)[0]

    @property
    def kernel_scale(self) -> int:
        """Resolution factor between the image and the predicted kernels."""
        return self.config.stem * 2**self.config.kernel_level

    def predict_kernels(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Per-pixel kernels ``(B, C·k², H, W)`` of a padded input (``size``: only its top-left ``h×w``)."""
        return self._kernels_from_features(self.kernel_features(x), size)

    def _kernels_from_features(self, feat: Tensor, size: tuple[int, int] | None) -> Tensor:
        if self.config.outc_at_full_resolution:
            return filtering_layout(self.apply_outc(bilinear_up(feat, self.kernel_scale, size)))
        return bilinear_up(filtering_layout(self.apply_outc(feat)), self.kernel_scale, size)  # 4x less to copy

    def outc_params(self) -> tuple[Tensor, Tensor]:
        """``outc``'s (weight, bias) as applied (projected with ``unit_kernels``)."""
        w, b = self.outc.weight, self.outc.bias
        return unit_kernel_params(w, b, self.config.kernel_size) if self.config.unit_kernels else (w, b)

    def apply_outc(self, feat: Tensor) -> Tensor:
        """``outc``; with ``unit_kernels`` in fp32 whatever the autocast (:func:`.constraints.conv_fp32`)."""
        return conv_fp32(feat, *self.outc_params()) if self.config.unit_kernels else self.outc(feat)

    def fusion_params(self) -> tuple[Tensor, Tensor]:
        """``conv_final``'s (weight, bias) as applied (projected with ``channel_fusion``)."""
        w, b, cfg = self.conv_final.weight, self.conv_final.bias, self.config
        return channel_preserving_params(w, b, cfg.in_channels, len(cfg.dilations)) if cfg.channel_fusion else (w, b)

    def gate_map(self, feat: Tensor, size: tuple[int, int] | None = None, deep: Tensor | None = None) -> Tensor:
        """The rain gate ``(B, 1, H, W)`` in (0, 1), fp32, from the kernel features (``size`` as in ``predict_kernels``)."""
        feat, deep = self._gate_inputs(feat, deep)
        return gate_map(*gate_parts(self.gate, getattr(self, "gate_global", None), feat, deep), self.kernel_scale, size)

    def _gate_inputs(self, feat: Tensor | None, deep: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """The features the gate heads read: with ``gate_detach`` the KPN's detached (a judge's stay attached)."""
        if not self.config.gate_detach:
            return feat, deep
        return (None if feat is None else feat.detach()), (deep if deep is None or self.config.judge_widths else deep.detach())

    @property
    def judges_images(self) -> bool:
        return self.config.gate_global

    def image_gate(self, x: Tensor) -> Tensor:
        """Each image's factor ``(B, 1)`` on the gate as ``forward`` judges it from all of ``x`` (the encoder or the judge only)."""
        if not self.config.gate_global:
            raise ValueError("this model does not judge images as a whole (gate_global is off)")
        padded, _ = pad_canvas(x, self.border, self.config.multiple, self.centred)
        return image_factor(self.gate_global, self._gate_inputs(None, self.image_features(padded))[1])

    def image_features(self, x: Tensor, deepest: Tensor | None = None) -> Tensor:
        """What the image head reads from a padded ``x``: the judge's features, else the deepest encoder features
        (``deepest`` where already computed)."""
        if self.config.judge_widths:
            return self.judge(x)
        return self.encoder(x)[-1] if deepest is None else deepest

    @property
    def filter_reach(self) -> int:  # pixels beyond an output pixel that the filtering and the fusion read
        cfg = self.config
        return max(cfg.dilations) * (cfg.kernel_size // 2) + (1 if cfg.fusion else 0)

    @property
    def reach(self) -> int:  # ... that the full-resolution stage reads (interface): here the filtering's
        return self.filter_reach

    @property
    def centred(self) -> bool:  # the image in the middle of its padded canvas (interface)
        return self.config.centre_canvas

    @property
    def border(self) -> int:  # reflect padding: the filtering's reach with unit_kernels or channel_fusion, else 0
        return self.filter_reach if self.config.unit_kernels or self.config.channel_fusion else 0

    def uses_fused_kernel(self, x: Tensor) -> bool:
        """Whether ``forward(x)`` runs the fused C kernel (never with ``outc_at_full_resolution``)."""
        cfg, weight = self.config, self.conv_final.weight if self.config.fusion else None
        return self.filter_implementation == "auto" and not cfg.outc_at_full_resolution and fused_path_applies(x, cfg.dilations, weight, *self.parameters())

    def full_resolution(
        self, image: Tensor, features: tuple[Tensor, ...], out_size: tuple[int, int] | None = None, *,
        whole: Tensor | None = None, path: str | None = None, return_gate: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Kernels, filtering, fusion and gate from ``features`` (:func:`~derain.ops.full_resolution.dilation_filter_fuse`)."""
        cfg, (feat, deep) = self.config, features
        path = path or self.filter_implementation
        if cfg.outc_at_full_resolution:  # the released order: 1×1 outc on the upsampled features
            low, scale = self._kernels_from_features(feat, tuple(image.shape[-2:])), 1
            path = "fast" if path == "auto" else path
        else:
            low, scale = self.apply_outc(feat), self.kernel_scale
        weight, bias = self.fusion_params() if cfg.fusion else (None, None)
        gate_feat, gate_deep = self._gate_inputs(feat, deep)
        logits, whole = gate_parts(self.gate, getattr(self, "gate_global", None), gate_feat, gate_deep, whole) if cfg.gate else (None, None)
        if logits is not None and scale == 1:  # the gate at the kernels' (full) resolution too
            logits = bilinear_up(logits, self.kernel_scale, tuple(image.shape[-2:]))
        return dilation_filter_fuse(image, low, scale, cfg.dilations, weight, bias, out_size, gate=logits, whole=whole,
                                    fusion_fp32=cfg.channel_fusion, path=path, return_gate=return_gate)

    def padded_forward(self, x: Tensor, path: str | None = None) -> Tensor:
        """The network on ``x`` already padded (sides multiples of ``config.multiple``), without crop."""
        return self.full_resolution(x, self.features(x), path=path)[0]

    def forward(
        self, x: Tensor, return_gate: bool = False, whole: Tensor | None = None, *, features: FeatureStage | None = None,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """The derained ``x`` (:func:`~.interface.staged_forward`: ``return_gate``, ``whole``; ``features``: a compiled stage)."""
        return staged_forward(self, x, features, return_gate=return_gate, whole=whole)
