"""The toy 2-D world (toys.py): seeded data, the velocity MLP, training and reflow through the one loop,
trajectories, and the measures (energy distance against its formula, straightness on paths of known shape)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from diffusion_lessons import toys
from diffusion_lessons.sigmas import flow_sigmas


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- data ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(toys.TOYS))
def test_toys_are_seeded_2d_point_clouds(name):
    a, b, c = toys.toy_points(name, 500, gen(1)), toys.toy_points(name, 500, gen(1)), toys.toy_points(name, 500, gen(2))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() < 3.5 and 0.5 < a.std() < 2.0   # about unit scale, like the noise they come from


def test_checkerboard_points_lie_on_the_dark_squares():
    x = toys.checkerboard(4000, gen())
    col, row = torch.floor(x[:, 0]), torch.floor(x[:, 1])
    assert bool(((col + row) % 2 == 0).all()) and x.min() >= -2 and x.max() < 2
    counts = torch.bincount(((col + 2) * 4 + (row + 2)).long(), minlength=16)
    assert (counts > 0).sum() == 8 and counts[counts > 0].min() > 350   # 8 squares, about 500 points each


def test_eight_gaussians_sit_on_a_circle_and_two_moons_have_two_halves():
    x = toys.eight_gaussians(4000, gen(), radius=2.0, std=0.05)
    assert torch.allclose(x.norm(dim=1).mean(), torch.tensor(2.0), atol=0.02)
    angles = torch.round(torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)) % 8
    assert torch.bincount(angles.long(), minlength=8).min() > 400
    moons = toys.two_moons(4000, gen(), noise=0.0) / 1.5 + torch.tensor([0.5, 0.25])
    on_upper = (moons - torch.tensor([0.0, 0.0])).norm(dim=1).sub(1).abs() < 1e-5
    on_lower = (moons - torch.tensor([1.0, 0.5])).norm(dim=1).sub(1).abs() < 1e-5
    assert bool((on_upper | on_lower).all()) and 0.45 < on_upper.float().mean() < 0.55


@pytest.mark.parametrize("call, name", [
    (lambda: toys.toy_points("spiral", 10), "name"),
    (lambda: toys.two_moons(0), "n"),
    (lambda: toys.checkerboard(2.5), "n"),
    (lambda: toys.sample_paths(toys.VelocityMLP(), torch.zeros(4)), "noise"),
    (lambda: toys.energy_distance(torch.zeros(1, 2), torch.zeros(5, 2)), "generated"),
    (lambda: toys.energy_distance(torch.zeros(5, 2), [[0.0, 0.0]]), "real"),
    (lambda: toys.energy_distance_estimate(torch.randn(5, 2), torch.randn(5, 2), resamples=10), "resamples"),
    (lambda: toys.straightness(torch.zeros(3, 4, 2), [1.0, 0.5]), "sigmas"),
    (lambda: toys.straightness(torch.zeros(3, 4, 2), [0.0, 0.5, 1.0]), "sigmas"),
    (lambda: toys.path_length_ratio(torch.zeros(4, 2)), "paths"),
])
def test_bad_inputs_raise_value_errors_that_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ---- model, training, reflow ----------------------------------------------------------------------------------------

def test_velocity_mlp_takes_one_timestep_or_one_per_point():
    torch.manual_seed(0)
    model = toys.VelocityMLP()
    x = torch.randn(5, 2)
    with torch.no_grad():
        one, each = model(x, torch.tensor(500.0)), model(x, torch.full((5,), 500.0))
    assert one.shape == (5, 2) and torch.allclose(one, each)


def test_training_and_reflow_are_deterministic_and_learn():
    data = toys.toy_points("eight_gaussians", 2000, gen())
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = toys.VelocityMLP(width=32)
        losses = toys.train_flow(model, data, steps=150, batch_size=128, progress=False)
        models.append(model)
    assert all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters()))
    assert sum(losses[-25:]) / 25 < sum(losses[:25]) / 25      # it learns
    noise, samples = toys.reflow_pairs(models[0], 64, gen(3), steps=8)
    again = toys.reflow_pairs(models[1], 64, gen(3), steps=8)
    assert noise.shape == samples.shape == (64, 2) and torch.equal(samples, again[1])
    assert torch.equal(samples, toys.generate(models[0], noise, 8))
    reflowed = copy.deepcopy(models[0])
    toys.train_flow(reflowed, samples, noise=noise, steps=20, batch_size=32, progress=False)
    assert not all(torch.equal(p, q) for p, q in zip(reflowed.parameters(), models[0].parameters()))


def test_sample_paths_start_at_the_noise_and_follow_euler_steps():
    torch.manual_seed(0)
    model = toys.VelocityMLP(width=16)
    noise = torch.randn(6, 2, generator=gen())
    paths = toys.sample_paths(model, noise, steps=4)
    assert paths.shape == (5, 6, 2) and torch.equal(paths[0], noise)
    sigmas = flow_sigmas(4, spacing="uniform")
    with torch.no_grad():
        v = model(paths[1], sigmas[1] * 1000)
    assert torch.allclose(paths[2], paths[1] + (sigmas[2] - sigmas[1]) * v, atol=1e-6)


# ---- measures --------------------------------------------------------------------------------------------------------

def test_energy_distance_is_the_unbiased_formula_and_zero_on_average_for_one_distribution():
    a, b = torch.randn(300, 2, generator=gen(1)), torch.randn(200, 2, generator=gen(2)) + 0.5
    n, m, a64, b64 = 300, 200, a.double(), b.double()
    want = (2 * torch.cdist(a64, b64).mean() - torch.cdist(a64, a64).sum() / (n * (n - 1))
            - torch.cdist(b64, b64).sum() / (m * (m - 1)))
    assert toys.energy_distance(a, b) == pytest.approx(want.item(), rel=1e-9)
    same = [toys.energy_distance(torch.randn(100, 2, generator=gen(2 * k)),
                                 torch.randn(100, 2, generator=gen(2 * k + 1))) for k in range(40)]
    assert abs(sum(same) / len(same)) < 0.004                  # unbiased: no positive offset at small n
    est = toys.energy_distance_estimate(a, b, resamples=300)
    assert est.low < est.value < est.high and est.n == 300 and est.low > 0
    assert est == toys.energy_distance_estimate(a, b, resamples=300)   # seeded


def test_mmd_is_the_unbiased_formula_and_sees_a_blur_that_the_energy_distance_misses():
    a, b, h = torch.randn(300, 2, generator=gen(1)).double(), torch.randn(200, 2, generator=gen(2)).double(), 0.3
    k = lambda x, y: torch.exp(-torch.cdist(x, y) ** 2 / (2 * h * h))  # noqa: E731
    want = (k(a, a).sum() - 300) / (300 * 299) + (k(b, b).sum() - 200) / (200 * 199) - 2 * k(a, b).mean()
    assert toys.mmd(a, b, bandwidth=h) == pytest.approx(want.item(), rel=1e-9)
    real = toys.toy_points("two_moons", 1000, gen(1))
    fresh = toys.toy_points("two_moons", 1000, gen(2))
    blurred = toys.toy_points("two_moons", 1000, gen(3)) + 0.15 * torch.randn(1000, 2, generator=gen(4))
    near, far = toys.mmd_estimate(fresh, real), toys.mmd_estimate(blurred, real)
    assert near.low < 0 < near.high and far.low > near.high
    assert toys.energy_distance_estimate(blurred, real).low < 0   # within its noise
    with pytest.raises(ValueError, match="bandwidth"):
        toys.mmd(a, b, bandwidth=0)


def test_straightness_is_zero_on_straight_paths_and_known_on_a_half_circle():
    sigmas = flow_sigmas(200, spacing="uniform")
    start, end = torch.randn(10, 2, generator=gen(1)), torch.randn(10, 2, generator=gen(2))
    line = torch.stack([s * start + (1 - s) * end for s in sigmas.tolist()])
    assert toys.straightness(line, sigmas).abs().max() < 1e-8
    assert torch.allclose(toys.path_length_ratio(line), torch.ones(10, dtype=torch.float64))
    # a half circle from (1, 0) to (-1, 0) run at constant speed as sigma goes 1 -> 0: velocity pi, chord 2
    angle = math.pi * (1 - sigmas.double())
    arc = torch.stack([angle.cos(), angle.sin()], dim=1)[:, None, :]
    assert toys.path_length_ratio(arc).item() == pytest.approx(math.pi / 2, rel=1e-4)
    # integral of |(x_1 - x_0) - v|^2 = |v|^2 - |u|^2 on a constant-speed path with mean velocity u: pi^2 - 4
    assert toys.straightness(arc, sigmas).item() == pytest.approx(math.pi ** 2 - 4, rel=1e-3)
    est = toys.path_estimates(line, sigmas)
    assert set(est) == {"straightness", "length_ratio"} and est["length_ratio"].value == pytest.approx(1.0)
