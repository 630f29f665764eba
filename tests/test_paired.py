"""The noise call on a lead (:func:`horkd.paired.lead_noise`), checked by what it is for: on
simulated students that are equal, it calls about 5% of leads "beyond noise" (not 1%, not 15%),
whatever the seed effect and whether the seeds share their images; a clearly better student is
called beyond."""

from __future__ import annotations

import pytest
import torch

from horkd.paired import lead_noise


def _students(g: torch.Generator, images: int, seeds: int, same_images: bool, seed_sd: float,
              lead: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per seed, two students' 0/1 hits: each image has a difficulty (its chance to be right),
    each student and seed a shift of it (the seed effect), ``a`` ``lead`` better everywhere."""
    difficulty = torch.distributions.Beta(2.0, 2.0)
    shared = difficulty.sample((images,))
    a, b = [], []
    for _ in range(seeds):
        p = shared if same_images else difficulty.sample((images,))
        shift_a, shift_b = (torch.randn(2, generator=g) * seed_sd).tolist()
        a.append((torch.rand(images, generator=g) < (p + lead + shift_a).clamp(0, 1)).float())
        b.append((torch.rand(images, generator=g) < (p + shift_b).clamp(0, 1)).float())
    return a, b


def _beyond_rate(seeds: int, same_images: bool, seed_sd: float, lead: float = 0.0,
                 repeats: int = 200) -> float:
    torch.manual_seed(0)  # the difficulties (Beta draws use the global generator)
    g = torch.Generator().manual_seed(1)
    beyond = 0
    for _ in range(repeats):
        a, b = _students(g, 300, seeds, same_images, seed_sd, lead)
        beyond += not lead_noise(a, b, same_images).within_noise
    return beyond / repeats


@pytest.mark.parametrize("same_images", [True, False], ids=["same images", "a split per seed"])
@pytest.mark.parametrize("seed_sd", [0.0, 0.03, 0.1],
                         ids=["no seed effect", "a seed effect", "the seeds dominate"])
def test_equal_students_are_called_beyond_noise_about_one_time_in_twenty(same_images, seed_sd):
    # the rule this replaced (per-image spread added to the seeds', 2 standard errors) called
    # 14% beyond noise where the seeds dominate, and 1% with no seed effect on split seeds
    assert 0.01 <= _beyond_rate(3, same_images, seed_sd) <= 0.10


def test_one_seed_without_a_seed_effect_is_calibrated_too():
    assert 0.01 <= _beyond_rate(1, True, 0.0) <= 0.10


def test_a_clearly_better_student_is_called_beyond_noise():
    assert _beyond_rate(3, True, 0.01, lead=0.2, repeats=50) >= 0.9
    assert _beyond_rate(3, False, 0.01, lead=0.2, repeats=50) >= 0.9


def test_the_cut_is_students_t_with_seeds_and_the_normal_with_one():
    a, b = [torch.tensor([1.0, 0, 1, 1])] * 3, [torch.tensor([0.0, 0, 1, 0])] * 3
    assert lead_noise(a, b).cut == pytest.approx(4.303, abs=1e-3)  # t 0.975 at 2 df
    assert lead_noise(a[:1], b[:1]).cut == pytest.approx(1.96, abs=1e-3)
    assert lead_noise(a, b).standard_error == 0.0  # three identical seeds: no seed spread
