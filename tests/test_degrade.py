"""Degradation: sizes, real antialiasing, paired views from one augmentation, determinism, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from horkd.degrade import Degrader, DegradeSpec, PairedViews, degrade, resolve_lr_size


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
    x = torch.rand(2, 3, hr, hr)
    for mode in ("area", "bilinear", "bicubic"):
        lr = Degrader(hr, DegradeSpec(interpolation=mode, **kwargs))(x)
        assert lr.shape == (2, 3, expected, expected)
        up = Degrader(hr, DegradeSpec(interpolation=mode, upsample=True, **kwargs))(x)
        assert up.shape == (2, 3, hr, hr)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_antialias_attenuates_high_frequencies(mode):
    # A 1-pixel checkerboard: all its energy is at the Nyquist frequency.
    ij = torch.arange(32)
    board = ((ij.view(-1, 1) + ij.view(1, -1)) % 2).float().view(1, 1, 32, 32)
    lr = Degrader(32, DegradeSpec(lr_size=9, interpolation=mode))(board)
    assert lr.std() < 0.05 and abs(lr.mean() - 0.5) < 0.05
    if mode == "area":  # an average by construction; point sampling shows what it prevents
        aliased = F.interpolate(board, size=(9, 9), mode="nearest")
    else:  # the flag is really passed on: switching it off lets the pattern alias through
        aliased = Degrader(32, DegradeSpec(lr_size=9, interpolation=mode, antialias=False))(board)
    assert aliased.std() > 0.1 and aliased.std() > 4 * lr.std()


def test_single_image_and_device_kept():
    x = torch.rand(1, 16, 16, device=torch.device("cpu"))
    lr = degrade(x, lr_size=4)
    assert lr.shape == (1, 4, 4) and lr.device == x.device


def test_blur_noise_jpeg_change_output_and_stay_in_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    plain = degrade(x, lr_size=16)
    for extra in ({"blur_sigma": 1.0}, {"noise_std": 0.1}, {"jpeg_quality": 20}):
        out = Degrader(32, DegradeSpec(lr_size=16, **extra))(x, generator=torch.Generator())
        assert out.shape == plain.shape and out.dtype == x.dtype
        assert (out - plain).abs().max() > 1e-3, extra
        assert out.min() >= 0 and out.max() <= 1


def test_deterministic_under_seed():
    x = torch.rand(4, 1, 28, 28)
    deg = Degrader(28, DegradeSpec(lr_size=7, noise_std=0.05))
    a = deg(x, generator=torch.Generator().manual_seed(3))
    b = deg(x, generator=torch.Generator().manual_seed(3))
    c = deg(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((28, 28, None), "smaller"),
        ((28, 40, None), "smaller"),
        ((28, 0, None), "positive"),
        ((28, -3, None), "positive"),
        ((0, 7, None), "positive"),
        ((28, None, 0), "positive"),
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
        ({"lr_size": 7, "interpolation": "nearest"}, "interpolation"),
        ({"lr_size": 7, "jpeg_quality": 0}, "jpeg_quality"),
        ({"lr_size": 7, "noise_std": -0.1}, "noise_std"),
    ],
)
def test_spec_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        DegradeSpec(**kwargs)


class _RandomCropFlip(Dataset):
    """A base dataset with its own random augmentation, as a user's pipeline would have."""

    def __init__(self) -> None:
        self.images = torch.rand(6, 1, 20, 20)
        self.rng = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        top, left = (int(v) for v in torch.randint(0, 5, (2,), generator=self.rng))
        img = self.images[i, :, top : top + 16, left : left + 16]
        if torch.rand(1, generator=self.rng) < 0.5:
            img = img.flip(-1)
        return img, i % 2


def test_paired_views_share_one_augmentation():
    deg = Degrader(16, DegradeSpec(lr_size=4, noise_std=0.02))
    views = PairedViews(_RandomCropFlip(), deg, seed=5)
    for i in range(len(views)):
        hr, lr, label = views[i]
        g = torch.Generator().manual_seed((5 * 1_000_003 + 0) * 1_000_003 + i)
        assert torch.equal(lr, deg(hr, generator=g))
        assert label == i % 2
    # noise is reproducible per (seed, epoch, index) and changes with the epoch
    hr = torch.rand(1, 16, 16)

    class Fixed(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return hr, 0

    fixed = PairedViews(Fixed(), deg, seed=1)
    first = fixed[0][1]
    assert torch.equal(first, fixed[0][1])
    fixed.set_epoch(1)
    assert not torch.equal(first, fixed[0][1])
