"""Classifier-free guidance (lesson 05): the papers' identities (Ho and Salimans 2022), diffusers' own formulas, one batched pass."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from diffusion_lessons.data import NULL_LABEL
from diffusion_lessons.guidance import (branch_labels, cfg_combine, check_labels, drop_labels, guided_denoiser,
                                        guided_eps, rescale_guidance)
from diffusion_lessons.models import predict_eps
from diffusion_lessons.sampling import sample
from diffusion_lessons.schedules import make_schedule, to_diffusers_config


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=11, norm_num_groups=8)
    return model.eval()


def pair(seed=0, shape=(4, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), 0.5 * torch.randn(shape, generator=g)


# ---- the combination ----


def test_scale_1_is_exactly_conditional_and_0_exactly_unconditional():
    eps_cond, eps_uncond = pair()
    assert torch.equal(cfg_combine(eps_cond, eps_uncond, 1.0), eps_cond)
    assert torch.equal(cfg_combine(eps_cond, eps_uncond, 0.0), eps_uncond)


@pytest.mark.parametrize("s", (0.5, 2.0, 7.5))
def test_combination_is_diffusers_and_the_papers_form(s):
    eps_cond, eps_uncond = pair()
    # StableDiffusionPipeline: noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
    torch.testing.assert_close(cfg_combine(eps_cond, eps_uncond, s), eps_uncond + s * (eps_cond - eps_uncond))
    w = s - 1  # Ho and Salimans: (1 + w) eps(z, c) - w eps(z)
    torch.testing.assert_close(cfg_combine(eps_cond, eps_uncond, s), (1 + w) * eps_cond - w * eps_uncond)


def test_rescale_phi_0_changes_nothing_and_phi_1_matches_the_conditional_std():
    eps_cond, eps_uncond = pair()
    cfg = cfg_combine(eps_cond, eps_uncond, 7.0)
    assert torch.equal(rescale_guidance(cfg, eps_cond, 0.0), cfg)
    out = rescale_guidance(cfg, eps_cond, 1.0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), eps_cond.std(dim=(1, 2, 3)))
    assert not torch.allclose(cfg.std(dim=(1, 2, 3)), eps_cond.std(dim=(1, 2, 3)))  # so the test can fail


@pytest.mark.parametrize("phi", (0.3, 0.7, 1.0))
def test_rescale_matches_diffusers(phi):
    eps_cond, eps_uncond = pair(1)
    cfg = cfg_combine(eps_cond, eps_uncond, 5.0)
    torch.testing.assert_close(rescale_guidance(cfg, eps_cond, phi), rescale_noise_cfg(cfg, eps_cond, phi))


# ---- with a model: one batched pass ----


@pytest.mark.parametrize("s, negative, phi", [(3.0, None, 0.0), (5.0, None, 0.7), (2.0, 4, 0.0), (0.0, None, 0.5)])
def test_batched_single_pass_equals_two_separate_passes(unet, s, negative, phi):
    x_t = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    labels, t = torch.tensor([1, 2, 3]), torch.tensor(500)
    other = torch.full((3,), NULL_LABEL if negative is None else negative)
    with torch.no_grad():
        eps_cond, eps_other = predict_eps(unet, x_t, t, labels), predict_eps(unet, x_t, t, other)
        ours = guided_eps(unet, x_t, t, labels, s, negative_label=negative, guidance_rescale=phi)
    expected = rescale_noise_cfg(eps_other + s * (eps_cond - eps_other), eps_cond, phi)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert branch_labels(labels, s, None if negative is None else other, phi).shape == (6,)


def test_scale_1_and_0_with_a_model(unet):
    x_t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    labels, t = torch.tensor([5, 6]), torch.tensor(300)
    with torch.no_grad():
        assert torch.equal(guided_eps(unet, x_t, t, labels, 1.0), predict_eps(unet, x_t, t, labels))
        null = torch.full((2,), NULL_LABEL)
        assert torch.equal(guided_eps(unet, x_t, t, labels, 0.0), predict_eps(unet, x_t, t, null))


def test_negative_guidance_moves_away_from_the_negative_labels_prediction(unet):
    x_t = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    labels, t = torch.tensor([1, 1, 7, 7]), torch.tensor(400)
    with torch.no_grad():
        eps_cond = predict_eps(unet, x_t, t, labels)
        eps_neg = predict_eps(unet, x_t, t, torch.full((4,), 3))
        guided = guided_eps(unet, x_t, t, labels, 3.0, negative_label=3)
        plain = guided_eps(unet, x_t, t, labels, 3.0)
    dist = lambda a: (a - eps_neg).flatten(1).norm(dim=1)  # noqa: E731
    assert (dist(guided) > 2.5 * dist(eps_cond)).all()  # |guided - eps_neg| = s |eps_cond - eps_neg|
    step = (guided - eps_cond).flatten(1)  # the push goes straight away from the negative prediction
    away = (eps_cond - eps_neg).flatten(1)
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(step, away), torch.ones(4))
    assert not torch.allclose(guided, plain)  # a different push from plain (null-label) guidance


def test_sample_loop_guidance_equals_a_two_pass_diffusers_loop(unet):
    """The sample loop at s = 3 against the loop of diffusers' pipelines with two separate passes."""
    labels, s = torch.tensor([0, 9]), 3.0
    ref = DDIMScheduler(**to_diffusers_config("cosine"), clip_sample=False, set_alpha_to_one=True)
    ref.set_timesteps(6)
    x_T = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    x = x_T
    with torch.no_grad():
        for t in ref.timesteps:
            c, u = predict_eps(unet, x, t, labels), predict_eps(unet, x, t, torch.full((2,), NULL_LABEL))
            x = ref.step(u + s * (c - u), t, x).prev_sample
    ours = sample(unet, make_schedule("cosine"), labels, steps=6, guidance_scale=s, x_T=x_T, progress=False)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


# ---- guidance as a wrapper around any denoiser ----


class CountingDenoiser:
    """denoise(x, t, cond) = x * cond-dependent scale + t / 1000, counting its calls and batch sizes."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        scale = cond.float().mean(dim=tuple(range(1, cond.ndim))) if cond.ndim > 1 else cond.float()
        return x * scale.reshape(-1, *([1] * (x.ndim - 1))) + t / 1000


@pytest.mark.parametrize("s, phi", [(3.0, 0.0), (0.5, 0.0), (7.5, 0.7), (0.0, 0.5)])
def test_guided_denoiser_is_one_pass_of_the_formula(s, phi):
    """Same rule for class labels (B,) and for text embeddings (B, L, D): one call on [x; x] with [cond; uncond]."""
    x, t = pair(5)[0], torch.tensor(300)
    for cond, uncond in [(torch.tensor([1, 2, 3, 4]), torch.full((4,), NULL_LABEL)),
                         (torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(4, 6, 8))]:
        denoise = CountingDenoiser()
        guided = guided_denoiser(denoise, s, uncond, phi)(x, t, cond)
        assert denoise.batches == [8]
        c, u = denoise(x, t, cond), denoise(x, t, uncond)
        torch.testing.assert_close(guided, rescale_noise_cfg(u + s * (c - u), c, phi))


def test_guided_denoiser_runs_one_branch_at_scale_1_and_0():
    x, t, cond, uncond = pair(6)[0], torch.tensor(10), torch.tensor([1, 2, 3, 4]), torch.full((4,), NULL_LABEL)
    denoise = CountingDenoiser()
    assert torch.equal(guided_denoiser(denoise, 1.0, None)(x, t, cond), denoise(x, t, cond))
    assert torch.equal(guided_denoiser(denoise, 0.0, uncond)(x, t, cond), denoise(x, t, uncond))
    assert denoise.batches == [4] * 4


def test_guided_denoiser_bad_inputs():
    denoise, x, t = CountingDenoiser(), pair()[0], torch.tensor(1)
    cases = [
        (lambda: guided_denoiser(denoise, -0.5, torch.zeros(4)), "guidance_scale must be a finite number >= 0"),
        (lambda: guided_denoiser(denoise, True, torch.zeros(4)), "guidance_scale"),
        (lambda: guided_denoiser(denoise, 2.0, torch.zeros(4), guidance_rescale=2),
         r"guidance_rescale must lie in \[0, 1\]"),
        (lambda: guided_denoiser(denoise, 2.0, None), "uncond: guidance .* needs the unconditional"),
        (lambda: guided_denoiser(denoise, 2.0, torch.zeros(3))(x, t, torch.ones(4)), r"uncond must hold one .* \(4\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ---- label dropout ----


def test_label_dropout_rate_and_determinism():
    labels = torch.arange(10).repeat(2000)
    assert torch.equal(drop_labels(labels, 0.0), labels)
    assert (drop_labels(labels, 1.0) == NULL_LABEL).all()
    dropped = drop_labels(labels, 0.15, torch.Generator().manual_seed(0))
    rate = (dropped == NULL_LABEL).float().mean().item()
    assert abs(rate - 0.15) < 4 * (0.15 * 0.85 / len(labels)) ** 0.5
    kept = dropped != NULL_LABEL
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(dropped, drop_labels(labels, 0.15, torch.Generator().manual_seed(0)))


# ---- bad input ----


def test_bad_inputs_name_the_argument(unet):
    x_t, t = torch.randn(2, 1, 16, 16), torch.tensor(10)
    cases = [
        (lambda: guided_eps(unet, x_t, t, [1, 2], -1.0), "guidance_scale"),
        (lambda: guided_eps(unet, x_t, t, [1, 2], float("nan")), "guidance_scale"),
        (lambda: guided_eps(unet, x_t, t, [1, 10]), "labels"),
        (lambda: guided_eps(unet, x_t, t, [1, -1]), "labels"),
        (lambda: guided_eps(unet, x_t, t, [1]), "labels"),
        (lambda: guided_eps(unet, x_t, t, [1, 2], 3.0, negative_label=2), "negative_label"),
        (lambda: guided_eps(unet, x_t, t, [1, 2], 3.0, negative_label=12), "negative_label"),
        (lambda: guided_eps(unet, x_t, t, [1, 2], 3.0, guidance_rescale=1.5), "guidance_rescale"),
        (lambda: check_labels(torch.tensor([1.0])), "labels"),
        (lambda: drop_labels(torch.tensor([1]), 1.5), "p_uncond"),
        (lambda: cfg_combine(x_t, x_t[:1], 2.0), "eps_uncond"),
        (lambda: rescale_guidance(x_t, x_t, -0.1), "phi"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
