"""EfDeRain trained with re-parameterisable convolutions (RepVGG, Ding et al. CVPR 2021; ECBSR, Zhang et al.
ACM MM 2021), folded into a plain :class:`~derain.models.efderain.EfDeRain` for inference.

Every 3×3 convolution of the KPN's blocks trains as the sum of linear branches: the 3×3 itself, a 1×1, an
expansion (1×1 to ``expand``× the width, then 3×3; no bias between them, so the composition is exactly one
3×3 convolution, borders included) and, where the widths match, the identity. A sum of linear maps is one
linear map, so :meth:`RepEfDeRain.fold` returns a plain ``EfDeRain`` of the same config that computes the same
function at the cost of the plain network: more trainable parameters shape the optimisation, not the
inference.

>>> model = RepEfDeRain(RepEfDeRainConfig(widths=(8, 8, 8), depth=1)).eval()
>>> x = torch.rand(1, 3, 16, 16)
>>> bool(torch.allclose(model(x), model.fold()(x), atol=1e-5))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .efderain import Basic, EfDeRain, EfDeRainConfig

__all__ = ["RepConv", "RepEfDeRainConfig", "RepEfDeRain"]


class RepConv(nn.Module):
    """A 3×3 convolution (padding 1) trained as 3×3 + 1×1 + 1×1→3×3 (+ identity); :meth:`folded` gives the one 3×3.

    >>> conv = RepConv(4, 4)
    >>> w, b = conv.folded()
    >>> x = torch.rand(1, 4, 7, 7)
    >>> bool(torch.allclose(conv(x), F.conv2d(x, w, b, padding=1), atol=1e-5))
    True
    """

    def __init__(self, in_channels: int, out_channels: int, expand: int = 2) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.expand_in = nn.Conv2d(in_channels, expand * out_channels, 1, bias=False)
        self.expand_out = nn.Conv2d(expand * out_channels, out_channels, 3, padding=1, bias=False)
        self.identity = in_channels == out_channels
        for conv in (self.conv1, self.expand_out):  # the extra branches start small: the sum starts as the 3×3
            nn.init.xavier_normal_(conv.weight, gain=0.02)

    def folded(self) -> tuple[Tensor, Tensor]:
        """The one 3×3 convolution's (weight, bias) that computes the sum of the branches."""
        w = self.conv3.weight + F.pad(self.conv1.weight, (1, 1, 1, 1))
        # (1×1: m <- i) then (3×3: o <- m) = 3×3: o <- i with weights sum_m W3[o, m] W1[m, i]
        w = w + torch.einsum("omhw,mi->oihw", self.expand_out.weight, self.expand_in.weight[..., 0, 0])
        if self.identity:
            eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
            w = w + F.pad(eye[..., None, None], (1, 1, 1, 1))
        return w, self.conv3.bias

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.conv2d(x, *self.folded(), padding=1)
        y = self.conv3(x) + self.conv1(x) + self.expand_out(self.expand_in(x))
        return y + x if self.identity else y


@dataclass(frozen=True)
class RepEfDeRainConfig(EfDeRainConfig):
    """:class:`~derain.models.efderain.EfDeRainConfig` plus ``expand``: the width factor of the expansion branch."""

    expand: int = 2

    def plain(self) -> EfDeRainConfig:
        """The config of the folded network."""
        fields = self.to_dict()
        fields.pop("expand")
        return EfDeRainConfig.from_dict(fields)


class RepEfDeRain(EfDeRain):
    """EfDeRain whose blocks' 3×3 convolutions are :class:`RepConv`; :meth:`fold` gives the plain network."""

    def __init__(self, config: RepEfDeRainConfig = RepEfDeRainConfig()) -> None:
        super().__init__(config)
        for block in self.children():
            if isinstance(block, Basic):
                for i, layer in enumerate(block.conv1):
                    if isinstance(layer, nn.Conv2d):
                        rep = RepConv(layer.in_channels, layer.out_channels, config.expand)
                        with torch.no_grad():  # the folded sum starts as the plain layer's init
                            rep.conv3.weight.copy_(layer.weight - rep.folded()[0] + rep.conv3.weight)
                            rep.conv3.bias.copy_(layer.bias)
                        block.conv1[i] = rep

    def fold(self) -> EfDeRain:
        """A plain :class:`EfDeRain` computing the same function (in eval mode, on this model's device, fp32)."""
        plain = EfDeRain(self.config.plain()).to(next(self.parameters()).device)
        state = {}
        for name, module in self.named_modules():
            if isinstance(module, RepConv):
                w, b = module.folded()
                state[f"{name}.weight"], state[f"{name}.bias"] = w, b
        for key, value in self.state_dict().items():
            if not any(key.startswith(f"{name}.") for name in _rep_names(self)):
                state[key] = value
        with torch.no_grad():
            plain.load_state_dict({k: v.detach().float().clone() for k, v in state.items()})
        if hasattr(self, "registry_name"):
            plain.registry_name = self.registry_name  # type: ignore[assignment]
        return plain.eval()

    def inference_form(self) -> EfDeRain:
        """What inference runs (:func:`derain.models.interface.inference_form`): :meth:`fold`."""
        return self.fold()


def _rep_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, RepConv)]
