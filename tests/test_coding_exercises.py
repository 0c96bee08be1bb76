"""Every lesson's coding exercises: each reference passes its own check, wrong answers fail with a message
that says what differs. Then lessons 01 and 02's references against diffusers (the other lessons' references
are checked against diffusers in their own test files)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

from diffusion_lessons.exercises import CODING_LESSONS, coding_exercise, coding_exercises
from diffusion_lessons.schedules import KINDS, make_schedule, to_diffusers_config

LESSONS = CODING_LESSONS
ALL = [ex for lesson in LESSONS for ex in coding_exercises(lesson)]
IDS = [f"{ex.lesson:02d}-{ex.name}" for ex in ALL]


def test_each_lesson_has_exercises_with_unique_names():
    for lesson in LESSONS:
        names = [ex.name for ex in coding_exercises(lesson)]
        assert names, f"lesson {lesson} has no coding exercises"
        assert len(names) == len(set(names)), names
        assert all(ex.lesson == lesson for ex in coding_exercises(lesson))
    assert len(IDS) == len(set(IDS))


@pytest.mark.parametrize("ex", ALL, ids=IDS)
def test_solution_passes(ex, capsys):
    assert ex.check(ex.solution) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("ex", ALL, ids=IDS)
def test_returning_first_argument_fails_and_names_the_difference(ex, capsys):
    assert ex.check(lambda *args: args[0]) is False
    out = capsys.readouterr().out
    assert "not quite" in out and ex.name in out
    assert "difference" in out or "shape" in out or "expected" in out   # says what differs
    assert "on inputs:" in out


@pytest.mark.parametrize("ex", ALL, ids=IDS)
def test_stub_returning_none_fails_with_a_hint(ex, capsys):
    def stub(*args):
        ...  # your code here

    assert ex.check(stub) is False
    out = capsys.readouterr().out
    assert "returned None" in out and "return" in out


@pytest.mark.parametrize("ex", ALL, ids=IDS)
def test_a_raising_answer_is_reported_not_raised(ex, capsys):
    def broken(*args):
        raise RuntimeError("oops")

    assert ex.check(broken) is False
    assert "raised RuntimeError: oops" in capsys.readouterr().out


@pytest.mark.parametrize("ex", ALL, ids=IDS)
def test_check_is_quiet_when_asked_and_inputs_are_seeded(ex, capsys):
    assert ex.check(ex.solution, verbose=False) is True
    assert capsys.readouterr().out == ""
    first = ex.make_inputs(torch.Generator().manual_seed(3))
    again = ex.make_inputs(torch.Generator().manual_seed(3))
    for a, b in zip(first, again):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_solutions_print_only_when_asked(capsys):
    ex = coding_exercise(1, "variance-preserving mix")
    ex.show_solution()
    assert "def vp_mix" in capsys.readouterr().out


# ---- the references against diffusers ----


@pytest.mark.parametrize("kind", KINDS)
def test_closed_form_noising_matches_ddpm_add_noise(kind):
    ex = coding_exercise(2, "closed-form noising")
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    reference = DDPMScheduler(**to_diffusers_config(kind))
    for t in (0, 500, 999):
        want = reference.add_noise(x0, eps, torch.tensor([t, t]))
        assert torch.allclose(ex.solution(x0, eps, make_schedule(kind).alphas_cumprod, t), want, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_sigmas_match_euler_discrete(kind):
    ex = coding_exercise(2, "noise level sigma")
    euler = EulerDiscreteScheduler(**to_diffusers_config(kind))
    assert torch.allclose(ex.solution(make_schedule(kind).alphas_cumprod), euler.sigmas[:-1].flip(0), rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_predicted_x0_matches_ddpm_step(kind):
    ex = coding_exercise(2, "predicted x0")
    x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    eps_hat = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    reference = DDPMScheduler(**to_diffusers_config(kind), clip_sample=False)
    for t in (10, 400, 800):
        want = reference.step(eps_hat, t, x_t, generator=torch.Generator().manual_seed(2)).pred_original_sample
        got = ex.solution(x_t, eps_hat, make_schedule(kind).alphas_cumprod, t)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_repeated_mix_is_the_vp_mix_applied_in_turn():
    once, repeated = coding_exercise(1, "variance-preserving mix"), coding_exercise(1, "repeated mix")
    x, noises, beta = repeated.make_inputs(torch.Generator().manual_seed(0))
    by_hand = x
    for eps in noises:
        by_hand = once.solution(by_hand, eps, beta)
    assert torch.allclose(repeated.solution(x, noises, beta), by_hand)
    assert torch.allclose(repeated.solution(x, noises[:1], beta), once.solution(x, noises[0], beta))
