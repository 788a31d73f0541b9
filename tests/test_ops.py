"""Pixel-wise (dilated) filtering: fast vs reference, gradients, exceptions, hand-made cases; the fused kernel vs the eager path."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from derain.ops import PixelDilationFilter2d, PixelFilter2d, pixel_dilation_filter2d, pixel_filter2d
from derain.ops.fused_filter import fused_filter_available, upsample_filter_fuse

pytestmark = pytest.mark.precision  # floating-point paths compared: CI runs these under capped instruction sets too


def released_filter(image: torch.Tensor, kernels: torch.Tensor, dilation: int) -> torch.Tensor:
    """Independent transcription of reference.md §1 for k = 3 (zero pad by r, sum of 9 shifted products)."""
    b, c, h, w = image.shape
    padded = F.pad(image, (dilation,) * 4)
    out = torch.zeros_like(image)
    for ch in range(c):
        for i in range(3):
            for j in range(3):
                out[:, ch] += kernels[:, ch * 9 + 3 * i + j] * padded[:, ch, i * dilation : i * dilation + h, j * dilation : j * dilation + w]
    return out


class TestPixelFilter2d:
    def test_smoke(self) -> None:
        out = pixel_filter2d(torch.rand(2, 3, 6, 7), torch.rand(2, 27, 6, 7))
        assert out.shape == (2, 3, 6, 7)

    @pytest.mark.parametrize("impl", ["fast", "reference", "onehot"])
    @pytest.mark.parametrize("dilation", [1, 2, 3, 4])
    def test_matches_released_formula(self, impl: str, dilation: int) -> None:
        g = torch.Generator().manual_seed(dilation)
        image, kernels = torch.rand(2, 3, 9, 11, generator=g), torch.randn(2, 27, 9, 11, generator=g)
        expected = released_filter(image, kernels, dilation)
        torch.testing.assert_close(pixel_filter2d(image, kernels, dilation, impl), expected, atol=1e-6, rtol=0)

    def test_hand_computed(self) -> None:
        image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
        kernels = torch.zeros(1, 9, 4, 4)
        kernels[:, 0] = 1.0  # top-left tap: value at (y - r, x - r), zero outside
        out = pixel_filter2d(image, kernels, dilation=2)
        expected = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 5, 6.0]])
        assert torch.equal(out[0, 0], expected)

    def test_identity_and_box(self) -> None:
        image = torch.rand(1, 3, 5, 5, dtype=torch.float64)
        box = torch.full((1, 27, 5, 5), 1 / 9, dtype=torch.float64)
        out = pixel_filter2d(image, box)
        # interior pixel = 3x3 mean
        torch.testing.assert_close(out[0, :, 2, 2], image[0, :, 1:4, 1:4].mean(dim=(1, 2)))

    @pytest.mark.parametrize(
        "b,c,h,w,k,d",
        [
            (1, 1, 1, 1, 1, 1),
            (1, 1, 1, 1, 3, 1),
            (2, 3, 1, 7, 3, 2),
            (1, 2, 5, 1, 5, 1),
            (3, 1, 4, 4, 3, 5),  # dilation larger than the image
            (1, 3, 13, 8, 5, 3),
            (2, 4, 6, 9, 7, 2),
            (1, 3, 17, 33, 3, 4),
        ],
    )
    @pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
    def test_fast_equals_reference(self, b, c, h, w, k, d, dtype, tol) -> None:
        g = torch.Generator().manual_seed(b * 1000 + h * 31 + w + k + d)
        image = torch.rand(b, c, h, w, generator=g, dtype=dtype)
        kernels = torch.randn(b, c * k * k, h, w, generator=g, dtype=dtype) / k
        fast = pixel_filter2d(image, kernels, d, "fast")
        ref = pixel_filter2d(image, kernels, d, "reference")
        assert (fast - ref).abs().max().item() <= tol

    def test_fast_equals_reference_random_grid(self) -> None:
        g = torch.Generator().manual_seed(0)
        for _ in range(40):
            b, c, h, w = (int(v) for v in torch.randint(1, 6, (4,), generator=g))
            h, w = h * int(torch.randint(1, 5, (1,), generator=g)), w * 3
            k = int(torch.randint(0, 4, (1,), generator=g)) * 2 + 1
            d = int(torch.randint(1, 6, (1,), generator=g))
            image = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
            kernels = torch.randn(b, c * k * k, h, w, generator=g, dtype=torch.float64)
            diff = (pixel_filter2d(image, kernels, d) - pixel_filter2d(image, kernels, d, "reference")).abs().max()
            assert diff.item() <= 1e-12, (b, c, h, w, k, d)

    @pytest.mark.parametrize("impl", ["fast", "reference"])  # "onehot" is for export (no training)
    @pytest.mark.parametrize("k,d", [(3, 1), (3, 2), (5, 1)])
    def test_gradcheck(self, impl: str, k: int, d: int) -> None:
        image = torch.rand(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        kernels = torch.randn(2, 2 * k * k, 5, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, kk: pixel_filter2d(x, kk, d, impl), (image, kernels))

    def test_gradients_agree(self) -> None:
        image = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        kernels = torch.randn(1, 27, 8, 8, dtype=torch.float64, requires_grad=True)
        grads = []
        for impl in ("fast", "reference", "onehot"):
            pixel_filter2d(image, kernels, 2, impl).square().sum().backward()
            grads.append((image.grad.clone(), kernels.grad.clone()))
            image.grad = kernels.grad = None
        torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)

    @pytest.mark.parametrize("impl", ["fast", "reference", "onehot"])
    def test_bfloat16(self, impl: str) -> None:
        image, kernels = torch.rand(1, 3, 8, 8), torch.randn(1, 27, 8, 8) / 3
        out = pixel_filter2d(image.bfloat16(), kernels.bfloat16(), 2, impl)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), pixel_filter2d(image, kernels, 2), atol=5e-2, rtol=5e-2)

    @pytest.mark.parametrize(
        "image,kernels,kwargs,error,match",
        [
            (torch.rand(3, 4, 4), torch.rand(1, 27, 4, 4), {}, ValueError, "image must have shape"),
            (torch.rand(1, 3, 4, 4), torch.rand(27, 4, 4), {}, ValueError, "kernels must have shape"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 26, 4, 4), {}, ValueError, "C\\*k\\*k"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 12, 4, 4), {}, ValueError, "odd"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 48, 4, 4), {}, ValueError, "odd"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 5), {}, ValueError, "spatial"),
            (torch.rand(1, 3, 4, 4), torch.rand(2, 27, 4, 4), {}, ValueError, "batch"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4), {"dilation": 0}, ValueError, "dilation"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4), {"dilation": 1.5}, TypeError, "dilation"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4).double(), {}, TypeError, "same dtype"),
            (torch.ones(1, 3, 4, 4, dtype=torch.long), torch.ones(1, 27, 4, 4, dtype=torch.long), {}, TypeError, "floating"),
            (torch.rand(1, 3, 4, 4).numpy(), torch.rand(1, 27, 4, 4), {}, TypeError, "torch.Tensor"),
            (torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4), {"implementation": "cuda"}, ValueError, "implementation"),
        ],
    )
    def test_exceptions(self, image, kernels, kwargs, error, match) -> None:
        with pytest.raises(error, match=match):
            pixel_filter2d(image, kernels, **kwargs)

    def test_device_mismatch(self) -> None:
        meta = torch.empty(1, 27, 4, 4, device="meta")
        with pytest.raises(TypeError, match="same device"):
            pixel_filter2d(torch.rand(1, 3, 4, 4), meta)

    def test_module(self) -> None:
        image, kernels = torch.rand(1, 3, 6, 6), torch.rand(1, 27, 6, 6)
        op = PixelFilter2d(dilation=3)
        assert torch.equal(op(image, kernels), pixel_filter2d(image, kernels, 3))
        assert "dilation=3" in repr(op)
        with pytest.raises(ValueError):
            PixelFilter2d(dilation=0)


class TestPixelDilationFilter2d:
    def test_order_and_shape(self) -> None:
        image, kernels = torch.rand(2, 3, 7, 9), torch.randn(2, 27, 7, 9)
        out = pixel_dilation_filter2d(image, kernels, (1, 2, 3, 4))
        assert out.shape == (2, 12, 7, 9)
        for n, d in enumerate((1, 2, 3, 4)):
            torch.testing.assert_close(out[:, 3 * n : 3 * n + 3], released_filter(image, kernels, d), atol=1e-6, rtol=0)

    @pytest.mark.parametrize("dilations", [(1,), (1, 2, 3, 4), (4, 1), (2, 2)])
    def test_fast_equals_reference(self, dilations) -> None:
        image = torch.rand(1, 3, 10, 12, dtype=torch.float64)
        kernels = torch.randn(1, 27, 10, 12, dtype=torch.float64)
        fast = pixel_dilation_filter2d(image, kernels, dilations)
        ref = pixel_dilation_filter2d(image, kernels, dilations, "reference")
        assert (fast - ref).abs().max().item() <= 1e-12

    def test_gradcheck(self) -> None:
        image = torch.rand(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
        kernels = torch.randn(1, 18, 5, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, k: pixel_dilation_filter2d(x, k, (1, 2)), (image, kernels))

    @pytest.mark.parametrize("dilations,error", [((), ValueError), ((1, 0), ValueError), ((1, "2"), TypeError)])
    def test_exceptions(self, dilations, error) -> None:
        with pytest.raises(error):
            pixel_dilation_filter2d(torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4), dilations)
        with pytest.raises(error):
            PixelDilationFilter2d(dilations)

    def test_module(self) -> None:
        image, kernels = torch.rand(1, 3, 6, 6), torch.rand(1, 27, 6, 6)
        op = PixelDilationFilter2d((1, 3))
        assert torch.equal(op(image, kernels), pixel_dilation_filter2d(image, kernels, (1, 3)))


def test_all_taps_each_position_once() -> None:
    """Each tap of a one-hot kernel moves the image by (i-h)*d, (j-h)*d with zero fill."""
    image = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    for k, d in itertools.product((3, 5), (1, 2)):
        half = (k - 1) // 2
        for i, j in itertools.product(range(k), range(k)):
            kernels = torch.zeros(1, k * k, 9, 9, dtype=torch.float64)
            kernels[:, i * k + j] = 1
            out = pixel_filter2d(image, kernels, d)
            dy, dx = (i - half) * d, (j - half) * d
            expected = torch.zeros_like(image)
            ys, xs = slice(max(0, -dy), 9 - max(0, dy)), slice(max(0, -dx), 9 - max(0, dx))
            expected[..., ys, xs] = image[..., max(0, dy) : 9 + min(0, dy), max(0, dx) : 9 + min(0, dx)]
            assert torch.equal(out, expected), (k, d, i, j)


def eager_upsample_filter_fuse(image, low, scale, dilations, weight, bias, out_size):
    """The eager path the fused kernel replaces: bilinear upsampling, pixel-wise filtering, 3×3 fusion."""
    h, w = image.shape[-2:]
    kernels = F.interpolate(low, scale_factor=scale, mode="bilinear", align_corners=False) if scale > 1 else low
    filtered = pixel_dilation_filter2d(image, kernels[..., :h, :w].contiguous(), dilations, "reference")
    return F.conv2d(filtered, weight, bias, padding=1)[..., : out_size[0], : out_size[1]]


@pytest.mark.skipif(not fused_filter_available(), reason="the C extension derain.ops._fused_filter is not built")
class TestUpsampleFilterFuse:
    @pytest.mark.parametrize(
        "b, c, h, w, scale, k, dilations, out_size",
        [
            (1, 3, 326, 486, 4, 3, (1, 2, 3, 4), (321, 481)),  # the fast model at 481×321
            (2, 3, 37, 51, 2, 3, (1, 2, 3, 4), (30, 40)),
            (1, 3, 40, 72, 8, 3, (1, 2, 3, 4), (40, 72)),
            (1, 3, 17, 20, 3, 3, (1, 2), (17, 20)),  # a scale without the interior fast path
            (1, 3, 9, 13, 1, 5, (1, 3), (9, 13)),
            (1, 1, 5, 7, 4, 3, (2,), (5, 7)),  # smaller than the taps' reach
            (3, 4, 20, 33, 2, 3, (4, 1), (19, 33)),
        ],
    )
    @pytest.mark.usefixtures("fused_isa")
    def test_equals_eager_path(self, b, c, h, w, scale, k, dilations, out_size) -> None:
        g = torch.Generator().manual_seed(h * w)
        image = torch.rand(b, c, h, w, generator=g)
        low = torch.randn(b, c * k * k, -(-h // scale) + 1, -(-w // scale) + 2, generator=g)
        weight = torch.randn(c, len(dilations) * c, 3, 3, generator=g)
        bias = torch.randn(c, generator=g)
        expected = eager_upsample_filter_fuse(image, low, scale, dilations, weight, bias, out_size)
        out = upsample_filter_fuse(image, low, scale, dilations, weight, bias, out_size)
        assert out.shape == expected.shape and out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)

    @pytest.mark.parametrize("b, scale, whole", [(2, 4, True), (1, 2, False), (3, 3, True)])
    @pytest.mark.usefixtures("fused_isa")
    def test_gate_equals_eager_blend(self, b, scale, whole) -> None:
        """With the gate: image + sigmoid(up(logits))·whole·(fused − image), as the eager path of derain.ops.full_resolution computes it."""
        g = torch.Generator().manual_seed(b * scale)
        h, w, out_size = 37, 51, (33, 50)
        image = torch.rand(b, 3, h, w, generator=g)
        low = torch.randn(b, 27, -(-h // scale) + 1, -(-w // scale) + 1, generator=g)
        weight, bias = torch.randn(3, 12, 3, 3, generator=g), torch.randn(3, generator=g)
        logits = torch.randn(b, 1, *low.shape[-2:], generator=g) * 4
        factor = torch.rand(b, 1, generator=g) if whole else None
        fused = eager_upsample_filter_fuse(image, low, scale, (1, 2, 3, 4), weight, bias, out_size)
        m = torch.sigmoid(F.interpolate(logits, scale_factor=scale, mode="bilinear", align_corners=False)[..., : out_size[0], : out_size[1]])
        m = m * factor[:, :, None, None] if whole else m
        crop = image[..., : out_size[0], : out_size[1]]
        out = upsample_filter_fuse(image, low, scale, (1, 2, 3, 4), weight, bias, out_size, gate=logits, whole=factor)
        torch.testing.assert_close(out, crop + m * (fused - crop), atol=2e-5, rtol=1e-5)

    def test_gate_shapes_are_checked(self) -> None:
        image, low = torch.rand(2, 3, 16, 16), torch.randn(2, 27, 8, 8)
        weight, bias = torch.randn(3, 12, 3, 3), torch.randn(3)
        with pytest.raises(ValueError, match="gate must be"):
            upsample_filter_fuse(image, low, 2, (1, 2, 3, 4), weight, bias, gate=torch.zeros(2, 1, 16, 16))
        with pytest.raises(ValueError, match="whole needs gate"):
            upsample_filter_fuse(image, low, 2, (1, 2, 3, 4), weight, bias, whole=torch.ones(2, 1))

    @pytest.mark.usefixtures("fused_isa")
    def test_threads_give_identical_results(self) -> None:
        g = torch.Generator().manual_seed(0)
        image, low = torch.rand(2, 3, 45, 61, generator=g), torch.randn(2, 27, 12, 16, generator=g)
        weight, bias = torch.randn(3, 12, 3, 3, generator=g), torch.randn(3, generator=g)
        runs = [upsample_filter_fuse(image, low, 4, (1, 2, 3, 4), weight, bias, threads=t) for t in (1, 2, 3, 7)]
        from derain.ops import fused_filter

        assert fused_filter._openmp is not None  # Linux + PyTorch's libgomp: runs on PyTorch's OpenMP team
        fused_filter._fused_filter.set_openmp(0, 0, 0)  # the kernel's own threads instead
        try:
            runs += [upsample_filter_fuse(image, low, 4, (1, 2, 3, 4), weight, bias, threads=t) for t in (2, 3)]
        finally:
            fused_filter._fused_filter.set_openmp(*fused_filter._openmp)
        assert all(torch.equal(runs[0], r) for r in runs[1:])

    @pytest.mark.parametrize("b, scale, gate", [(2, 2, True), (1, 4, False), (1, 3, True)])
    @pytest.mark.usefixtures("fused_isa")
    def test_channels_last_kernels_are_read_as_they_are(self, b, scale, gate, monkeypatch: pytest.MonkeyPatch) -> None:
        """Kernels in channels_last (what bf16 inference makes) give the same bits as the contiguous ones."""
        g = torch.Generator().manual_seed(scale)
        image = torch.rand(b, 3, 37, 51, generator=g)
        low = torch.randn(b, 27, -(-37 // scale) + 1, -(-51 // scale) + 1, generator=g)
        weight, bias = torch.randn(3, 12, 3, 3, generator=g), torch.randn(3, generator=g)
        extra = {"gate": torch.randn(b, 1, *low.shape[-2:], generator=g), "whole": torch.rand(b, 1, generator=g)} if gate else {}
        nhwc = low.contiguous(memory_format=torch.channels_last)
        assert not nhwc.is_contiguous()
        expected = upsample_filter_fuse(image, low, scale, (1, 2, 3, 4), weight, bias, (33, 50), **extra)
        from derain.ops import fused_filter

        calls, kernel = [], fused_filter._fused_filter.filter_fuse
        monkeypatch.setattr(fused_filter._fused_filter, "filter_fuse", lambda *args: calls.append(args) or kernel(*args))
        out = upsample_filter_fuse(image, nhwc, scale, (1, 2, 3, 4), weight, bias, (33, 50), **extra)
        assert torch.equal(out, expected)
        (args,) = calls
        assert args[1] == nhwc.data_ptr() and args[-1] is True  # read in place: no transposing copy
        # any other layout is made contiguous first
        odd = low.transpose(2, 3).contiguous().transpose(2, 3)
        assert torch.equal(upsample_filter_fuse(image, odd, scale, (1, 2, 3, 4), weight, bias, (33, 50), **extra), expected)

    @pytest.mark.usefixtures("fused_isa")
    def test_reduced_precision_inputs_compute_in_fp32(self) -> None:
        image, low = torch.rand(1, 3, 16, 16), torch.randn(1, 27, 8, 8)
        weight, bias = torch.randn(3, 12, 3, 3), torch.randn(3)
        expected = upsample_filter_fuse(image.bfloat16().float(), low.bfloat16().float(), 2, (1, 2, 3, 4), weight, bias)
        out = upsample_filter_fuse(image.bfloat16(), low.bfloat16(), 2, (1, 2, 3, 4), weight, bias)
        assert out.dtype == torch.float32 and torch.equal(out, expected)

    @pytest.mark.parametrize(
        "image, low, kwargs, match",
        [
            (torch.rand(3, 8, 8), torch.rand(1, 27, 4, 4), {}, "4-D"),
            (torch.rand(1, 3, 8, 8), torch.rand(1, 26, 4, 4), {}, "C\\*k\\*k"),
            (torch.rand(1, 3, 8, 8), torch.rand(2, 27, 4, 4), {}, "C\\*k\\*k"),
            (torch.rand(1, 3, 8, 8), torch.rand(1, 12, 4, 4), {}, "odd k"),
            (torch.rand(1, 3, 9, 8), torch.rand(1, 27, 4, 4), {}, "do not cover"),
            (torch.rand(1, 3, 8, 8), torch.rand(1, 27, 4, 4), {"scale": 0}, "positive integer"),
            (torch.rand(1, 3, 8, 8), torch.rand(1, 27, 4, 4), {"dilations": ()}, "dilations"),
            (torch.rand(1, 3, 8, 8), torch.rand(1, 27, 4, 4), {"dilations": (1, 2)}, "fusion must be"),
            (torch.rand(1, 3, 8, 8), torch.rand(1, 27, 4, 4), {"out_size": (9, 8)}, "out_size"),
        ],
    )
    def test_exceptions(self, image, low, kwargs, match) -> None:
        args = {"scale": 2, "dilations": (1, 2, 3, 4), "weight": torch.rand(3, 12, 3, 3), "bias": torch.rand(3)}
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            upsample_filter_fuse(image, low, **args)


def test_fused_kernel_is_built_in_ci() -> None:
    """CI builds the package with a C compiler: the fused kernel must be there (users without one fall back)."""
    if not os.environ.get("CI"):
        pytest.skip("only required in CI (a machine without a C compiler installs without the kernel)")
    assert fused_filter_available()


@pytest.mark.slow
@pytest.mark.skipif(not fused_filter_available(), reason="the C extension derain.ops._fused_filter is not built")
def test_the_kernel_runs_the_clone_it_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every clone this CPU runs can be chosen; by default the best one PyTorch's capability allows
    (``ATEN_CPU_CAPABILITY=avx2`` -> the AVX2 clone), or the one ``DERAIN_FUSED_ISA`` names."""
    import subprocess
    import sys

    from derain.ops.fused_filter import fused_filter_isa, fused_filter_isas, set_fused_filter_isa

    clones = fused_filter_isas()
    assert clones[-1] == "default" and set(clones) <= {"avx512", "avx2", "default"}
    if os.environ.get("CI") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "avx2" in clones  # CI's x86-64 machines build and run the AVX2 clone at least
    with pytest.raises(ValueError, match="clones on this CPU"):
        set_fused_filter_isa("sse9")

    def chosen(**env: str) -> str:
        for key in ("ATEN_CPU_CAPABILITY", "DERAIN_FUSED_ISA"):
            monkeypatch.delenv(key, raising=False)
        code = "from derain.ops.fused_filter import fused_filter_isa; print(fused_filter_isa())"
        run = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True)
        return run.stdout.strip()

    assert chosen() == clones[0] or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512")
    if "avx2" in clones:
        assert chosen(ATEN_CPU_CAPABILITY="avx2") == "avx2"
    assert chosen(ATEN_CPU_CAPABILITY="default") == "default"
    for clone in clones:
        assert chosen(DERAIN_FUSED_ISA=clone) == clone
    assert fused_filter_isa() in clones
    # the clones are different code (FMA contraction, vector widths): their float sums differ somewhere
    g = torch.Generator().manual_seed(0)
    image, low = torch.rand(1, 3, 64, 96, generator=g), torch.randn(1, 27, 16, 24, generator=g)
    weight, bias = torch.randn(3, 12, 3, 3, generator=g), torch.randn(3, generator=g)
    before, outs = fused_filter_isa(), []
    try:
        for clone in clones:
            set_fused_filter_isa(clone)
            outs.append(upsample_filter_fuse(image, low, 4, (1, 2, 3, 4), weight, bias))
    finally:
        set_fused_filter_isa(before)
    if len(clones) > 1:
        assert not torch.equal(outs[0], outs[-1])


def test_without_the_extension_models_run_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a C compiler installs without the kernel: inference falls back, same output."""
    import derain
    from derain.ops import fused_filter

    model = derain.create_model("default", pretrained=True).eval()
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        expected = model(x)
        monkeypatch.setattr(fused_filter, "_fused_filter", None)
        assert not fused_filter_available() and not model.uses_fused_kernel(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="not built"):
        upsample_filter_fuse(x, torch.rand(1, 27, 20, 28), 2, (1, 2, 3, 4), torch.rand(3, 12, 3, 3), torch.rand(3))


class TestPixelUnshuffle:
    """derain.ops.shuffle.pixel_unshuffle: F.pixel_unshuffle's values, layout-independent, with its gradient."""

    @pytest.mark.parametrize("factor", [2, 4])
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_equals_the_aten_op(self, factor: int, channels_last: bool) -> None:
        from derain.ops.shuffle import pixel_unshuffle

        x = torch.rand(2, 3, 8 * factor, 5 * factor)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(pixel_unshuffle(x, factor), F.pixel_unshuffle(x, factor))
        assert pixel_unshuffle(x.bfloat16(), factor).dtype == torch.bfloat16

    def test_gradient_equals_the_aten_op(self) -> None:
        from derain.ops.shuffle import pixel_unshuffle

        x = torch.rand(1, 3, 8, 12, requires_grad=True)
        w = torch.rand(1, 12, 4, 6)
        (g,) = torch.autograd.grad((pixel_unshuffle(x, 2) * w).sum(), x)
        (ref,) = torch.autograd.grad((F.pixel_unshuffle(x, 2) * w).sum(), x)
        assert torch.equal(g, ref)

    def test_sides_not_multiples_are_refused(self) -> None:
        from derain.ops.shuffle import pixel_unshuffle

        with pytest.raises(ValueError, match="multiples of 4"):
            pixel_unshuffle(torch.rand(1, 3, 10, 16), 4)


class TestPadCanvas:
    """derain.ops.padding.pad_canvas: the canvas a staged network runs on, the image at its top-left or centred."""

    @pytest.mark.parametrize("size", [(21, 30), (32, 38), (7, 5)])
    def test_top_left_is_the_border_then_the_multiple(self, size: tuple[int, int]) -> None:
        from derain.ops.padding import pad_border, pad_canvas, pad_to_multiple

        x = torch.rand(1, 3, *size)
        canvas, corner = pad_canvas(x, 5, 16)
        assert corner == (5, 5) and torch.equal(canvas, pad_to_multiple(pad_border(x, 5), 16)[0])

    @pytest.mark.parametrize(("size", "corner", "canvas_size"), [((21, 30), (5, 9), (32, 48)), ((22, 38), (5, 5), (32, 48)),
                                                                ((7, 5), (12, 5), (32, 16)), ((1, 1), (7, 7), (16, 16))])
    def test_centred_splits_the_slack(self, size, corner, canvas_size) -> None:
        from derain.ops.padding import pad_canvas

        x = torch.rand(2, 3, *size)
        canvas, (top, left) = pad_canvas(x, 5, 16, centre=True)
        assert (top, left) == corner and tuple(canvas.shape) == (2, 3, *canvas_size)
        assert torch.equal(canvas[..., top : top + size[0], left : left + size[1]], x)
        bottom, right = canvas_size[0] - top - size[0], canvas_size[1] - left - size[1]
        assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1  # the odd pixel bottom/right
        if min(size) > 16:  # reflected where the image is large enough: the row above mirrors the one below
            torch.testing.assert_close(canvas[..., top - 1, :], canvas[..., top + 1, :], rtol=0, atol=0)
        else:  # tiny images: the edge replicated
            assert torch.equal(canvas[..., 0, left : left + size[1]], x[..., 0, :])
