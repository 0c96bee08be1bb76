"""The reverse process (lesson 04): DDPM and DDIM steps and the sample loop against diffusers' schedulers.

The references are diffusers' DDPMScheduler(clip_sample=False).step and DDIMScheduler(set_alpha_to_one=True,
clip_sample=False).step given the same noise. In float64 they agree to rounding; in float32 diffusers computes
1 - alpha_bar in float32, which loses digits when alpha_bar is near 1 (small t), so float32 checks use t >= 50.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from diffusion_lessons.models import TinyUNet, predict_eps
from diffusion_lessons.sampling import (SPACINGS, as_schedule, ddim_step, ddpm_step, eps_from_v, eps_from_x0,
                                        sample, sample_loop, sampling_timesteps, v_from_x0_eps, x0_from_eps,
                                        x0_from_v)
from diffusion_lessons.schedules import make_schedule, to_diffusers_config

KINDS = ("linear", "cosine")
T_VALUES = (0, 1, 10, 250, 500, 998, 999)


def tensors(dtype=torch.float64, seed=0, shape=(3, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(3)]  # x_t, eps, noise


def ddpm_ref(kind, dtype, steps=None, spacing="leading"):
    ref = DDPMScheduler(**to_diffusers_config(kind), clip_sample=False, timestep_spacing=spacing)
    ref.alphas_cumprod = ref.alphas_cumprod.to(dtype)
    if steps:
        ref.set_timesteps(steps)
    return ref


def ddim_ref(kind, dtype, steps, spacing="leading"):
    ref = DDIMScheduler(**to_diffusers_config(kind), clip_sample=False, set_alpha_to_one=True,
                        timestep_spacing=spacing)
    ref.alphas_cumprod = ref.alphas_cumprod.to(dtype)
    ref.set_timesteps(steps)
    return ref


def small_unet(seed: int = 0) -> UNet2DModel:
    """A class-conditional UNet2DModel like the digits one, narrower, so the tests run fast."""
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=11, norm_num_groups=8).eval()


@pytest.fixture(scope="module")
def unet():
    return small_unet()


# ---- one step against diffusers ----


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", T_VALUES)
def test_ddpm_step_matches_diffusers_float64(kind, t):
    x_t, eps, _ = tensors()
    ref = ddpm_ref(kind, torch.float64).step(eps, t, x_t, generator=torch.Generator().manual_seed(5))
    ours = ddpm_step(make_schedule(kind), x_t, eps, t, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours.x_prev, ref.prev_sample, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.x0, ref.pred_original_sample, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", (50, 500, 999))
def test_ddpm_step_matches_diffusers_float32_with_given_noise(kind, t):
    x_t, eps, noise = tensors(torch.float32)
    ref_scheduler = ddpm_ref(kind, torch.float32)
    ref = ref_scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    same_noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    ours = ddpm_step(make_schedule(kind), x_t, eps, t, noise=same_noise).x_prev
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_ddpm_step_adds_no_noise_at_t0():
    x_t, eps, noise = tensors()
    s = make_schedule("linear")
    a = ddpm_step(s, x_t, eps, 0, noise=noise).x_prev
    b = ddpm_step(s, x_t, eps, 0, noise=-noise).x_prev
    assert torch.equal(a, b)
    torch.testing.assert_close(a, x0_from_eps(s, x_t, eps, 0))  # the last step returns x0_hat


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spacing", ("leading", "trailing"))
def test_respaced_ddpm_step_matches_diffusers_and_ddim_eta1(kind, spacing):
    x_t, eps, noise = tensors()
    ref = ddpm_ref(kind, torch.float64, steps=10, spacing=spacing)
    s = make_schedule(kind)
    ts = sampling_timesteps(s, 10, spacing)
    assert ts == ref.timesteps.tolist()
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        ours = ddpm_step(s, x_t, eps, t, generator=torch.Generator().manual_seed(t), t_prev=t_prev).x_prev
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)
        # DDIM with eta = 1 is the same ancestral step (Song et al. 2021)
        ddim = ddim_step(s, x_t, eps, t, t_prev, eta=1.0, noise=noise).x_prev
        ddpm = ddpm_step(s, x_t, eps, t, noise=noise, t_prev=t_prev).x_prev
        torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eta", (0.0, 0.5))
@pytest.mark.parametrize("steps", (10, 50))
def test_ddim_step_matches_diffusers(kind, eta, steps):
    x_t, eps, noise = tensors()
    ref = ddim_ref(kind, torch.float64, steps)
    s = make_schedule(kind)
    for t in ref.timesteps[[0, 1, steps // 2, -1]].tolist():  # includes the last step (t_prev < 0)
        expected = ref.step(eps, t, x_t, eta=eta, variance_noise=noise if eta else None)
        ours = ddim_step(s, x_t, eps, t, t - 1000 // steps, eta=eta, noise=noise)
        torch.testing.assert_close(ours.x_prev, expected.prev_sample, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ours.x0, expected.pred_original_sample, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", (0.0, 0.5))
def test_ddim_step_float32_and_generator_match_diffusers(eta):
    x_t, eps, _ = tensors(torch.float32)
    ref = ddim_ref("cosine", torch.float32, 20)
    expected = ref.step(eps, 500, x_t, eta=eta, generator=torch.Generator().manual_seed(3)).prev_sample
    ours = ddim_step(make_schedule("cosine"), x_t, eps, 500, 450, eta=eta,
                     generator=torch.Generator().manual_seed(3)).x_prev
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_ddim_eta1_over_all_steps_is_the_ddpm_step():
    x_t, eps, noise = tensors()
    s = make_schedule("linear")
    for t in (1, 10, 500, 999):
        torch.testing.assert_close(ddim_step(s, x_t, eps, t, t - 1, eta=1.0, noise=noise).x_prev,
                                   ddpm_step(s, x_t, eps, t, noise=noise).x_prev, rtol=1e-9, atol=1e-9)


def test_ddim_eta0_is_deterministic_and_inverts_the_closed_form():
    s = make_schedule("cosine")
    x0, eps, _ = tensors()
    x_t = s.add_noise(x0, eps, torch.tensor([600]))
    step = ddim_step(s, x_t, eps, 600, 300)  # with the true eps, DDIM lands on the closed form at t = 300
    torch.testing.assert_close(step.x0, x0)
    torch.testing.assert_close(step.x_prev, s.add_noise(x0, eps, torch.tensor([300])))


# ---- converting eps <-> x0 <-> v ----


@pytest.mark.parametrize("kind", KINDS)
def test_conversions_round_trip_and_match_diffusers(kind):
    s = make_schedule(kind)
    x0, eps, _ = tensors()
    t = torch.tensor([5, 400, 990])  # one t per sample
    x_t = s.add_noise(x0, eps, t)
    torch.testing.assert_close(x0_from_eps(s, x_t, eps, t), x0)
    torch.testing.assert_close(eps_from_x0(s, x_t, x0, t), eps)
    v = v_from_x0_eps(s, x0, eps, t)
    ref = DDPMScheduler(**to_diffusers_config(kind))
    torch.testing.assert_close(v, ref.get_velocity(x0, eps, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x0_from_v(s, x_t, v, t), x0)
    torch.testing.assert_close(eps_from_v(s, x_t, v, t), eps)


def test_x0_from_v_matches_diffusers_v_prediction_step():
    x_t, v, _ = tensors()
    ref = DDIMScheduler(**to_diffusers_config("cosine"), prediction_type="v_prediction", clip_sample=False)
    ref.alphas_cumprod = ref.alphas_cumprod.double()
    ref.set_timesteps(10)
    out = ref.step(v, 700, x_t)
    torch.testing.assert_close(x0_from_v(make_schedule("cosine"), x_t, v, 700), out.pred_original_sample)


# ---- timesteps and the loop ----


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", (1, 7, 10, 50, 1000))
def test_sampling_timesteps_match_diffusers(spacing, steps):
    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    assert sampling_timesteps(make_schedule("linear"), steps, spacing) == ref.timesteps.tolist()


def test_papers_spacing_examples():
    s = make_schedule("linear")
    assert sampling_timesteps(s, 10, "leading") == list(range(900, -1, -100))
    assert sampling_timesteps(s, 10, "trailing") == list(range(999, 98, -100))
    assert sampling_timesteps(s, 10, "linspace")[:2] == [999, 888]


def test_as_schedule_reads_a_diffusers_scheduler():
    s = as_schedule(DDIMScheduler(**to_diffusers_config("cosine")))
    torch.testing.assert_close(s.alphas_cumprod, make_schedule("cosine").alphas_cumprod)


@pytest.mark.parametrize("sampler, eta", [("ddim", None), ("ddim", 0.5), ("ddpm", None)])
def test_sample_loop_matches_a_diffusers_scheduler_loop(sampler, eta):
    """The six-line loop of diffusers' pipelines, with the same starting noise and generator."""
    torch.manual_seed(1)
    model = TinyUNet(channels=(8, 16)).double().eval()  # small: float64 convolutions are slow on a CPU
    labels = torch.tensor([0, 3, 7])
    if sampler == "ddim":
        ref = ddim_ref("cosine", torch.float64, 8)
    else:
        ref = ddpm_ref("cosine", torch.float64, steps=8)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64)
    x_T = x.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            eps = predict_eps(model, x, t, labels)
            x = ref.step(eps, t, x, generator=g, **({"eta": eta} if eta is not None else {})).prev_sample
    g_ours = torch.Generator().manual_seed(11)
    torch.randn(3, 1, 16, 16, generator=g_ours, dtype=torch.float64)  # the draw of x_T, given below instead
    ours = sample(model, make_schedule("cosine"), labels, steps=8, sampler=sampler, eta=eta, x_T=x_T,
                  generator=g_ours, progress=False)
    torch.testing.assert_close(ours, x, rtol=1e-8, atol=1e-8)


def test_sample_loop_yields_every_state(unet):
    states = list(sample_loop(unet, make_schedule("cosine"), [1, 2], steps=5, progress=False,
                              generator=torch.Generator().manual_seed(0)))
    assert [s.t for s in states] == [800, 600, 400, 200, 0, -1]
    assert [s.i for s in states] == list(range(6))
    assert all(s.x_t.shape == (2, 1, 16, 16) and s.x0.shape == (2, 1, 16, 16) for s in states)
    assert torch.equal(states[-1].x_t, states[-1].x0)
    assert not torch.equal(states[0].x_t, states[1].x_t)


@pytest.mark.parametrize("sampler, eta", [("ddim", None), ("ddim", 1.0), ("ddpm", None)])
def test_sampling_is_deterministic_under_a_generator(unet, sampler, eta):
    s = make_schedule("cosine")
    run = lambda seed: sample(unet, s, [4, 5], steps=4, sampler=sampler, eta=eta, progress=False,  # noqa: E731
                              generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_unconditional_sampling_and_one_label_for_many(unet):
    s = make_schedule("cosine")
    assert sample(unet, s, num_samples=3, steps=2, progress=False).shape == (3, 1, 16, 16)
    assert sample(unet, s, 7, num_samples=4, steps=2, progress=False).shape == (4, 1, 16, 16)


# ---- bad input ----


def test_step_bad_inputs_name_the_argument():
    s = make_schedule("linear")
    x_t, eps, noise = tensors()
    cases = [
        (lambda: ddim_step(s, x_t, eps, 500, 600), "t_prev"),
        (lambda: ddim_step(s, x_t, eps, 500, 500), "t_prev"),
        (lambda: ddim_step(s, x_t, eps, 500, 400, eta=-0.1), "eta"),
        (lambda: ddim_step(s, x_t, eps[:2], 500, 400), "eps"),
        (lambda: ddim_step(s, x_t, eps, 500, 400, eta=0.5, noise=noise[:, :, :4]), "noise"),
        (lambda: ddim_step(s, x_t, eps, 1000, 400), "t"),
        (lambda: ddpm_step(s, x_t, eps, 10, t_prev=10), "t_prev"),
        (lambda: ddpm_step(s, x_t, eps, -1), "t"),
        (lambda: ddpm_step(s, x_t, eps, 10.0), "t"),
        (lambda: ddpm_step(s, x_t, eps[..., :4], 10), "eps"),
    ]
    for call, name in cases:
        with pytest.raises((ValueError, TypeError), match=name):
            call()


def test_sample_loop_bad_inputs_raise_before_iterating(unet):
    s = make_schedule("cosine")
    cases = [
        (dict(sampler="euler"), "sampler"),
        (dict(steps=0), "steps"),
        (dict(steps=1001), "steps"),
        (dict(eta=-1.0), "eta"),
        (dict(sampler="ddpm", eta=0.5), "eta"),
        (dict(spacing="random"), "spacing"),
        (dict(x_T=torch.zeros(2, 1, 8, 8)), "x_T"),
        (dict(num_samples=3), "num_samples"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(negative_label=1), "negative_label"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            sample_loop(unet, s, [1, 2], **kwargs)  # no next(): the checks run at the call
    with pytest.raises(ValueError, match="labels"):
        sample_loop(unet, s, [1, 10])
    with pytest.raises(ValueError, match="labels"):
        sample_loop(unet, s, None, num_samples=2, guidance_scale=3.0)
    with pytest.raises(ValueError, match="schedule"):
        sample_loop(unet, "cosine", [1])
