"""Degradation: sizes, real antialiasing, noise and JPEG, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from horkd import degrade as degrade_module
from horkd.degrade import (
    Degrader,
    DegradeSpec,
    jpeg_roundtrip,
    resolve_lr_size,
)

MODES = ("area", "bilinear", "bicubic")
DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def degrade(x: torch.Tensor, generator: torch.Generator | None = None, **spec) -> torch.Tensor:
    """A one-off Degrader for an image batch of its own (square) size."""
    return Degrader(x.shape[-1], DegradeSpec(**spec))(x, generator=generator)


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("hr", "kwargs", "expected"),
    [
        (32, {"factor": 2}, 16),
        (32, {"factor": 4}, 8),
        (32, {"factor": 8}, 4),
        (28, {"factor": 8}, 3),
        (27, {"factor": 2}, 13),
        (28, {"lr_size": 7}, 7),
        (25, {"lr_size": 7}, 7),
    ],
)
def test_output_sizes(hr, kwargs, expected):
    assert resolve_lr_size(hr, **kwargs) == expected
    x = torch.rand(2, 3, hr, hr)
    for mode in MODES:
        native = Degrader(hr, DegradeSpec(interpolation=mode, **kwargs))
        assert native.lr_size == native.out_size == expected
        assert native(x).shape == (2, 3, expected, expected)
        up = Degrader(
            hr,
            DegradeSpec(interpolation=mode, upsample_interpolation=mode, upsample=True, **kwargs),
        )
        assert up.lr_size == expected and up.out_size == hr
        assert up(x).shape == (2, 3, hr, hr)


def test_upsampled_view_carries_only_lr_detail():
    # Re-upsampling must not bring HR detail back: it is a function of the LR image alone.
    x = torch.rand(2, 3, 16, 16)
    lr = degrade(x, factor=4)
    up = degrade(x, factor=4, upsample=True)
    assert torch.allclose(up, F.interpolate(lr, size=(16, 16), mode="bilinear").clamp(0, 1))


# ----------------------------------------------------------------------------- antialiasing
def _checkerboard(size: int) -> torch.Tensor:
    """A 1-pixel checkerboard: all its energy sits at the Nyquist frequency."""
    ij = torch.arange(size)
    return ((ij.view(-1, 1) + ij.view(1, -1)) % 2).float().view(1, 1, size, size)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lr_size", [9, 13])
def test_antialias_attenuates_high_frequencies(mode, lr_size):
    board = _checkerboard(32)
    lr = Degrader(32, DegradeSpec(lr_size=lr_size, interpolation=mode))(board)
    assert lr.std() < 0.05 and abs(lr.mean() - 0.5) < 0.05
    # the same input without antialiasing aliases into a strong spurious pattern
    plain = F.interpolate(board, size=(lr_size, lr_size), mode="bilinear", antialias=False)
    assert plain.std() > 0.1 and plain.std() > 4 * lr.std()
    if mode != "area":  # the flag is really passed on: switching it off lets the pattern through
        off = Degrader(32, DegradeSpec(lr_size=lr_size, interpolation=mode, antialias=False))
        assert off(board).std() > 0.1


# ----------------------------------------------------------------------------- devices, dtypes
@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_device_and_dtype_follow_the_input(device):
    spec = DegradeSpec(factor=2, blur_sigma=0.8, noise_std=0.05, jpeg_quality=50, upsample=True)
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(2, 3, 16, 16, device=device, dtype=dtype)
        out = Degrader(16, spec)(x, generator=torch.Generator(device=device).manual_seed(0))
        assert out.device == x.device and out.dtype == dtype and out.shape == x.shape


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_cpu_generator_drives_any_device(device):
    x = torch.rand(2, 1, 16, 16, device=device)
    deg = Degrader(16, DegradeSpec(lr_size=8, noise_std=0.1))
    a = deg(x, generator=torch.Generator().manual_seed(1))
    b = deg(x.cpu(), generator=torch.Generator().manual_seed(1))
    assert a.device == x.device
    assert torch.allclose(a.cpu(), b, atol=1e-6)


def test_single_image():
    x = torch.rand(3, 16, 16)
    lr = degrade(x, lr_size=4)
    assert lr.shape == (3, 4, 4)
    assert torch.equal(lr, degrade(x.unsqueeze(0), lr_size=4)[0])


# ----------------------------------------------------------------------------- blur, noise, JPEG
def test_blur_noise_jpeg_change_output_and_stay_in_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    plain = degrade(x, lr_size=16)
    for extra in ({"blur_sigma": 1.0}, {"noise_std": 0.1}, {"jpeg_quality": 20}):
        out = Degrader(32, DegradeSpec(lr_size=16, **extra))(x, generator=torch.Generator())
        assert out.shape == plain.shape and out.dtype == x.dtype
        assert (out - plain).abs().max() > 1e-3, extra
        assert out.min() >= 0 and out.max() <= 1, extra
    bicubic = degrade(x, lr_size=11, interpolation="bicubic", upsample=True)
    assert bicubic.min() >= 0 and bicubic.max() <= 1


def test_blur_keeps_flat_images_and_smooths_detail():
    flat = torch.full((1, 3, 12, 12), 0.3)
    assert torch.allclose(degrade_module.gaussian_blur(flat, 1.5), flat, atol=1e-6)
    tiny = torch.full((1, 1, 3, 3), 0.7)  # smaller than the kernel radius: edge replication
    assert torch.allclose(degrade_module.gaussian_blur(tiny, 2.0), tiny, atol=1e-6)
    board = _checkerboard(16)
    assert degrade_module.gaussian_blur(board, 1.0).std() < 0.1 * board.std()


def test_noise_is_in_pixel_units_on_the_lr_image():
    x = torch.full((4, 1, 32, 32), 0.5)
    out = degrade(x, factor=2, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 16, 16)
    assert abs(out.std().item() - 0.1) < 0.01 and abs(out.mean().item() - 0.5) < 0.01


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_roundtrip_is_lossy_but_close(channels):
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(2, channels, 8, 8, generator=g), size=(32, 32), mode="bilinear")
    low, high = jpeg_roundtrip(x, 10), jpeg_roundtrip(x, 95)
    assert low.shape == x.shape
    err_low, err_high = (low - x).abs().mean(), (high - x).abs().mean()
    assert err_high < 0.04 and err_low > 1.5 * err_high  # colour: chroma subsampling costs a bit


def test_pillow_fallback_matches_torchvision():
    x = (F.interpolate(torch.rand(2, 3, 8, 8), size=(32, 32), mode="bilinear") * 255).round()
    images = list(x.to(torch.uint8))
    tv = torch.stack(degrade_module._jpeg_codec_torchvision(images, 60)).float()
    pil = torch.stack(degrade_module._jpeg_codec_pillow(images, 60)).float()
    assert tv.shape == pil.shape
    assert (tv - pil).abs().mean() < 2.0  # both libjpeg at one quality: a grey level or so


def test_jpeg_rejects_other_channel_counts():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        jpeg_roundtrip(torch.rand(1, 2, 8, 8), 50)


# ----------------------------------------------------------------------------- determinism
def test_deterministic_under_seed():
    x = torch.rand(4, 1, 28, 28)
    deg = Degrader(28, DegradeSpec(lr_size=7, noise_std=0.05))
    a = deg(x, generator=torch.Generator().manual_seed(3))
    b = deg(x, generator=torch.Generator().manual_seed(3))
    c = deg(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((28, 28, None), "smaller"),
        ((28, 40, None), "smaller"),
        ((28, None, 1), "smaller"),
        ((28, 0, None), "positive"),
        ((28, -3, None), "positive"),
        ((0, 7, None), "positive"),
        ((-28, None, 2), "positive"),
        ((28, None, 0), "positive"),
        ((28, None, -2), "positive"),
        ((28, None, 64), "less than one pixel"),
        ((28, 7, 4), "exactly one"),
        ((28, None, None), "exactly one"),
    ],
)
def test_resolve_errors(args, needle):
    with pytest.raises(ValueError, match=needle):
        resolve_lr_size(*args)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"lr_size": 7, "interpolation": "nearest"}, "interpolation must be one of area"),
        ({"lr_size": 7, "upsample_interpolation": "lanczos"}, "upsample_interpolation"),
        ({"lr_size": 7, "jpeg_quality": 0}, "jpeg_quality"),
        ({"lr_size": 7, "jpeg_quality": 101}, "jpeg_quality"),
        ({"lr_size": 7, "noise_std": -0.1}, "noise_std"),
        ({"lr_size": 7, "blur_sigma": float("nan")}, "blur_sigma"),
    ],
)
def test_spec_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        DegradeSpec(**kwargs)


def test_degrader_errors():
    with pytest.raises(ValueError, match="smaller"):
        Degrader(16, DegradeSpec(lr_size=16))
    deg = Degrader(16, DegradeSpec(lr_size=8))
    with pytest.raises(ValueError, match="16x16 HR images, got 32x32"):
        deg(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        deg(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        deg(torch.rand(16, 16))
    with pytest.raises(ValueError, match="not both"):
        Degrader(16, DegradeSpec(lr_size=8), noise_std=0.1)


# ----------------------------------------------------------------------------- paired views
