"""EfficientDeRain (Guo et al., AAAI 2021) in one file.

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

CPU inference runs the full-resolution stage (kernel upsampling, filtering, fusion) in one fused C
kernel (:mod:`derain.ops.fused_filter`) where it is built; training and other devices run it eagerly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch_config import ArchConfig

from ..ops.full_resolution import bilinear_up, dilation_filter_fuse, filtering_layout, fused_path_applies, gate_map

__all__ = ["EfDeRainConfig", "EfDeRain", "Basic", "PAPER", "GATE_INIT_BIAS", "pad_to_multiple", "pad_border"]


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
            parameters in the forward pass (:meth:`EfDeRain.outc_params`).
        channel_fusion: the fusion maps each colour channel onto itself with weights summing to one
            (cross-channel weights summing to zero) and no bias (:meth:`EfDeRain.fusion_params`): it
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
            linear head on the mean of the deepest features), so a photo judged dry as a whole comes back
            as it went in, whatever its texture looks like up close.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
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
GATE_INIT_BIAS = 3.0
# The kernel features the gate reads are small (about 0.05-0.2 after ReLU), so the head's logits are
# scaled: with Adam each parameter moves about ``lr`` per step whatever its gradient's size, and the
# gain makes that a useful rate of change of the gate.
GATE_GAIN = 10.0
GATE_GLOBAL_INIT_BIAS = 4.6  # sigmoid(4.6) = 0.99: the global gate starts open


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


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``x`` (…, H, W) at the bottom/right to multiples of ``multiple``; return it and (H, W).

    Reflect padding where the side is long enough, edge replication otherwise (tiny inputs).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def pad_border(x: Tensor, border: int) -> Tensor:
    """Reflect-pad ``x`` (…, H, W) by ``border`` on every side (edge replication for tiny inputs)."""
    if not border:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (border,) * 4, mode="reflect" if border < min(h, w) else "replicate")


class EfDeRain(nn.Module):
    """Kernel prediction network + pixel-wise dilation filtering + fusion.

    ``forward`` takes ``(B, C, H, W)`` images in [0, 1] of any size (reflect-padded to a
    multiple of ``config.multiple`` and cropped back) and returns the fused output, unclamped.

    Example:
        >>> model = EfDeRain(EfDeRainConfig(widths=(8, 8, 8), depth=1))
        >>> model(torch.rand(1, 3, 17, 33)).shape
        torch.Size([1, 3, 17, 33])
    """

    # Reduced-precision inference keeps the input in the plain layout
    # (:func:`~derain.inference.precision.input_layout`): the padding, the pixel-unshuffle and the fused
    # kernel's copy of the image are faster on it, and the first convolution switches to channels_last.
    channels_last_input = False

    def __init__(self, config: EfDeRainConfig = PAPER) -> None:
        super().__init__()
        self.config = config
        # The path the full-resolution stage asks for (derain.ops.full_resolution.FILTER_PATHS; the same
        # function each way): "auto" picks the fused C kernel where it can run; "reference" is the released code's.
        self.filter_implementation = "auto"
        w, d, kl = config.widths, config.depth, config.kernel_level
        levels = len(w)
        # Encoder: conv1..conv{levels}
        for lv in range(levels):
            first = config.in_channels * config.stem**2
            self.add_module(f"conv{lv + 1}", Basic(first if lv == 0 else w[lv - 1], w[lv], d))
        # Decoder: one block per level from levels-2 down to kernel_level, named on from conv{levels+1}
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
            c, g = config.kernel_channels, config.gate_width
            self.gate = nn.Conv2d(c, 1, 1) if not g else nn.Sequential(nn.Conv2d(c, g, 3, padding=1), nn.ReLU(True), nn.Conv2d(g, 1, 1))
        if config.gate_global:
            self.gate_global = nn.Linear(config.widths[-1], 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Released init: ``xavier_normal_(gain=0.02)`` on conv weights, default bias init.

        With ``identity_init`` the kernels start as the centre tap (outc bias) and the fusion as the
        mean over dilations, so the network starts as the identity instead of near zero. The ``gate``
        starts open (bias :data:`GATE_INIT_BIAS`, ``m`` ≈ 0.95), so a gated network initialised from an
        ungated one's weights starts close to it; a ``gate_width`` head's hidden convolution has PyTorch's
        default init (with the released gain its activations vanish and it does not learn).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain=0.02)
        cfg = self.config
        if cfg.gate:
            out = self.gate[-1] if isinstance(self.gate, nn.Sequential) else self.gate
            with torch.no_grad():
                out.bias.fill_(GATE_INIT_BIAS / GATE_GAIN)
            if isinstance(self.gate, nn.Sequential):
                self.gate[0].reset_parameters()
        if cfg.gate_global:  # starts fully open (0.99) and input-independent
            with torch.no_grad():
                self.gate_global.weight.zero_()
                self.gate_global.bias.fill_(GATE_GLOBAL_INIT_BIAS / GATE_GAIN)
        if cfg.identity_init:
            k2 = cfg.kernel_size**2
            with torch.no_grad():
                self.outc.bias.zero_()
                self.outc.bias[k2 // 2 :: k2] = 1.0
                if cfg.fusion:
                    self.conv_final.weight.mul_(0.01)
                    self.conv_final.bias.zero_()
                    n = len(cfg.dilations)
                    for c in range(cfg.in_channels):
                        for r in range(n):
                            self.conv_final.weight[c, r * cfg.in_channels + c, 1, 1] += 1.0 / n

    def autocast_modules(self) -> list[nn.Module]:
        """The layers that inference runs only under autocast: the KPN's blocks, ``outc`` (unless ``unit_kernels``
        computes it in fp32), the gate heads. Not ``conv_final`` (the fusion runs in fp32).

        Under reduced precision a prepared model keeps their weights in the compute dtype
        (:func:`derain.inference.precision.prepare_model`): autocast would cast them to it at every call, so
        the results are the same, without the casts.
        """
        layers: list[nn.Module] = [m for m in self.children() if isinstance(m, Basic)]
        if not self.config.unit_kernels:
            layers.append(self.outc)
        layers += [getattr(self, name) for name in ("gate", "gate_global") if hasattr(self, name)]
        return layers

    def block(self, index: int) -> Basic:
        return getattr(self, f"conv{index}")

    def kernel_features(self, x: Tensor) -> Tensor:
        """The KPN's output at the kernel level (``1/scale`` resolution, ``C·k²`` channels), before ``outc``."""
        return self.features(x)[0]

    def encoder(self, x: Tensor) -> list[Tensor]:
        """The encoder's features at every level (``1/(stem·2**l)`` resolution), shallowest first."""
        cfg = self.config
        skips = []
        feat = F.pixel_unshuffle(x, cfg.stem) if cfg.stem > 1 else x
        for lv in range(len(cfg.widths)):
            if lv > 0:
                feat = F.avg_pool2d(feat, 2, 2)
            feat = self.block(lv + 1)(feat)
            skips.append(feat)
        return skips

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`kernel_features` and the deepest encoder features (what the global gate reads)."""
        levels = len(self.config.widths)
        skips = self.encoder(x)
        feat = skips[-1]
        for n, lv in enumerate(self.decoder_levels):
            up = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
            feat = self.block(levels + 1 + n)(torch.cat([skips[lv], up], dim=1))
        return feat, skips[-1]

    @property
    def kernel_scale(self) -> int:
        """Resolution factor between the image and the predicted kernels."""
        return self.config.stem * 2**self.config.kernel_level

    def predict_kernels(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Per-pixel kernels ``(B, C·k², H, W)`` for an input whose sides are multiples of ``config.multiple``.

        With ``size = (h, w)`` only the kernels of the top-left ``h×w`` pixels are computed at full
        resolution (same values: the upsampling keeps its scale, only fewer rows and columns).
        """
        return self._kernels_from_features(self.kernel_features(x), size)

    def _kernels_from_features(self, feat: Tensor, size: tuple[int, int] | None) -> Tensor:
        if self.config.outc_at_full_resolution:
            return filtering_layout(self.apply_outc(bilinear_up(feat, self.kernel_scale, size)))
        # convert at low resolution: 4x less to copy
        return bilinear_up(filtering_layout(self.apply_outc(feat)), self.kernel_scale, size)

    def outc_params(self) -> tuple[Tensor, Tensor]:
        """``outc``'s (weight, bias) as applied: with ``config.unit_kernels`` projected so each pixel's kernel sums to one.

        Kernel channels are grouped per colour (``c·k² + tap``); within a group the weights are centred
        (the kernel's sum no longer depends on the features) and the bias is centred plus ``1/k²``.
        Bilinear upsampling keeps the sum (its weights sum to one).
        """
        w, b = self.outc.weight, self.outc.bias
        if not self.config.unit_kernels:
            return w, b
        k2 = self.config.kernel_size**2
        wg = w.view(-1, k2, *w.shape[1:])
        bg = b.view(-1, k2)
        w = (wg - wg.mean(1, keepdim=True)).reshape(w.shape)
        b = (bg - bg.mean(1, keepdim=True) + 1.0 / k2).reshape(b.shape)
        return w, b

    def apply_outc(self, feat: Tensor) -> Tensor:
        """The 1×1 ``outc`` with :meth:`outc_params` (the raw layer without ``unit_kernels``).

        With ``unit_kernels`` it runs in fp32 whatever the precision (autocast off), so the kernels sum
        to one to fp32 accuracy: in bf16 a sum is only good to about 0.4 %, a visible brightness error.
        """
        if not self.config.unit_kernels:
            return self.outc(feat)
        w, b = self.outc_params()
        with torch.autocast(feat.device.type, enabled=False):
            return F.conv2d(feat.float(), w.float(), b.float())

    def fusion_params(self) -> tuple[Tensor, Tensor]:
        """``conv_final``'s (weight, bias) as applied: with ``config.channel_fusion`` each channel preserved.

        Input channel ``d·C + c'`` is dilation ``d`` of colour ``c'``. For output colour ``c`` the
        weights over its own colour (all dilations and taps) are shifted to sum to one, those over
        the other colours to sum to zero, and the bias is zero.
        """
        conv = self.conv_final
        w, b = conv.weight, conv.bias
        if not self.config.channel_fusion:
            return w, b
        c, n = self.config.in_channels, len(self.config.dilations)
        k = w.shape[-1] * w.shape[-2]
        g = w.view(c, n, c, -1)  # out, dilation, in-colour, tap
        eye = torch.eye(c, dtype=w.dtype, device=w.device).view(c, 1, c, 1)
        g = g - g.mean((1, 3), keepdim=True) + eye / (n * k)
        return g.reshape(w.shape), b * 0  # zero, but in the graph: DDP expects every parameter to get a gradient

    def gate_map(self, feat: Tensor, size: tuple[int, int] | None = None, deep: Tensor | None = None) -> Tensor:
        """The rain gate ``(B, 1, H, W)`` in (0, 1), fp32, from the kernel features (``config.gate`` only).

        The logits (the head's output times :data:`GATE_GAIN`) are upsampled like the kernels (``size`` as
        in :meth:`predict_kernels`), then squashed; with ``config.gate_global`` the map is multiplied by
        the image's global gate, from the deepest features ``deep``.
        """
        return self._gate_from_parts(*self.gate_parts(feat, deep), size)

    def _gate_from_parts(self, logits: Tensor, whole: Tensor | None, size: tuple[int, int] | None) -> Tensor:
        return gate_map(logits, whole, self.kernel_scale, size)

    def gate_parts(self, feat: Tensor, deep: Tensor | None = None, whole: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The gate before upsampling: its logits ``(B, 1, h, w)`` at the kernels' resolution (the head's output
        times :data:`GATE_GAIN`, fp32) and, with ``config.gate_global``, each image's factor ``(B, 1)`` in (0, 1):
        ``whole`` where given (a judgement made elsewhere, :meth:`image_gate`), else from ``deep``."""
        logits = self.gate(feat).float() * GATE_GAIN
        if not self.config.gate_global:
            return logits, None
        if whole is not None:
            return logits, whole.float().reshape(-1, 1)
        if deep is None:
            raise ValueError("gate_global needs the deepest features (EfDeRain.features)")
        return logits, self._image_gate_from(deep)

    def _image_gate_from(self, deep: Tensor) -> Tensor:
        return torch.sigmoid(self.gate_global(deep.float().mean((2, 3))) * GATE_GAIN)

    @property
    def judges_images(self) -> bool:
        """Whether the model judges each image as a whole (``config.gate_global``): then :meth:`image_gate` gives
        that judgement and ``forward(x, whole=...)`` takes one made elsewhere (for every tile of an image)."""
        return self.config.gate_global

    def image_gate(self, x: Tensor) -> Tensor:
        """Each image's factor ``(B, 1)`` in (0, 1) on the gate, as :meth:`forward` computes it from all of ``x``
        (the encoder only: padded the same way, the mean of its deepest features through ``gate_global``)."""
        if not self.config.gate_global:
            raise ValueError("this model does not judge images as a whole (gate_global is off)")
        padded, _ = pad_to_multiple(pad_border(x, self.border), self.config.multiple)
        return self._image_gate_from(self.encoder(padded)[-1])

    def padded_forward(self, x: Tensor, path: str | None = None) -> Tensor:
        """The network on ``x`` whose sides are multiples of ``config.multiple``, without padding or cropping; the
        full-resolution stage run by ``path`` (default: ``filter_implementation``; ONNX export traces ``onehot``)."""
        return self._full_resolution(x, *self.features(x), None, None, path or self.filter_implementation)[0]

    @property
    def border(self) -> int:
        """Pixels of reflect padding on every side before the network (:func:`pad_border`): the taps' reach
        with ``unit_kernels`` or ``channel_fusion``, else 0 (as released)."""
        cfg = self.config
        if not (cfg.unit_kernels or cfg.channel_fusion):
            return 0
        return max(cfg.dilations) * (cfg.kernel_size // 2) + (1 if cfg.fusion else 0)

    def uses_fused_kernel(self, x: Tensor) -> bool:
        """Whether ``forward(x)`` runs the full-resolution stage in the fused C kernel
        (:func:`~derain.ops.full_resolution.fused_path_applies`; never with ``outc_at_full_resolution``, whose
        kernels are made at full resolution anyway)."""
        weight = self.conv_final.weight if self.config.fusion else None
        return (self.filter_implementation == "auto" and not self.config.outc_at_full_resolution
                and fused_path_applies(x, self.config.dilations, weight, *self.parameters()))

    def _full_resolution(
        self, image: Tensor, feat: Tensor, deep: Tensor, out_size: tuple[int, int] | None, whole: Tensor | None,
        path: str, return_gate: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Kernels, fusion and gate from the features, through :func:`~derain.ops.full_resolution.dilation_filter_fuse`."""
        cfg = self.config
        if cfg.outc_at_full_resolution:  # the released order: 1×1 outc on the upsampled features
            low, scale = self._kernels_from_features(feat, tuple(image.shape[-2:])), 1
            path = "fast" if path == "auto" else path
        else:
            low, scale = self.apply_outc(feat), self.kernel_scale
        weight, bias = self.fusion_params() if cfg.fusion else (None, None)
        logits, whole = self.gate_parts(feat, deep, whole) if cfg.gate else (None, None)
        if logits is not None and scale == 1:  # the gate at the kernels' (full) resolution too
            logits = bilinear_up(logits, self.kernel_scale, tuple(image.shape[-2:]))
        return dilation_filter_fuse(image, low, scale, cfg.dilations, weight, bias, out_size, gate=logits, whole=whole,
                                    fusion_fp32=cfg.channel_fusion, path=path, return_gate=return_gate)

    def forward(self, x: Tensor, return_gate: bool = False, whole: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor | None]:
        """The derained ``x``; with ``return_gate`` also the rain gate ``(B, 1, H, W)`` (``None`` without
        ``config.gate``), which training supervises with the rain mask (``gate_weight``). ``whole`` ``(B, 1)``:
        each image's factor on the gate, instead of the one judged from ``x`` (``judges_images`` models only:
        the tiles of one image share the image's judgement; a strength the user chose)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        cfg = self.config
        if whole is not None and (not cfg.gate_global or whole.numel() != x.shape[0]):
            raise ValueError(f"whole takes one factor per image ({x.shape[0]}) of a model with gate_global")
        # The output's pixels need the filtering (and kernels) of the reach of the widest tap and of the
        # fusion conv around them; the rest of the padding to the multiple is cut off before full
        # resolution. With `unit_kernels` or `channel_fusion` the image is first reflect-padded by the reach on every side, so no
        # tap of a kept pixel falls on the filter's zero padding (which darkens the borders); without
        # it, as released, the reach comes from the bottom/right padding to the multiple, where there is.
        reach = max(cfg.dilations) * (cfg.kernel_size // 2) + (1 if cfg.fusion else 0)
        lead = self.border
        h, w = x.shape[-2:]
        x = pad_border(x, lead)
        padded, (ph, pw) = pad_to_multiple(x, cfg.multiple)
        size = (min(padded.shape[-2], ph + reach - lead), min(padded.shape[-1], pw + reach - lead))
        feat, deep = self.features(padded)
        image = padded[..., : size[0], : size[1]]
        out, gate = self._full_resolution(image, feat, deep, (ph, pw), whole, self.filter_implementation, return_gate)
        out = out[..., lead : lead + h, lead : lead + w]
        if not return_gate:
            return out
        return out, None if gate is None else gate[..., lead : lead + h, lead : lead + w]

