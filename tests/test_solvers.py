"""Lesson 09's solvers (diffusion_lessons.solvers) against diffusers: the schedulers make_solver builds keep the
shipped schedule, the loop counts model evaluations (Heun: two per step but one on the last), the sigma-form Euler
step and the Karras ladder equal diffusers', the DDIM solver equals the package's own loop, bad inputs raise
ValueError naming the argument; then lesson 09's coding exercises against diffusers and the measurement record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, UNet2DModel)

from diffusion_lessons import karras_sigmas, solvers
from diffusion_lessons.sampling import sample

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
               timestep_spacing="leading", steps_offset=0, beta_start=0.0001, beta_end=0.02)


def shipped_config():
    return DDIMScheduler(**SHIPPED, clip_sample=False, set_alpha_to_one=True)


def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=11).eval()


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- make_solver ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", solvers.SOLVER_NAMES)
def test_each_solver_keeps_the_shipped_schedule_and_prediction_type(name):
    reference = shipped_config()
    scheduler = solvers.make_solver(name, reference)
    assert isinstance(scheduler, solvers.SOLVERS[name])
    assert torch.allclose(scheduler.alphas_cumprod.double(), reference.alphas_cumprod.double(), rtol=1e-6)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.timestep_spacing == "leading"
    assert solvers.make_solver(name, reference.config, spacing="trailing").config.timestep_spacing == "trailing"


def test_dpm_solver_is_the_second_order_multistep_plus_plus_variant():
    dpm = solvers.make_solver("dpm++2m", shipped_config())
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2


@pytest.mark.parametrize("spacing, first", [("leading", 800), ("linspace", 999), ("trailing", 999)])
def test_spacings_say_where_the_first_step_starts(spacing, first):
    ddim = solvers.make_solver("ddim", shipped_config(), spacing=spacing)
    ddim.set_timesteps(5)
    assert int(ddim.timesteps[0]) == first


@pytest.mark.parametrize("name", ["euler", "heun", "dpm++2m", "unipc"])
@pytest.mark.parametrize("ladder", ["karras", "karras80"])
def test_karras_ladders_are_the_packages_karras_sigmas(name, ladder):
    scheduler = solvers.make_solver(name, shipped_config(), **solvers.LADDERS[ladder])
    scheduler.set_timesteps(6)
    sigmas = scheduler.sigmas.unique_consecutive() if name == "heun" else scheduler.sigmas
    abar = scheduler.alphas_cumprod.double()
    sigma_min = float(((1 - abar[0]) / abar[0]) ** 0.5)
    sigma_max = 80.0 if ladder == "karras80" else float(((1 - abar[-1]) / abar[-1]) ** 0.5)
    assert float(sigmas[-1]) == 0.0
    assert torch.allclose(sigmas[:-1].float(), karras_sigmas(6, sigma_min, sigma_max), rtol=1e-4)


def test_zero_snr_makes_the_last_alpha_bar_zero():
    ddim = solvers.make_solver("ddim", shipped_config(), zero_snr=True)
    assert float(ddim.alphas_cumprod[-1]) == 0.0
    assert float(solvers.make_solver("euler", shipped_config(), zero_snr=True).alphas_cumprod[-1]) == 2.0 ** -24


@pytest.mark.parametrize("call, name", [
    (lambda: solvers.make_solver("lms", shipped_config()), "name"),
    (lambda: solvers.make_solver("euler", {"beta_schedule": "linear"}), "config"),
    (lambda: solvers.make_solver("euler", shipped_config(), spacing="even"), "spacing"),
    (lambda: solvers.make_solver("ddim", shipped_config(), karras=True), "karras"),
    (lambda: solvers.make_solver("euler", shipped_config(), karras=1), "karras"),
    (lambda: solvers.make_solver("heun", shipped_config(), zero_snr=True), "zero_snr"),
    (lambda: solvers.make_solver("euler", shipped_config(), sigma_max=80.0), "sigma_max"),
    (lambda: solvers.make_solver("euler", shipped_config(), karras=True, sigma_max=-1.0), "sigma_max"),
    (lambda: solvers.steps_for_evaluations("euler", 0), "evaluations"),
    (lambda: solvers.steps_for_evaluations("rk4", 5), "name"),
    (lambda: solvers.sigma_euler_step(randn(2, 3), randn(3, 2), 1.0, 0.5), "x0_hat"),
    (lambda: solvers.sigma_euler_step(randn(2, 3), randn(2, 3), 0.0, 0.0), "sigma"),
    (lambda: solvers.sigma_euler_step(randn(2, 3), randn(2, 3), 1.0, 2.0), "sigma_next"),
    (lambda: solvers.sigma_euler_step(randn(2, 3), randn(2, 3), 1.0, "0"), "sigma_next"),
    (lambda: solvers.sample_with_solver(tiny_unet(), "euler", [1], num_steps=2), "scheduler"),
    (lambda: solvers.sample_with_solver(tiny_unet(), EulerDiscreteScheduler(), [1], num_steps=0), "num_steps"),
    (lambda: solvers.sample_with_solver(tiny_unet(), EulerDiscreteScheduler(), [1], num_steps=2,
                                        x_T=randn(2, 1, 8, 8)), "x_T"),
    (lambda: solvers.sample_with_solver(tiny_unet(), EulerDiscreteScheduler(), [11], num_steps=2), "labels"),
    (lambda: solvers.sample_with_solver(tiny_unet(), EulerDiscreteScheduler(), [1], num_steps=2,
                                        guidance_scale="3"), "guidance_scale"),
])
def test_bad_inputs_raise_value_errors_that_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ---- the steps: Euler in sigma form, Heun, against diffusers ------------------------------------------------------

@pytest.mark.parametrize("i", [0, 3, 9])
def test_sigma_euler_step_equals_euler_discrete_scheduler_step(i):
    euler = EulerDiscreteScheduler(**{**SHIPPED, "prediction_type": "sample"})   # model output = x0_hat
    euler.set_timesteps(10)
    x, x0_hat = randn(2, 1, 4, 4) * float(euler.sigmas[i]), randn(2, 1, 4, 4, seed=1)
    euler._step_index = i
    theirs = euler.step(x0_hat, euler.timesteps[i], x).prev_sample
    ours = solvers.sigma_euler_step(x, x0_hat, euler.sigmas[i], euler.sigmas[i + 1])
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_sigma_euler_step_is_a_ddim_step_on_the_rescaled_state():
    ddim = shipped_config()
    abar = ddim.alphas_cumprod.double()
    t, t_prev = 700, 450
    x_t, eps = randn(2, 1, 4, 4, dtype=torch.float64), randn(2, 1, 4, 4, seed=1, dtype=torch.float64)
    x0_hat = (x_t - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
    sigma, sigma_prev = ((1 - abar[t]) / abar[t]).sqrt(), ((1 - abar[t_prev]) / abar[t_prev]).sqrt()
    ddim_next = abar[t_prev].sqrt() * x0_hat + (1 - abar[t_prev]).sqrt() * eps
    euler_next = solvers.sigma_euler_step(x_t / abar[t].sqrt(), x0_hat, sigma, sigma_prev)
    assert torch.allclose(euler_next * abar[t_prev].sqrt(), ddim_next, atol=1e-10)


# ---- the loop ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", solvers.SOLVER_NAMES)
@pytest.mark.parametrize("budget", [1, 4, 7])
def test_the_loop_counts_model_evaluations_heun_two_per_step_but_one_on_the_last(name, budget):
    unet, calls = tiny_unet(), []
    unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    steps = solvers.steps_for_evaluations(name, budget)
    run = solvers.sample_with_solver(unet, solvers.make_solver(name, shipped_config(), spacing="trailing"), [3, 7],
                                     num_steps=steps, generator=torch.Generator().manual_seed(0))
    assert run.evaluations == len(calls) == len(run.timesteps) <= budget
    assert run.evaluations == (2 * steps - 1 if name == "heun" else steps)
    assert set(calls) == {4}                            # one batched pass of [cond; uncond] per evaluation
    assert run.images.shape == (2, 1, 8, 8) and torch.isfinite(run.images).all()


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_solver_equals_the_packages_own_loop(guidance_scale, spacing):
    # 5 steps divide T = 1000: then DDIMScheduler's previous timestep (t - T // N) is the next one in the list
    unet, labels, x_T = tiny_unet(), torch.tensor([0, 4, 9]), randn(3, 1, 8, 8, seed=2)
    config = shipped_config()
    theirs = solvers.sample_with_solver(unet, solvers.make_solver("ddim", config, spacing=spacing), labels,
                                        num_steps=5, guidance_scale=guidance_scale, x_T=x_T).images
    ours = sample(unet, config, labels, steps=5, spacing=spacing, guidance_scale=guidance_scale, x_T=x_T,
                  progress=False)
    assert torch.allclose(theirs, ours, atol=1e-5)


def test_duplicate_timesteps_of_a_karras_ladder_are_stepped_in_order():
    # at sigma >> 1 the Karras ladder of this schedule rounds several sigmas to timestep 998 (DPM-Solver's index)
    dpm = solvers.make_solver("dpm++2m", shipped_config(), **solvers.LADDERS["karras"])
    run = solvers.sample_with_solver(tiny_unet(), dpm, [1], num_steps=5, generator=torch.Generator().manual_seed(0))
    assert run.evaluations == 5 and len(set(run.timesteps)) < 5 and torch.isfinite(run.images).all()


def test_sampling_is_deterministic_under_a_fixed_generator():
    unet, scheduler = tiny_unet(), solvers.make_solver("unipc", shipped_config())
    a, b, c = (solvers.sample_with_solver(unet, scheduler, [2, 5], num_steps=3,
                                          generator=torch.Generator().manual_seed(s)).images for s in (4, 4, 5))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- lesson 09's coding exercises against diffusers ----------------------------------------------------------------

def exercise(name):
    from diffusion_lessons.exercise_bank.lesson09 import EXERCISES

    return next(ex for ex in EXERCISES if ex.name == name)


def test_karras_exercise_equals_the_package_and_euler_discrete_scheduler():
    ex = exercise("Karras ladder")
    euler = EulerDiscreteScheduler(**{**SHIPPED, "timestep_spacing": "linspace"}, use_karras_sigmas=True)
    euler.set_timesteps(12)
    lo, hi = float(euler.sigmas[-2]), float(euler.sigmas[0])
    assert torch.allclose(ex.solution(12, lo, hi, 7.0).float(), euler.sigmas[:-1], rtol=1e-4)
    assert torch.allclose(ex.solution(9, 0.01, 80.0, 5.0).float(), karras_sigmas(9, 0.01, 80.0, 5.0), rtol=1e-5)


def test_x0_from_v_exercise_equals_euler_discrete_schedulers_guess():
    ex = exercise("x0 from v in sigma form")
    euler = EulerDiscreteScheduler(**SHIPPED)
    euler.set_timesteps(10)
    for i in (0, 4, 8):
        sigma = float(euler.sigmas[i])
        x, v = randn(2, 1, 4, 4) * (1 + sigma ** 2) ** 0.5, randn(2, 1, 4, 4, seed=1)
        euler._step_index = i
        want = euler.step(v, euler.timesteps[i], x).pred_original_sample
        assert torch.allclose(ex.solution(x, v, sigma), want, rtol=1e-4, atol=1e-5)


def test_euler_exercise_equals_the_package():
    ex = exercise("Euler step in sigma form")
    args = ex.make_inputs(torch.Generator().manual_seed(0))
    assert torch.allclose(ex.solution(*args), solvers.sigma_euler_step(*args))


def test_heun_exercise_equals_heun_discrete_scheduler_two_stages():
    from diffusion_lessons.exercise_bank.lesson09 import GaussianDenoiser

    ex, denoise = exercise("Heun step"), GaussianDenoiser(0.5)
    heun = HeunDiscreteScheduler(**{**SHIPPED, "prediction_type": "sample", "timestep_spacing": "trailing"})
    heun.set_timesteps(4)
    heun.set_begin_index(0)
    heun.sigmas[0] = sigma = 5.0            # the first rung moved from sigma_max down to a moderate noise level
    sigma_next = float(heun.sigmas[1])
    x = randn(2, 1, 4, 4, dtype=torch.float64) * sigma
    first = heun.step(denoise(x, sigma), heun.timesteps[0], x).prev_sample              # the Euler stage
    theirs = heun.step(denoise(first, sigma_next), heun.timesteps[1], first).prev_sample  # the correction
    assert torch.allclose(ex.solution(x, sigma, sigma_next, denoise), theirs, rtol=1e-5, atol=1e-6)


def test_heun_is_exact_where_euler_is_not_for_gaussian_data():
    from diffusion_lessons.exercise_bank.lesson09 import GaussianDenoiser

    c, sigma, sigma_next = 0.5, 2.0, 1.8                             # a small step: Heun is second order
    denoise, x = GaussianDenoiser(c), randn(3, 1, 4, 4, dtype=torch.float64)
    exact = x * ((c + sigma_next ** 2) / (c + sigma ** 2)) ** 0.5    # the ODE's solution for Gaussian data
    heun = exercise("Heun step").solution(x, sigma, sigma_next, denoise)
    euler = solvers.sigma_euler_step(x, denoise(x, sigma), sigma, sigma_next)
    assert (heun - exact).abs().max() < (euler - exact).abs().max() / 5


# ---- the record ----------------------------------------------------------------------------------------------------

def test_the_record_belongs_to_the_shipped_weights_and_states_n_and_intervals():
    from diffusion_lessons.measure import record_matches_model
    from diffusion_lessons.pretrained import pretrained_path

    path = ROOT / "benchmarks" / "samplers" / "digits.json"
    if not path.is_file():
        pytest.skip("benchmarks/samplers/digits.json not recorded yet (python benchmarks/samplers.py)")
    record = json.loads(path.read_text())
    assert record_matches_model(record, pretrained_path("digits"))
    assert record["command"].startswith("python benchmarks/samplers.py") and record["wall_time_s"] > 0
    n = record["settings"]["per_setting"]
    for key, row in record["rows"].items():
        name, ladder, budget = key.split("/")
        assert row["evaluations"] <= int(budget)
        for measure in ("fidelity", "rough", "diversity"):
            est = row[measure]
            assert est["n"] == n and est["low"] <= est["value"] <= est["high"], (key, measure)
