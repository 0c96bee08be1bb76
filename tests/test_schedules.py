"""Noise schedules and the forward process (lesson 02) against diffusers and the papers' numbers.

Reference numbers: computed in float64 from the papers' formulas (Ho et al. 2020; Nichol and Dhariwal 2021).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from diffusion_lessons.data import load_photo
from diffusion_lessons.schedules import KINDS, make_schedule, to_diffusers_config

CASES = [(kind, zero) for kind in KINDS for zero in (False, True)]


def diffusers_scheduler(kind: str, zero_terminal_snr: bool = False, num_steps: int = 1000) -> DDPMScheduler:
    return DDPMScheduler(**to_diffusers_config(kind, num_steps, zero_terminal_snr))


# ---- the schedules against diffusers' DDPMScheduler ----


@pytest.mark.parametrize("kind, zero", CASES)
def test_schedule_matches_diffusers(kind, zero):
    ours, ref = make_schedule(kind, zero_terminal_snr=zero), diffusers_scheduler(kind, zero)
    for name in ("betas", "alphas", "alphas_cumprod"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-12, msg=name)
    t = torch.arange(1000)
    torch.testing.assert_close(ours.snr, compute_snr(ref, t), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("kind, zero", CASES)
def test_schedule_tensors_are_float32_vectors(kind, zero):
    s = make_schedule(kind, num_steps=50, zero_terminal_snr=zero)
    for values in (s.betas, s.alphas, s.alphas_cumprod, s.snr):
        assert values.dtype == torch.float32 and values.shape == (50,)
    assert s.num_steps == 50
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(s.alphas, 0))


@pytest.mark.parametrize("kind, zero", CASES)
def test_add_noise_matches_diffusers(kind, zero):
    ours, ref = make_schedule(kind, zero_terminal_snr=zero), diffusers_scheduler(kind, zero)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 249, 500, 998, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)


def test_add_noise_one_timestep_for_the_whole_batch():
    s = make_schedule("linear")
    x0, noise = torch.ones(4, 1, 2, 2), torch.zeros(4, 1, 2, 2)
    out = s.add_noise(x0, noise, torch.tensor(499))
    torch.testing.assert_close(out, torch.full_like(x0, math.sqrt(0.078587)), rtol=1e-4, atol=0)


# ---- the papers' numbers ----


def test_linear_constants():
    abar = make_schedule("linear").alphas_cumprod
    for t, expected in [(0, 0.9999), (249, 0.52409), (499, 0.078587), (749, 0.0033506), (999, 4.0358e-05)]:
        assert abar[t].item() == pytest.approx(expected, rel=1e-4), t


def test_cosine_constants():
    s = make_schedule("cosine")
    assert s.betas[0].item() == pytest.approx(4.1284e-05, rel=1e-4)
    assert s.betas[999].item() == pytest.approx(0.999, rel=1e-6)
    assert int((s.betas >= 0.999 - 1e-7).sum()) == 1  # the cap clips only the last step
    for t, expected in [(249, 0.84701), (499, 0.49384), (749, 0.14427), (999, 2.4288e-09)]:
        assert s.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-3), t


def test_scaled_linear_leaves_signal_at_the_last_step():
    abar = make_schedule("scaled_linear").alphas_cumprod
    assert abar[0].item() == pytest.approx(0.99915, rel=1e-5)
    assert abar[999].item() == pytest.approx(0.0046601, rel=1e-4)
    assert abar[999].sqrt().item() == pytest.approx(0.068265, rel=1e-4)


def test_linear_destroys_information_faster_than_cosine():
    """Nichol and Dhariwal: alpha_bar < 0.01 for the last 327 linear steps and only 65 cosine ones."""
    for kind, expected in [("linear", 327), ("cosine", 65)]:
        abar = make_schedule(kind).alphas_cumprod
        assert int((abar < 0.01).sum()) == expected, kind
        assert bool((abar[-expected:] < 0.01).all()), kind  # they are the last ones


@pytest.mark.parametrize("kind, zero", CASES)
def test_snr_is_strictly_decreasing(kind, zero):
    s = make_schedule(kind, zero_terminal_snr=zero)
    assert bool((s.snr[1:] < s.snr[:-1]).all())
    torch.testing.assert_close(s.snr, s.alphas_cumprod / (1 - s.alphas_cumprod))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_terminal_snr(kind):
    plain, fixed = make_schedule(kind), make_schedule(kind, zero_terminal_snr=True)
    assert fixed.alphas_cumprod[-1].item() == 0.0 and fixed.snr[-1].item() == 0.0
    assert plain.alphas_cumprod[-1].item() > 0.0
    assert fixed.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-6)
    assert fixed.kind == f"{kind}+zero_snr"


# ---- the Markov chain q(x_t | x_{t-1}) against the closed form q(x_t | x_0) ----


def test_one_chain_step_is_the_closed_form_at_t0():
    s, x0 = make_schedule("linear"), load_photo(8)
    chain = s.noise_chain(x0, 0, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(chain, s.add_noise(x0[None], eps[None], torch.tensor([0]))[0])
    torch.testing.assert_close(s.q_step(x0, 0, eps), chain)


# A tiny 2x2 image of four grey levels. n chains of it make 32,000 numbers per step: below torch's
# 32,768-element grain size, so the 1000-step loop stays single-threaded and fast on a busy CPU.
X0 = torch.tensor([[[-1.0, -0.3], [0.4, 1.0]]])
N_CHAINS = 8000


@pytest.mark.parametrize("kind, t", [("linear", 249), ("linear", 999), ("cosine", 499)])
def test_markov_chain_has_the_closed_form_mean_and_variance(kind, t):
    """n chains of t+1 small steps: per pixel, mean sqrt(abar_t) x0 and variance 1 - abar_t.

    Tolerances are 6 standard errors: sqrt(var / n) for the mean, var * sqrt(2 / (n - 1)) for the
    variance of Gaussian samples; pooled over all pixels the standardized noise must be N(0, 1)."""
    s, x0, n = make_schedule(kind), X0, N_CHAINS
    x_t = s.noise_chain(x0.expand(n, *x0.shape).contiguous(), t, generator=torch.Generator().manual_seed(0))
    abar = s.alphas_cumprod[t].double()
    mean, var = abar.sqrt() * x0.double(), 1 - abar
    x_t = x_t.double()
    assert (x_t.mean(0) - mean).abs().max() < 6 * (var / n).sqrt()
    assert (x_t.var(0) - var).abs().max() < 6 * var * math.sqrt(2 / (n - 1))
    z = (x_t - mean) / var.sqrt()
    assert abs(z.mean().item()) < 6 / math.sqrt(z.numel())
    assert abs(z.var().item() - 1) < 6 * math.sqrt(2 / (z.numel() - 1))


def test_markov_chain_statistical_test_catches_a_wrong_schedule():
    """The check above has teeth: chains run on the cosine schedule fail the linear closed form."""
    linear, cosine, x0, n, t = make_schedule("linear"), make_schedule("cosine"), X0, N_CHAINS, 249
    x_t = cosine.noise_chain(x0.expand(n, *x0.shape).contiguous(), t, generator=torch.Generator().manual_seed(0))
    var = 1 - linear.alphas_cumprod[t].double()
    assert abs(x_t.double().var(0).mean().item() - var.item()) > 6 * var.item() * math.sqrt(2 / (n - 1))


# ---- determinism ----


def test_noise_chain_is_deterministic_under_a_fixed_generator():
    s, x0 = make_schedule("cosine", num_steps=100), load_photo(8)
    a = s.noise_chain(x0, 99, generator=torch.Generator().manual_seed(7))
    b = s.noise_chain(x0, 99, generator=torch.Generator().manual_seed(7))
    c = s.noise_chain(x0, 99, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_schedules_are_deterministic():
    for kind in KINDS:
        assert torch.equal(make_schedule(kind).alphas_cumprod, make_schedule(kind).alphas_cumprod)


# ---- bad input: ValueError naming the argument and what is allowed ----


def test_unknown_kind_lists_the_kinds():
    for call in (lambda: make_schedule("quadratic"), lambda: to_diffusers_config("quadratic")):
        with pytest.raises(ValueError, match="kind") as info:
            call()
        assert all(kind in str(info.value) for kind in KINDS)
        assert "quadratic" in str(info.value)


@pytest.mark.parametrize("num_steps", [1, 0, -5, 2.5, True, "1000"])
def test_num_steps_below_two_or_not_an_int(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule("linear", num_steps=num_steps)


@pytest.mark.parametrize("t", [-1, 1000, [0, 1000], 3.0])
def test_t_outside_the_range(t):
    s, x0 = make_schedule("linear"), torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\bt\b"):
        s.add_noise(x0, torch.zeros_like(x0), torch.tensor(t))
    if isinstance(t, int):
        with pytest.raises(ValueError, match=r"\bt\b.*\[0, 1000\)"):
            s.q_step(x0, t, torch.zeros_like(x0))
        with pytest.raises(ValueError, match=r"\bt\b.*\[0, 1000\)"):
            s.noise_chain(x0, t)


def test_t_with_the_wrong_count():
    s, x0 = make_schedule("linear"), torch.zeros(3, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\bt\b.*batch"):
        s.add_noise(x0, torch.zeros_like(x0), torch.tensor([1, 2]))


def test_noise_shape_mismatch():
    s, x0 = make_schedule("linear"), torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="noise") as info:
        s.add_noise(x0, torch.zeros(2, 3, 4, 5), torch.tensor([1, 2]))
    assert "(2, 3, 4, 4)" in str(info.value)
    with pytest.raises(ValueError, match="noise"):
        s.q_step(x0, 5, torch.zeros(3, 4, 4))


def test_non_floating_image():
    s = make_schedule("linear")
    x0 = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="x0.*floating"):
        s.add_noise(x0, torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="x_prev.*floating"):
        s.q_step(x0, 1, torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="x0.*floating"):
        s.add_noise(x0.numpy(), torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]))
