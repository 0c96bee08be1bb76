"""Flow matching (flow.py) and noise-level ladders (sigmas.py) against the formulas and against diffusers:
FlowMatchEulerDiscreteScheduler (step, sigmas, timesteps, shift, scale_noise), EulerDiscreteScheduler with Karras
sigmas, SD3's logit-normal draw (training_utils), DDIMScheduler (a DDIM step is a flow Euler step); bad inputs;
determinism; the plain-diffusers sampling of a flow UNet2DModel; a 2-step run of the digits-flow recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel
from diffusers.training_utils import compute_density_for_timestep_sampling

import diffusion_lessons
from diffusion_lessons import flow, train
from diffusion_lessons.loop import unet_denoiser
from diffusion_lessons.recipes import digits_flow
from diffusion_lessons.samplers import ddim_step
from diffusion_lessons.schedules import make_schedule
from diffusion_lessons.sigmas import draw_sigmas, flow_sigmas, karras_sigmas, timestep_shift


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- the public contract ---------------------------------------------------------------------------------------

def test_public_names_are_exported_from_the_package():
    assert diffusion_lessons.flow_euler_step is flow.flow_euler_step
    assert diffusion_lessons.karras_sigmas is karras_sigmas


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 2, 7, 28])
def test_flow_euler_step_equals_flow_match_euler_discrete_scheduler_step(shift, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    x = ours = randn(2, 1, 4, 4)
    for i, t in enumerate(scheduler.timesteps):
        v = randn(2, 1, 4, 4, seed=i + 1)
        x = scheduler.step(v, t, x).prev_sample
        ours = flow.flow_euler_step(ours, v, scheduler.sigmas[i], scheduler.sigmas[i + 1])
        assert torch.equal(ours, x), i
    # numbers work as well as the scheduler's 0-d tensors; the formula written out
    sigma, sigma_next = float(scheduler.sigmas[0]), float(scheduler.sigmas[1])
    x_t, v = randn(3, 2), randn(3, 2, seed=9)
    assert torch.allclose(flow.flow_euler_step(x_t, v, sigma, sigma_next), x_t + (sigma_next - sigma) * v, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)])
@pytest.mark.parametrize("steps", [2, 10, 25, 50])
def test_karras_sigmas_equal_euler_discrete_scheduler_with_karras_sigmas(kwargs, steps):
    scheduler = EulerDiscreteScheduler(use_karras_sigmas=True, **kwargs)
    scheduler.set_timesteps(steps)
    abar = scheduler.alphas_cumprod
    ve = ((1 - abar) / abar) ** 0.5            # the variance-exploding sigmas, computed as diffusers does (float32)
    ours = karras_sigmas(steps, ve[0].item(), ve[-1].item())
    assert torch.equal(ours, scheduler.sigmas[:-1])
    assert scheduler.sigmas[-1] == 0 and ours.dtype == torch.float32


def test_karras_sigmas_follow_the_paper_formula():
    n, lo, hi, rho = 6, 0.002, 80.0, 3.0
    want = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]
    got = karras_sigmas(n, lo, hi, rho)
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert got[0] == pytest.approx(hi) and got[-1] == pytest.approx(lo) and bool((got[1:] < got[:-1]).all())
    assert karras_sigmas(1, lo, hi).tolist() == pytest.approx([hi])


@pytest.mark.parametrize("call, name", [
    (lambda: karras_sigmas(0, 0.1, 10.0), "num_steps"),
    (lambda: karras_sigmas(2.5, 0.1, 10.0), "num_steps"),
    (lambda: karras_sigmas(True, 0.1, 10.0), "num_steps"),
    (lambda: karras_sigmas(5, 10.0, 10.0), "sigma_min"),
    (lambda: karras_sigmas(5, 11.0, 10.0), "sigma_min"),
    (lambda: karras_sigmas(5, -1.0, 10.0), "sigma_min"),
    (lambda: karras_sigmas(5, 0.1, float("inf")), "sigma_max"),
    (lambda: karras_sigmas(5, 0.1, 10.0, rho=0.0), "rho"),
    (lambda: karras_sigmas(5, 0.1, 10.0, rho=-7.0), "rho"),
    (lambda: flow.flow_euler_step(randn(2, 3), randn(2, 3), 0.5, 0.6), "sigma_next"),
    (lambda: flow.flow_euler_step(randn(2, 3), randn(3, 2), 0.5, 0.4), "velocity"),
    (lambda: flow.flow_euler_step(randn(2, 3), randn(2, 3), -0.1, -0.2), "sigma"),
    (lambda: flow.flow_euler_step(randn(2, 3), randn(2, 3), torch.tensor([0.5, 0.4]), 0.1), "sigma"),
    (lambda: flow.flow_euler_step([1.0], randn(1), 0.5, 0.4), "x_t"),
    (lambda: flow_sigmas(0), "num_steps"),
    (lambda: flow_sigmas(4, spacing="leading"), "spacing"),
    (lambda: timestep_shift(0.5, 0.0), "shift"),
    (lambda: draw_sigmas(4, kind="beta"), "kind"),
    (lambda: draw_sigmas(4, kind="logit_normal", s=0.0), "s"),
    (lambda: draw_sigmas(0), "n"),
    (lambda: flow.interpolate(randn(2, 3), randn(2, 4), 0.5), "noise"),
    (lambda: flow.interpolate(randn(2, 3), randn(2, 3), torch.rand(3)), "sigma"),
    (lambda: flow.flow_batch_fn(randn(4, 2), 0), "batch_size"),
    (lambda: flow.flow_batch_fn(randn(4, 2), 2, labels=torch.zeros(3, dtype=torch.long)), "labels"),
])
def test_bad_inputs_raise_value_errors_that_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ---- ladders and draws -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
@pytest.mark.parametrize("steps", [1, 2, 5, 50])
def test_flow_sigmas_are_the_schedulers(shift, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    assert torch.equal(flow_sigmas(steps, shift), scheduler.sigmas)
    assert torch.equal(flow_sigmas(steps, shift)[:-1] * 1000, scheduler.timesteps)  # timestep = 1000 sigma
    even = FlowMatchEulerDiscreteScheduler(shift=shift)
    even.set_timesteps(sigmas=[1 - i / steps for i in range(steps)])
    assert torch.equal(flow_sigmas(steps, shift, "uniform"), even.sigmas)


def test_diffusers_default_ladder_ends_with_a_tiny_step():
    assert flow_sigmas(2).tolist() == pytest.approx([1.0, 0.001, 0.0])       # two steps act almost as one
    assert flow_sigmas(2, spacing="uniform").tolist() == [1.0, 0.5, 0.0]


def test_timestep_shift_is_the_schedulers_and_keeps_the_ends():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    plain = torch.linspace(1, 1000, 1000).flip(0) / 1000
    assert torch.allclose(timestep_shift(plain, 3.0), scheduler.sigmas, atol=1e-7)
    assert timestep_shift(0.0, 3.0) == 0 and timestep_shift(1.0, 3.0) == 1
    assert timestep_shift(0.5, 3.0) == pytest.approx(0.75) and timestep_shift(0.5, 1.0) == 0.5


def test_logit_normal_draw_is_sd3s_as_diffusers_draws_it():
    for m, s in ((0.0, 1.0), (0.5, 0.7)):
        ours = draw_sigmas(64, torch.Generator().manual_seed(3), "logit_normal", m=m, s=s)
        theirs = compute_density_for_timestep_sampling("logit_normal", 64, logit_mean=m, logit_std=s,
                                                       generator=torch.Generator().manual_seed(3))
        assert torch.equal(ours, theirs)
    uniform = draw_sigmas(64, torch.Generator().manual_seed(3))
    assert torch.equal(uniform, torch.rand(64, generator=torch.Generator().manual_seed(3)))
    shifted = draw_sigmas(64, torch.Generator().manual_seed(3), shift=3.0)
    assert torch.allclose(shifted, timestep_shift(uniform, 3.0))


def test_logit_normal_puts_more_draws_in_the_middle():
    many = draw_sigmas(100_000, torch.Generator().manual_seed(0), "logit_normal")
    middle = ((many > 0.25) & (many < 0.75)).float().mean().item()
    # P(|N(0, 1)| < logit(0.75) = 1.0986) = 0.7275; uniform would give 0.5
    assert middle == pytest.approx(0.7275, abs=0.005)


# ---- the straight line, the loss and the batches ---------------------------------------------------------------

def test_interpolation_and_target_follow_the_formulas_and_diffusers_scale_noise():
    x0, noise = randn(3, 1, 4, 4), randn(3, 1, 4, 4, seed=1)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    x_t = flow.interpolate(x0, noise, sigma)
    assert torch.allclose(x_t, (1 - sigma)[:, None, None, None] * x0 + sigma[:, None, None, None] * noise)
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[2], noise[2])
    assert torch.equal(flow.velocity_target(x0, noise), noise - x0)
    # d x_sigma / d sigma is the target: a finite difference along the line
    h = 1e-3
    slope = (flow.interpolate(x0, noise, 0.5 + h) - flow.interpolate(x0, noise, 0.5 - h)) / (2 * h)
    assert torch.allclose(slope, noise - x0, atol=1e-3)
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[3:4]
    assert torch.allclose(scheduler.scale_noise(x0[:1], t, noise[:1]),
                          flow.interpolate(x0[:1], noise[:1], scheduler.sigmas[3]), atol=1e-6)


def test_x0_and_noise_from_velocity_invert_the_line():
    x0, noise = randn(2, 5), randn(2, 5, seed=1)
    x_t = flow.interpolate(x0, noise, 0.37)
    v = flow.velocity_target(x0, noise)
    assert torch.allclose(flow.x0_from_velocity(x_t, v, 0.37), x0, atol=1e-6)
    assert torch.allclose(flow.noise_from_velocity(x_t, v, 0.37), noise, atol=1e-6)


def test_flow_matching_loss_is_the_mse_against_noise_minus_x0():
    x0, noise, sigma = randn(4, 3), randn(4, 3, seed=1), torch.tensor([0.1, 0.4, 0.7, 1.0])
    labels = torch.tensor([0, 1, 2, 10])
    seen = {}

    def denoise(x, t, cond):
        seen.update(x=x, t=t, cond=cond)
        return 0.5 * x + t[:, None] / 1000

    loss = flow.flow_matching_loss(denoise, x0, noise, sigma, labels)
    x_t = (1 - sigma[:, None]) * x0 + sigma[:, None] * noise
    want = ((0.5 * x_t + sigma[:, None] - (noise - x0)) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.allclose(seen["t"], 1000 * sigma) and torch.equal(seen["cond"], labels)


def test_a_fixed_generator_gives_the_same_batches_and_label_dropout_uses_the_null_label():
    x0, labels = randn(50, 1, 2, 2), torch.arange(50) % 10
    batch_fn = flow.flow_batch_fn(x0, 16, labels, p_uncond=0.5)
    a, b = batch_fn(torch.Generator().manual_seed(5)), batch_fn(torch.Generator().manual_seed(5))
    for key in ("x0", "noise", "sigma", "labels"):
        assert torch.equal(a[key], b[key]), key
    c = batch_fn(torch.Generator().manual_seed(6))
    assert not torch.equal(a["noise"], c["noise"])
    assert set(a["labels"].tolist()) <= set(range(11)) and (a["labels"] == 10).any()
    # reflow: the paired noise travels with its row
    paired = randn(50, 1, 2, 2, seed=7)
    batch = flow.flow_batch_fn(x0, 8, noise=paired)(torch.Generator().manual_seed(1))
    rows = [int(((x0 - r).abs().sum((1, 2, 3)) == 0).nonzero()[0]) for r in batch["x0"]]
    assert torch.equal(batch["noise"], paired[rows]) and batch["labels"] is None


# ---- Part I in flow coordinates ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t, t_prev", [(999, 979), (500, 480), (300, 0), (20, -1)])
def test_a_ddim_step_is_a_flow_euler_step_on_the_rescaled_state(t, t_prev):
    """ddim_step (itself checked against DDIMScheduler.step in test_sampling) = Euler on the straight line."""
    schedule = make_schedule("cosine")
    x_t, eps = randn(2, 1, 4, 4), randn(2, 1, 4, 4, seed=1)
    abar_t = schedule.alphas_cumprod[t].double()
    abar_prev = schedule.alphas_cumprod[t_prev].double() if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
    ddim = ddim_step(schedule, x_t.double(), eps.double(), t, t_prev).x_prev
    x0_hat = (x_t.double() - (1 - abar_t).sqrt() * eps.double()) / abar_t.sqrt()
    sigma, sigma_prev = flow.flow_sigma_from_alpha_bar(abar_t), flow.flow_sigma_from_alpha_bar(abar_prev)
    y = flow.to_flow_state(x_t.double(), abar_t)
    y_next = flow.flow_euler_step(y, eps.double() - x0_hat, sigma, sigma_prev)
    back = y_next * (abar_prev.sqrt() + (1 - abar_prev).sqrt())
    # the Euler step's sigmas are rounded to float32 as diffusers rounds them: agreement to that precision
    assert torch.allclose(back, ddim, atol=2e-5 * max(1.0, float(x0_hat.abs().max())))
    assert flow.alpha_bar_from_flow_sigma(sigma).item() == pytest.approx(abar_t.item(), rel=1e-9)


# ---- sampling ------------------------------------------------------------------------------------------------------

def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=11).eval()


@pytest.mark.parametrize("guidance_scale", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_plain_diffusers_sampling_equals_the_packages_loop(guidance_scale, shift):
    unet, labels = tiny_unet(), torch.tensor([0, 3, 9, 1])
    theirs = flow.sample_with_flow_scheduler(unet, FlowMatchEulerDiscreteScheduler(shift=shift), labels, 5,
                                             guidance_scale, generator=torch.Generator().manual_seed(1))
    ours = flow.flow_sample(unet, labels, 5, guidance_scale, shift=shift, generator=torch.Generator().manual_seed(1))
    assert theirs.shape == (4, 1, 8, 8) and torch.allclose(theirs, ours, atol=1e-6)
    even = flow.sample_with_flow_scheduler(unet, FlowMatchEulerDiscreteScheduler(shift=shift), labels,
                                           guidance_scale=guidance_scale, sigmas=[1.0, 0.5],
                                           generator=torch.Generator().manual_seed(1))
    ours = flow.flow_sample(unet, labels, 2, guidance_scale, shift=shift, spacing="uniform",
                            generator=torch.Generator().manual_seed(1))
    assert torch.allclose(even, ours, atol=1e-6)


def test_sampling_is_deterministic_under_a_fixed_generator():
    unet, labels = tiny_unet(), torch.tensor([2, 5])
    scheduler = FlowMatchEulerDiscreteScheduler()
    a = flow.sample_with_flow_scheduler(unet, scheduler, labels, 3, 2.0, generator=torch.Generator().manual_seed(4))
    b = flow.sample_with_flow_scheduler(unet, scheduler, labels, 3, 2.0, generator=torch.Generator().manual_seed(4))
    c = flow.sample_with_flow_scheduler(unet, scheduler, labels, 3, 2.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flow_loop_yields_every_state_with_its_clean_guess():
    x_T = randn(3, 2)
    states = list(flow.flow_loop(lambda x, t, c: x * 0 + t / 1000, x_T, sigmas=flow_sigmas(4, spacing="uniform"),
                                 progress=False))
    assert [s.sigma for s in states] == [1.0, 0.75, 0.5, 0.25, 0.0] and states[-1].velocity is None
    for s in states[:-1]:
        assert torch.allclose(s.x0, s.x_t - s.sigma * s.velocity)
    with pytest.raises(ValueError, match="sigmas"):
        flow.flow_loop(lambda x, t, c: x, x_T, sigmas=[0.5, 1.0])
    with pytest.raises(ValueError, match="cond"):
        flow.flow_loop(lambda x, t, c: x, x_T, torch.zeros(2), sigmas=[1.0, 0.0])


def test_unet_denoiser_takes_the_float_timesteps_of_the_flow_convention():
    unet = tiny_unet()
    denoise = unet_denoiser(unet, "class_labels")
    x = randn(2, 1, 8, 8)
    with torch.no_grad():
        a = denoise(x, torch.tensor([500.0, 500.0]), torch.tensor([1, 2]))
        b = denoise(x, torch.tensor(500.0), torch.tensor([1, 2]))
    assert torch.allclose(a, b, atol=1e-6)


# ---- the digits-flow recipe ----------------------------------------------------------------------------------------

def test_digits_flow_is_a_registered_recipe():
    assert train.RECIPES["digits-flow"] == "digits_flow"


def test_recipe_two_steps_saves_a_model_that_plain_diffusers_loads_and_samples(tmp_path):
    out = tmp_path / "tmp"
    record = digits_flow.main(["--steps", "2", "--skip-eval", "--out", str(out), "--profile", "quick",
                               "--batch-size", "8"])
    unet = UNet2DModel.from_pretrained(out / "unet", use_safetensors=True, local_files_only=True)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(out / "scheduler", local_files_only=True)
    assert unet.config.num_class_embeds == 11 and scheduler.config.shift == 1.0
    images = flow.sample_with_flow_scheduler(unet, scheduler, [3, 7], 2, 3.0,
                                             generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
    saved = json.loads((out / "recipe.json").read_text())
    assert saved == json.loads(json.dumps(record, default=str))
    assert saved["model"] == "digits-flow" and saved["steps"] == 2 and saved["quality"] is None
    assert saved["objective"]["sigma_sampler"] == "uniform" and saved["objective"]["timestep"] == "1000 sigma"
    assert saved["p_uncond"] == 0.15 and saved["ema_max_decay"] == 0.999 and saved["lr"] == 2e-3
    assert (out / "manifest.json").is_file()


def test_recipe_measures_each_setting_with_intervals(tmp_path, monkeypatch):
    monkeypatch.setitem(digits_flow.EVAL, "settings", ((2, 3.0, "diffusers"), (2, 3.0, "uniform")))
    out = tmp_path / "run"
    digits_flow.main(["--steps", "2", "--eval-per-label", "2", "--out", str(out), "--profile", "quick",
                      "--batch-size", "8", "--sigma-sampler", "logit_normal"])
    saved = json.loads((out / "recipe.json").read_text())
    assert set(saved["quality"]["settings"]) == {"steps_2/guidance_3/diffusers", "steps_2/guidance_3/uniform"}
    for row in saved["quality"]["settings"].values():
        assert set(row) == {"fidelity", "rough", "diversity", "pixel_diversity"}
        assert all(set(v) == {"value", "low", "high", "n"} and v["n"] == 20 for v in row.values())
    assert saved["objective"]["sigma_sampler"] == "logit_normal" and "--sigma-sampler logit_normal" in saved["command"]
    again = digits_flow.main(["--evaluate-only", "--eval-per-label", "2", "--out", str(out)])
    assert again["quality"]["settings"] == saved["quality"]["settings"]   # same weights, same seed: same numbers


# ---- lesson 08's coding exercises (exercise_bank/lesson08.py) ------------------------------------------------------

def test_lesson08_exercises_pass_their_references_fail_wrong_answers_and_agree_with_the_package(capsys):
    from diffusion_lessons.exercise_bank.lesson08 import EXERCISES

    found = {ex.name: ex for ex in EXERCISES}
    assert set(found) == {"flow-matching pair", "timestep shift", "DDIM step as an Euler step"}
    for ex in EXERCISES:
        assert ex.lesson == 8 and ex.check(ex.solution, verbose=False)
        assert not ex.check(lambda *args: None, verbose=False)
    assert not found["timestep shift"].check(lambda sigma, shift: shift * sigma, verbose=False)
    g = torch.Generator().manual_seed(0)
    x0, noise, sigma = found["flow-matching pair"].make_inputs(g)
    x_t, v = found["flow-matching pair"].solution(x0, noise, sigma)
    assert torch.allclose(x_t, flow.interpolate(x0, noise, sigma)) and torch.equal(v, flow.velocity_target(x0, noise))
    sigmas, shift = found["timestep shift"].make_inputs(g)
    assert torch.allclose(found["timestep shift"].solution(sigmas, shift), timestep_shift(sigmas, shift))
    schedule = make_schedule("cosine")
    for t, t_prev in ((700, 650), (40, -1)):
        x_t, eps = randn(2, 1, 4, 4).double(), randn(2, 1, 4, 4, seed=1).double()
        abar_t = float(schedule.alphas_cumprod[t])
        abar_prev = float(schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        got = found["DDIM step as an Euler step"].solution(x_t, eps, abar_t, abar_prev)
        assert torch.allclose(got, ddim_step(schedule, x_t, eps, t, t_prev).x_prev, atol=1e-9)


# ---- the digits-reflow recipe ---------------------------------------------------------------------------------------

def test_reflow_pairs_are_the_teachers_own_samples_of_their_noise():
    from diffusion_lessons.recipes import digits_reflow

    teacher = digits_flow.UNET.build(0).eval()
    noise, samples, labels = digits_reflow.make_pairs(teacher, digits_flow.make_scheduler(), 20, 3, seed=5,
                                                      progress=False)
    n_uncond = digits_reflow.unconditional_count(20)
    assert n_uncond == round(20 * 0.15 / 0.85) and len(labels) == 20 + n_uncond
    assert labels[:20].tolist() == [i % 10 for i in range(20)] and (labels[20:] == 10).all()
    assert torch.equal(noise, torch.randn(noise.shape, generator=torch.Generator().manual_seed(5)))
    again = flow.sample_with_flow_scheduler(teacher, digits_flow.make_scheduler(), labels[:4], x_T=noise[:4],
                                            sigmas=[1.0, 2 / 3, 1 / 3], guidance_scale=digits_reflow.GUIDANCE)
    # drawn at guidance 3 (atol: a batch of 20 and one of 4 take different guidance paths, guidance.py)
    assert digits_reflow.GUIDANCE == 3.0 and torch.allclose(samples[:4], again, atol=1e-5)
    _, plain, _ = digits_reflow.make_pairs(teacher, digits_flow.make_scheduler(), 20, 3, seed=5, progress=False,
                                           guidance=1.0)
    unguided = flow.sample_with_flow_scheduler(teacher, digits_flow.make_scheduler(), labels[:4], x_T=noise[:4],
                                               sigmas=[1.0, 2 / 3, 1 / 3], guidance_scale=1.0)
    assert torch.allclose(plain[:4], unguided, atol=1e-5) and not torch.allclose(plain[:4], samples[:4], atol=1e-3)
    unconditional = flow.sample_with_flow_scheduler(teacher, digits_flow.make_scheduler(), [0, 0], 2, 0.0,
                                                    x_T=noise[20:22], sigmas=[1.0, 2 / 3, 1 / 3])
    assert torch.allclose(samples[20:22], unconditional, atol=1e-6)   # the null label's flow


def test_guided_reflow_loss_is_taken_on_the_guided_velocity():
    from diffusion_lessons.recipes import digits_reflow

    model = digits_flow.UNET.build(0).eval()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 10, 7, 10])
    batch = dict(x0=torch.randn(4, 1, 16, 16, generator=g), noise=torch.randn(4, 1, 16, 16, generator=g),
                 sigma=torch.rand(4, generator=g), labels=labels)
    with torch.no_grad():
        x_t = flow.interpolate(batch["x0"], batch["noise"], batch["sigma"])
        t = batch["sigma"] * 1000
        v_label = model(x_t, t, class_labels=labels).sample
        v_null = model(x_t, t, class_labels=torch.full_like(labels, 10)).sample
        target = batch["noise"] - batch["x0"]
        for w in (3.0, 1.0):
            guided = torch.where((labels != 10)[:, None, None, None], v_null + w * (v_label - v_null), v_null)
            expected = ((guided - target) ** 2).mean()
            got = digits_reflow.guided_loss_fn(w)(model)(batch)
            assert torch.allclose(got, expected, rtol=1e-4), (w, got, expected)
        plain = flow.flow_matching_loss(unet_denoiser(model, "class_labels"), **batch)
        assert torch.allclose(digits_reflow.guided_loss_fn(1.0)(model)(batch), plain)
        assert not torch.allclose(digits_reflow.guided_loss_fn(3.0)(model)(batch), plain)


def test_reflow_recipe_starts_from_its_teacher_and_records_it(tmp_path):
    from diffusion_lessons.recipes import digits_reflow

    teacher = tmp_path / "teacher"
    digits_flow.main(["--steps", "2", "--skip-eval", "--out", str(teacher), "--profile", "quick", "--batch-size", "8"])
    out = tmp_path / "reflow"
    record = digits_reflow.main(["--steps", "2", "--pairs", "20", "--pair-steps", "2", "--skip-eval", "--out",
                                 str(out), "--profile", "quick", "--batch-size", "8", "--teacher", str(teacher)])
    assert record["model"] == "digits-reflow" and record["pairs"]["conditional"] == 20
    assert record["teacher"]["unet_sha256"] and record["lr"] == digits_reflow.LR
    assert f"--teacher {teacher}" in record["command"] and "--pairs 20" in record["command"]
    assert record["pairs"]["guidance"] == 3.0 and "w = 3" in record["loss"]
    unet = UNet2DModel.from_pretrained(out / "unet", use_safetensors=True, local_files_only=True)
    start = UNet2DModel.from_pretrained(teacher / "unet", use_safetensors=True, local_files_only=True)
    # two small steps from the teacher: close to it, not a fresh network
    diff = max((a - b).abs().max().item() for a, b in zip(unet.parameters(), start.parameters()))
    assert 0 < diff < 0.05
    with pytest.raises(SystemExit, match="holds no unet"):
        digits_reflow.main(["--steps", "2", "--skip-eval", "--out", str(tmp_path / "x"), "--teacher", str(tmp_path)])
