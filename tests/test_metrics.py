"""PSNR/SSIM protocols: hand-checkable values, independent implementations, real-data golden numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d
from skimage.metrics import structural_similarity

from derain.evaluation import (
    PROTOCOLS,
    calculate_psnr,
    calculate_ssim,
    calculate_ssim_skimage,
    efderain_resize,
    efderain_resize_back,
    find_pairs,
    get_protocol,
    psnr_torch,
    quantize,
    rgb_to_y,
    round_up_size,
    score,
    ssim_torch,
)
from derain.metrics import _bilinear_resize, gaussian_kernel_1d
from derain.io import read_image


def _random_pair(seed: int, shape: tuple[int, ...] = (37, 45, 3), noise: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish random image and a noisy copy (uint8)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape).astype(np.float64)
    base = (base + np.roll(base, 1, axis=0) + np.roll(base, 1, axis=1)) / 3
    noisy = base + rng.integers(-noise, noise + 1, shape)
    return np.clip(base, 0, 255).astype(np.uint8), np.clip(noisy, 0, 255).astype(np.uint8)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float64) / 255.0).permute(2, 0, 1)[None]


# ----------------------------------------------------------------------------- rgb_to_y


@pytest.mark.parametrize(
    ("rgb", "y"),
    [((255, 255, 255), 235.0), ((0, 0, 0), 16.0), ((255, 0, 0), 81.481), ((0, 255, 0), 144.553), ((0, 0, 255), 40.966)],
)
def test_rgb_to_y_golden(rgb: tuple[int, int, int], y: float) -> None:
    value = rgb_to_y(np.array([[rgb]], np.uint8))
    assert value.dtype == np.float64
    assert value[0, 0] == pytest.approx(y, abs=1e-9)


def test_rgb_to_y_float_input_and_shape_check() -> None:
    img = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img), rgb_to_y(img.astype(np.float32)), atol=1e-9)
    with pytest.raises(ValueError, match="H×W×3"):
        rgb_to_y(np.zeros((4, 5), np.uint8))


# ----------------------------------------------------------------------------- PSNR


def test_psnr_differ_by_one_everywhere() -> None:
    a = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    expected = 10 * math.log10(255**2)  # MSE = 1
    assert expected == pytest.approx(48.1308036, abs=1e-7)
    assert calculate_psnr(a, a + 1) == pytest.approx(expected, abs=1e-12)
    assert calculate_psnr(a, a) == math.inf


def test_psnr_known_mse_on_y() -> None:
    # grey images differing by d in every channel differ by d·219/255 in Y
    d = 10
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a + d
    y_diff = d * 219 / 255
    assert calculate_psnr(a, b, test_y_channel=True) == pytest.approx(10 * math.log10(255**2 / y_diff**2), abs=1e-9)
    assert calculate_psnr(a, b) == pytest.approx(10 * math.log10(255**2 / d**2), abs=1e-9)


def test_psnr_crop_border_and_shape_check() -> None:
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[0, :] = 255  # only the border row differs
    assert calculate_psnr(a, b, crop_border=1) == math.inf
    assert calculate_psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (255**2 / 10)))
    with pytest.raises(ValueError, match="same shape"):
        calculate_psnr(a, a[:5])


# ----------------------------------------------------------------------------- SSIM (numpy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_y_ssim_matches_skimage_gaussian(seed: int) -> None:
    a, b = _random_pair(seed)
    ours = calculate_ssim(a, b, test_y_channel=True)
    ref = structural_similarity(
        rgb_to_y(a), rgb_to_y(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ours == pytest.approx(ref, abs=1e-9)
    assert 0.0 < ours < 1.0


def test_rgb_ssim_is_channel_mean_of_wang_ssim() -> None:
    a, b = _random_pair(3)
    per_channel = [calculate_ssim(a[:, :, c], b[:, :, c]) for c in range(3)]
    assert calculate_ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-12)
    ref = structural_similarity(
        a, b, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert calculate_ssim(a, b) == pytest.approx(ref, abs=1e-9)


def test_ssim_valid_region_equals_scipy_correlate2d() -> None:
    """Independent 2-D 'valid' filtering (BasicSR: cv2.filter2D then [5:-5, 5:-5])."""
    a, b = _random_pair(4, shape=(30, 26))
    x, y = a.astype(np.float64), b.astype(np.float64)
    g = gaussian_kernel_1d(11, 1.5)
    window = np.outer(g, g)
    assert window.sum() == pytest.approx(1.0)

    def filt(img: np.ndarray) -> np.ndarray:
        return correlate2d(img, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim_map.shape == (20, 16)
    assert calculate_ssim(a, b) == pytest.approx(ssim_map.mean(), abs=1e-12)


def test_ssim_skimage_default_matches_skimage() -> None:
    for seed in (5, 6):
        a, b = _random_pair(seed)
        ref = structural_similarity(a, b, channel_axis=2, data_range=255)
        assert calculate_ssim_skimage(a, b) == pytest.approx(ref, abs=1e-9)


def test_ssim_identical_small_and_mismatched() -> None:
    a, _ = _random_pair(7)
    assert calculate_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert calculate_ssim_skimage(a, a) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 11"):
        calculate_ssim(a[:10], a[:10])
    with pytest.raises(ValueError, match="same shape"):
        calculate_ssim(a, a[:20])


# ----------------------------------------------------------------------------- torch versions


def test_ssim_torch_valid_equals_numpy_in_float64() -> None:
    a, b = _random_pair(8)
    ours = ssim_torch(_to_tensor(a), _to_tensor(b), padding="valid").item()
    assert ours == pytest.approx(calculate_ssim(a, b), abs=1e-6)


def test_ssim_torch_same_is_zero_padded_valid() -> None:
    """'same' zero padding == 'valid' SSIM of the images zero-padded by 5 pixels."""
    a, b = _random_pair(9)
    padded = [np.pad(img, ((5, 5), (5, 5), (0, 0))) for img in (a, b)]
    ours = ssim_torch(_to_tensor(a), _to_tensor(b), padding="same").item()
    assert ours == pytest.approx(calculate_ssim(*padded), abs=1e-6)
    assert ours != pytest.approx(ssim_torch(_to_tensor(a), _to_tensor(b), padding="valid").item(), abs=1e-4)


def test_ssim_torch_is_differentiable_and_one_for_identical() -> None:
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    target = torch.rand(2, 3, 24, 24)
    loss = 1 - ssim_torch(x, target)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert ssim_torch(target, target).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="padding"):
        ssim_torch(target, target, padding="reflect")  # type: ignore[arg-type]


def test_psnr_torch_per_image_mean() -> None:
    target = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 → 20 dB
    pred[1] += 0.01  # MSE 1e-4 → 40 dB
    assert psnr_torch(pred, target).item() == pytest.approx(30.0, abs=1e-9)
    assert psnr_torch(pred[0], target[0]).item() == pytest.approx(20.0, abs=1e-9)
    assert psnr_torch(pred * 255, target * 255, data_range=255.0).item() == pytest.approx(30.0, abs=1e-9)


# ----------------------------------------------------------------------------- quantisation and resizing


def test_quantize_round_vs_truncate() -> None:
    x = np.array([0.0, 0.4 / 255, 0.6 / 255, 100.5 / 255, 1.0, 1.3, -0.2], np.float32)
    assert quantize(x, "round").tolist() == [0, 0, 1, 100, 255, 255, 0]  # 100.5 → 100: half to even
    assert quantize(x, "truncate").tolist() == [0, 0, 0, 100, 255, 255, 0]
    u8 = np.arange(5, dtype=np.uint8)
    assert quantize(u8) is u8
    with pytest.raises(ValueError, match="quantize mode"):
        quantize(x, "floor")  # type: ignore[arg-type]


def test_round_up_size() -> None:
    assert round_up_size(321, 481) == (336, 496)
    assert round_up_size(336, 496) == (336, 496)
    assert round_up_size(1, 17, 8) == (8, 24)


def _reference_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2 INTER_LINEAR in float: src = (dst + 0.5)·in/out − 0.5, clamped at the edges."""

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = coords(out_h, img.shape[0])
    x0, x1, fx = coords(out_w, img.shape[1])
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize("size", [(21, 35), (9, 14), (13, 22)])
def test_bilinear_resize_is_half_pixel_bilinear(size: tuple[int, int]) -> None:
    img = np.random.default_rng(10).random((13, 22, 3)).astype(np.float32) * 255
    np.testing.assert_allclose(_bilinear_resize(img, size), _reference_bilinear(img.astype(np.float64), *size), atol=1e-3)


def test_efderain_resize_and_back() -> None:
    img, _ = _random_pair(11, shape=(21, 35, 3))
    up = efderain_resize(img)
    assert up.shape == (32, 48, 3) and up.dtype == np.float32
    assert 0.0 <= up.min() and up.max() <= 1.0
    np.testing.assert_allclose(up * 255, np.round(up * 255), atol=1e-3)  # uint8 levels, as cv2 on uint8
    expected_up = np.floor(_reference_bilinear(img.astype(np.float64), 32, 48) + 0.5)
    assert np.abs(up * 255 - expected_up).max() <= 1.0 + 1e-3
    back = efderain_resize_back(up, (21, 35))
    assert back.shape == (21, 35, 3) and back.dtype == np.float64
    expected_back = _reference_bilinear(np.floor(up.astype(np.float32) * 255).astype(np.float64), 21, 35)
    np.testing.assert_allclose(back, expected_back, atol=1e-3)  # truncation, then float resize (no rounding)
    # an image already a multiple of 16 goes through unchanged
    square, _ = _random_pair(12, shape=(16, 32, 3))
    np.testing.assert_array_equal(efderain_resize_back(efderain_resize(square), (16, 32)), square.astype(np.float64))


# ----------------------------------------------------------------------------- protocols


def test_protocol_registry() -> None:
    assert set(PROTOCOLS) == {"y", "efderain-rgb"}
    assert get_protocol("y").quantize_mode == "round" and get_protocol("y").y_channel
    efd = get_protocol("efderain-rgb")
    assert (efd.quantize_mode, efd.y_channel, efd.ssim, efd.resize_multiple) == ("truncate", False, "skimage", 16)
    assert get_protocol(efd) is efd
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        get_protocol("rgb")


def test_score_round_vs_truncate() -> None:
    gt, _ = _random_pair(13, shape=(32, 48, 3))
    gt = np.clip(gt, 1, 255)
    just_below = (gt.astype(np.float32) - 0.1) / 255  # rounds to gt, truncates to gt − 1
    psnr_y, ssim_y = score("y", just_below, gt)
    assert psnr_y == math.inf and ssim_y == pytest.approx(1.0)
    psnr_rgb, ssim_rgb = score("efderain-rgb", just_below, gt)
    assert psnr_rgb == pytest.approx(48.1308036, abs=1e-6)  # every pixel off by exactly one
    assert ssim_rgb < 1.0
    assert score("efderain-rgb", (gt.astype(np.float32) + 0.4) / 255, gt)[0] == math.inf


def test_score_uint8_prediction_and_metrics_match_functions() -> None:
    gt, pred = _random_pair(14, shape=(32, 32, 3))
    assert score("y", pred, gt) == (
        calculate_psnr(pred, gt, test_y_channel=True),
        calculate_ssim(pred, gt, test_y_channel=True),
    )
    assert score("efderain-rgb", pred, gt) == pytest.approx((calculate_psnr(pred, gt), calculate_ssim_skimage(pred, gt)))


def test_efderain_protocol_resizes_gt_and_accepts_padded_prediction() -> None:
    gt, _ = _random_pair(15, shape=(21, 35, 3))
    protocol = get_protocol("efderain-rgb")
    model_in = protocol.model_input(gt)
    assert model_in.shape == (32, 48, 3)
    reference = protocol.reference_image(gt)
    assert reference.shape == gt.shape and not np.array_equal(reference, gt)  # the GT round trip blurs it
    # an identity "model" on the resized GT scores perfectly: both took the same way back
    assert score(protocol, model_in, gt)[0] == math.inf
    # each protocol refuses a prediction that is not at its model-input size
    with pytest.raises(ValueError, match="must be 21×35"):
        score("y", model_in, gt)
    with pytest.raises(ValueError, match="must be 32×48"):
        score(protocol, gt, gt)
    np.testing.assert_array_equal(get_protocol("y").model_input(gt) * 255, gt.astype(np.float32))


# ----------------------------------------------------------------------------- real data


def test_rain100l_input_golden(shared_dataset) -> None:  # type: ignore[no-untyped-def]
    pairs = find_pairs(shared_dataset("Rain100L"))
    assert len(pairs) == 100
    psnrs, ssims = [], []
    for pair in pairs:
        rainy, clean = read_image(pair.rainy), read_image(pair.clean)
        psnrs.append(calculate_psnr(rainy, clean, test_y_channel=True))
        ssims.append(calculate_ssim(rainy, clean, test_y_channel=True))
    assert round(float(np.mean(psnrs)), 2) == 26.90  # reference.md §4 / data README
    assert float(np.mean(psnrs)) == pytest.approx(26.9007, abs=1e-4)
    assert float(np.mean(ssims)) == pytest.approx(0.8384, abs=1e-4)
