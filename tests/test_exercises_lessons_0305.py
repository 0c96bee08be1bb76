"""The coding exercises of lessons 03, 04 and 05 (the checks common to every exercise are in
test_coding_exercises.py): solutions print only when asked, and the references agree with diffusers where
diffusers computes the same thing."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from diffusion_lessons.exercises import coding_exercise
from diffusion_lessons.guidance import cfg_combine
from diffusion_lessons.schedules import make_schedule, to_diffusers_config


@pytest.mark.parametrize("lesson, name, needle", [(3, "velocity target", "def velocity_target"),
                                                  (4, "one DDIM step", "def ddim_step_by_hand"),
                                                  (5, "guidance combination", "def guided_prediction")])
def test_solutions_print_only_when_asked(lesson, name, needle, capsys):
    ex = coding_exercise(lesson, name)
    answer = inspect.getsource(ex.solution).strip().splitlines()[-1].strip()   # the reference's return line
    ex.describe()                                   # the task and the signature, not the answer
    assert answer not in capsys.readouterr().out
    ex.show_solution()
    shown = capsys.readouterr().out
    assert needle in shown and answer in shown


# ---- the references against diffusers ----

T_CHECKED = (10, 400, 800)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return x, torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))


def test_velocity_target_matches_get_velocity():
    ex = coding_exercise(3, "velocity target")
    x0, eps = _inputs()
    reference = DDPMScheduler(**to_diffusers_config("cosine"))
    abar = make_schedule("cosine").alphas_cumprod
    for t in T_CHECKED:
        ts = torch.tensor([t, 999 - t])
        assert torch.allclose(ex.solution(x0, eps, abar[ts]), reference.get_velocity(x0, eps, ts), atol=1e-5)


def test_x0_from_v_matches_a_v_prediction_ddim_step():
    ex = coding_exercise(3, "x0 from v")
    x_t, v = _inputs()
    reference = DDIMScheduler(**to_diffusers_config("cosine"), prediction_type="v_prediction", clip_sample=False)
    reference.set_timesteps(50)
    abar = make_schedule("cosine").alphas_cumprod
    for t in (20, 400, 800):
        want = reference.step(v, t, x_t).pred_original_sample
        assert torch.allclose(ex.solution(x_t, v, abar[[t, t]]), want, atol=1e-5)


def test_ddim_step_matches_ddim_scheduler():
    ex = coding_exercise(4, "one DDIM step")
    x_t, eps = _inputs()
    reference = DDIMScheduler(**to_diffusers_config("cosine"), clip_sample=False, set_alpha_to_one=True)
    reference.set_timesteps(20)                          # leading: 950, 900, ..., 0; each step goes back 50
    abar = make_schedule("cosine").alphas_cumprod
    for t in (850, 400, 0):
        want = reference.step(eps, t, x_t, eta=0.0).prev_sample
        abar_prev = float(abar[t - 50]) if t >= 50 else 1.0
        assert torch.allclose(ex.solution(x_t, eps, float(abar[t]), abar_prev), want, rtol=1e-4, atol=1e-5)


def test_ddpm_step_matches_ddpm_scheduler():
    ex = coding_exercise(4, "one DDPM step")
    x_t, eps = _inputs()
    reference = DDPMScheduler(**to_diffusers_config("cosine"), clip_sample=False)
    abar = make_schedule("cosine").alphas_cumprod
    for t in T_CHECKED:
        out = reference.step(eps, t, x_t, generator=torch.Generator().manual_seed(5))
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))   # the noise the scheduler drew
        got = ex.solution(x_t, out.pred_original_sample, float(abar[t]), float(abar[t - 1]), z)
        assert torch.allclose(got, out.prev_sample, rtol=1e-4, atol=1e-5)
    last = ex.solution(x_t, eps, float(abar[0]), 1.0, torch.ones_like(x_t))  # the last step adds no noise
    assert torch.allclose(last, eps, atol=1e-6)


def test_guidance_references_match_the_package_and_diffusers():
    combine, rescale = coding_exercise(5, "guidance combination"), coding_exercise(5, "guidance rescale")
    eps_cond, eps_uncond = _inputs()
    for s in (0.0, 1.0, 3.0, 7.5):
        assert torch.allclose(combine.solution(eps_cond, eps_uncond, s), cfg_combine(eps_cond, eps_uncond, s),
                              atol=1e-6)
    eps_cfg = cfg_combine(eps_cond, eps_uncond, 7.5)
    for phi in (0.0, 0.7, 1.0):
        assert torch.allclose(rescale.solution(eps_cfg, eps_cond, phi), rescale_noise_cfg(eps_cfg, eps_cond, phi),
                              atol=1e-6)
