"""Classifier-free guidance's two execution paths (guided_denoiser's batch_guidance): one batched pass of
[x; x] or two passes of x. Both compute the same guided prediction; 'auto' picks the faster one on the
device (docs/performance.md). Also a smoke check that benchmarks/bench_speed.py runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from diffusion_lessons import guidance
from diffusion_lessons.data import NULL_LABEL
from diffusion_lessons.guidance import guided_denoiser, guided_eps
from diffusion_lessons.loop import unet_denoiser
from diffusion_lessons.models import build_digits_unet
from diffusion_lessons.sampling import sample
from diffusion_lessons.schedules import make_schedule

from test_guidance import CountingDenoiser

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


Counting = CountingDenoiser   # denoise(x, t, cond) that records the batch of every call (test_guidance)


@pytest.fixture(scope="module")
def unet():
    return build_digits_unet(seed=0).eval()


def states(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 16, 16, generator=g), (torch.arange(batch) % 10)


def small_and_large():
    """A batch of digits below and one at the CPU threshold of 'auto'."""
    per_sample = 16 * 16
    small = max(1, guidance.CPU_BATCHED_MAX_ELEMENTS // per_sample - 1)
    large = -(-guidance.CPU_BATCHED_MAX_ELEMENTS // per_sample)
    return small, large


@pytest.mark.parametrize("policy, calls", [(True, [8]), (False, [4, 4])])
def test_forced_paths_make_the_calls_they_say(policy, calls):
    x, labels = states(4)
    denoise = Counting()
    guided_denoiser(denoise, 3.0, torch.full_like(labels, NULL_LABEL), batch_guidance=policy)(x, torch.tensor(5),
                                                                                              labels)
    assert denoise.batches == calls


def test_auto_is_batched_for_small_batches_and_two_passes_for_large_ones_on_a_cpu():
    small, large = small_and_large()
    for batch, calls in [(small, [2 * small]), (large, [large, large])]:
        x, labels = states(batch)
        denoise = Counting()
        guided_denoiser(denoise, 3.0, torch.full_like(labels, NULL_LABEL))(x, torch.tensor(5), labels)
        assert denoise.batches == calls, batch


@pytest.mark.parametrize("policy", [True, False, "auto"])
def test_scale_1_and_0_still_run_one_branch(policy):
    x, labels = states(40)
    null = torch.full_like(labels, NULL_LABEL)
    denoise = Counting()
    assert torch.equal(guided_denoiser(denoise, 1.0, None, batch_guidance=policy)(x, torch.tensor(3), labels),
                       denoise(x, torch.tensor(3), labels))
    assert torch.equal(guided_denoiser(denoise, 0.0, null, batch_guidance=policy)(x, torch.tensor(3), labels),
                       denoise(x, torch.tensor(3), null))
    assert denoise.batches == [40] * 4


@pytest.mark.parametrize("s, phi", [(3.0, 0.0), (0.5, 0.0), (7.5, 0.7), (0.0, 0.5)])
def test_two_passes_compute_the_formula_for_labels_and_text_embeddings(s, phi):
    x = states(4, 1)[0]
    t = torch.tensor(300)
    for cond, uncond in [(torch.tensor([1, 2, 3, 4]), torch.full((4,), NULL_LABEL)),
                         (torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(4, 6, 8))]:
        denoise = Counting()
        two = guided_denoiser(denoise, s, uncond, phi, batch_guidance=False)(x, t, cond)
        c, u = denoise(x, t, cond), denoise(x, t, uncond)
        torch.testing.assert_close(two, rescale_noise_cfg(u + s * (c - u), c, phi))
        torch.testing.assert_close(two, guided_denoiser(denoise, s, uncond, phi, batch_guidance=True)(x, t, cond))


@pytest.mark.parametrize("s, phi", [(3.0, 0.0), (7.5, 0.7)])
def test_two_passes_equal_the_batched_pass_on_the_digits_unet(unet, s, phi):
    x, labels = states(12, 2)
    null = torch.full_like(labels, NULL_LABEL)
    denoise = unet_denoiser(unet, "class_labels")
    with torch.no_grad():
        batched = guided_denoiser(denoise, s, null, phi, batch_guidance=True)(x, torch.tensor(700), labels)
        two = guided_denoiser(denoise, s, null, phi, batch_guidance=False)(x, torch.tensor(700), labels)
    torch.testing.assert_close(two, batched, atol=1e-5, rtol=1e-5)


def test_the_default_sampler_equals_the_batched_one(unet):
    """sample() guides with 'auto' (two passes for this batch on a CPU): the same images as one batched pass."""
    batch = small_and_large()[1]
    x_T, labels = states(batch, 3)
    schedule = make_schedule("cosine")
    forced = guided_denoiser(unet_denoiser(unet, "class_labels"), 3.0, torch.full_like(labels, NULL_LABEL),
                             batch_guidance=True)
    with torch.no_grad():
        default = sample(unet, schedule, labels, steps=4, guidance_scale=3.0, x_T=x_T, progress=False)
        batched = sample(forced, schedule, labels, steps=4, x_T=x_T, progress=False)
        eps = guided_eps(unet, x_T, 500, labels, 3.0)
    torch.testing.assert_close(default, batched, atol=1e-5, rtol=1e-5)
    assert eps.shape == x_T.shape


def test_the_old_positional_call_still_works():
    x, labels = states(4)
    denoise = Counting()
    guided_denoiser(denoise, 2.0, torch.full_like(labels, NULL_LABEL), 0.3)(x, torch.tensor(1), labels)
    assert denoise.batches == [8]   # a small batch: batched, as before


@pytest.mark.parametrize("bad", ["yes", "batched", 1, 0, None, 1.0, torch.tensor(True), [True]])
def test_batch_guidance_must_be_true_false_or_auto(bad):
    with pytest.raises(ValueError, match="batch_guidance must be True .*, False .* or 'auto'"):
        guided_denoiser(Counting(), 3.0, torch.zeros(4), batch_guidance=bad)


def test_two_passes_check_the_unconditional_batch():
    x, labels = states(4)
    with pytest.raises(ValueError, match=r"uncond must hold one .* \(4\)"):
        guided_denoiser(Counting(), 3.0, torch.zeros(3), batch_guidance=False)(x, torch.tensor(1), labels)


def test_bench_speed_runs_on_a_tiny_setting(unet):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_speed
        import run
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert run.BENCH_MODULES.get("bench_speed") == "speed"
    cpu = torch.device("cpu")
    result = bench_speed.bench_cfg(unet, cpu, batches=(2,), repeats=1, profile_batch=None)["B=2"]
    assert result["max_abs_diff"] < 1e-5 and result["auto"] == "one batched pass"
    peak = bench_speed.cpu_peak(1)
    assert peak["flops_per_cycle"] in (8, 16, 32, 64) and "FLOP/cycle" in peak["assumption"]
