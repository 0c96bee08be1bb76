"""The engine (parameterisation, samplers, loop): one loop for every prediction type, against diffusers.

The reference is the six-line loop of diffusers' pipelines: out = denoise(x, t, cond); x = scheduler.step(out,
t, x, generator=g).prev_sample, with DDIMScheduler(clip_sample=False) (eta 0) or DDPMScheduler(clip_sample=False)
configured with the same prediction_type, from the same x_T and generator seed. The denoiser is a fixed random
callable (cheap, so every combination runs), then a tiny random UNet2DModel. Float32, the dtype the book samples
in: relative agreement to 1e-5 (diffusers computes alpha_bar's square roots in float32, the package in float64).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel

from diffusion_lessons.guidance import cfg_combine, guided_denoiser
from diffusion_lessons.loop import (SampleState, as_schedule, denoising_loop, final_alpha_cumprod, prediction_type_of,
                                    sampling_timesteps, unet_denoiser)
from diffusion_lessons.models import predict_eps
from diffusion_lessons.parameterisation import PREDICTION_TYPES, eps_from_v, x0_and_eps, x0_from_eps, x0_from_v
from diffusion_lessons.sampling import sample, sample_loop
from diffusion_lessons.schedules import make_schedule, to_diffusers_config

TOL = dict(rtol=1e-5, atol=1e-5)


class RandomDenoiser:
    """denoise(x, t, cond): a fixed random channel mix of x, shifted by t and the label, through tanh."""

    def __init__(self, seed: int = 0, channels: int = 2):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(channels, channels, generator=g) / channels**0.5
        self.c = torch.randn(channels, generator=g)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = torch.einsum("oc,bchw->bohw", self.w.to(x), x) + 0.3 * torch.sin(t / 150.0) * self.c.to(x)[:, None, None]
        if cond is not None:
            h = h + 0.1 * cond.to(x.dtype)[:, None, None, None]
        return torch.tanh(h)


def reference(sampler: str, prediction_type: str, kind: str = "cosine", spacing: str = "leading", steps: int = 10,
              zero_snr: bool = False, **kwargs):
    cls, extra = (DDIMScheduler, dict(set_alpha_to_one=True)) if sampler == "ddim" else (DDPMScheduler, {})
    ref = cls(**to_diffusers_config(kind, zero_terminal_snr=zero_snr), clip_sample=False,
              prediction_type=prediction_type, timestep_spacing=spacing, **{**extra, **kwargs})
    ref.set_timesteps(steps)
    return ref


def diffusers_loop(denoise, ref, x_T, cond, seed: int = 2) -> torch.Tensor:
    """diffusers' pipeline loop: predict, scheduler.step, repeat."""
    g, x = torch.Generator().manual_seed(seed), x_T
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(denoise(x, t, cond), t, x, generator=g).prev_sample
    return x


def start(batch: int = 3, shape=(2, 8, 8), seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def package_loop(denoise, ref, x_T, cond, sampler, seed: int = 2) -> list[SampleState]:
    """The one loop with everything taken from the diffusers scheduler: timesteps, prediction type, last step."""
    timesteps = sampling_timesteps(ref, len(ref.timesteps))
    assert timesteps == ref.timesteps.tolist()  # same timesteps
    return list(denoising_loop(denoise, ref, x_T, cond, timesteps=timesteps, sampler=sampler,
                               prediction_type=prediction_type_of(ref), final_alpha=final_alpha_cumprod(ref, sampler),
                               generator=torch.Generator().manual_seed(seed), progress=False))


# ---- every prediction type, both samplers, against diffusers' schedulers ----


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler", ("ddim", "ddpm"))
@pytest.mark.parametrize("kind, spacing", [("cosine", "leading"), ("linear", "trailing")])
def test_loop_matches_diffusers_for_every_prediction_type(prediction_type, sampler, kind, spacing):
    denoise, cond, x_T = RandomDenoiser(), torch.tensor([0, 1, 2]), start()
    ref = reference(sampler, prediction_type, kind, spacing)
    expected = diffusers_loop(denoise, ref, x_T, cond)
    states = package_loop(denoise, ref, x_T, cond, sampler)
    torch.testing.assert_close(states[-1].x_t, expected, **TOL)
    assert [s.t for s in states] == ref.timesteps.tolist() + [-1]


@pytest.mark.parametrize("sampler", ("ddim", "ddpm"))
def test_v_prediction_with_zero_terminal_snr_and_trailing_timesteps(sampler):
    """Lin et al. 2024's setting: alpha_bar = 0 at t = 999, where x0 = -v needs no division by sqrt(alpha_bar)."""
    denoise, cond, x_T = RandomDenoiser(3), torch.tensor([4, 5]), start(2)
    ref = reference(sampler, "v_prediction", "cosine", "trailing", steps=20, zero_snr=True)
    assert ref.timesteps[0] == 999 and float(ref.alphas_cumprod[999]) == 0.0
    states = package_loop(denoise, ref, x_T, cond, sampler)
    torch.testing.assert_close(states[-1].x_t, diffusers_loop(denoise, ref, x_T, cond), **TOL)
    torch.testing.assert_close(states[0].x0, -denoise(x_T, torch.tensor(999), cond))  # x0 = -v at SNR 0
    assert all(torch.isfinite(s.x_t).all() for s in states)


def test_x0_of_each_state_is_diffusers_pred_original_sample():
    denoise, cond, x_T = RandomDenoiser(1), torch.tensor([7]), start(1)
    ref = reference("ddim", "v_prediction", steps=5)
    states, x = package_loop(denoise, ref, x_T, cond, "ddim"), x_T
    for state, t in zip(states, ref.timesteps):
        out = ref.step(denoise(x, t, cond), t, x)
        torch.testing.assert_close(state.x_t, x, **TOL)
        torch.testing.assert_close(state.x0, out.pred_original_sample, **TOL)
        x = out.prev_sample


def test_stable_diffusions_ddim_settings_offset_and_last_alpha():
    """steps_offset = 1 and set_alpha_to_one = False (StableDiffusionPipeline's scheduler), read from the config."""
    ref = DDIMScheduler(**to_diffusers_config("scaled_linear"), clip_sample=False, set_alpha_to_one=False,
                        steps_offset=1, timestep_spacing="leading")
    ref.set_timesteps(8)
    assert sampling_timesteps(ref, 8) == ref.timesteps.tolist() == list(range(876, 0, -125))
    assert final_alpha_cumprod(ref, "ddim") == float(ref.alphas_cumprod[0]) and final_alpha_cumprod(ref, "ddpm") == 1
    denoise, x_T = RandomDenoiser(2), start(2)
    ours = sample(denoise, ref, [1, 2], steps=8, x_T=x_T, progress=False)
    torch.testing.assert_close(ours, diffusers_loop(denoise, ref, x_T, torch.tensor([1, 2])), **TOL)


def test_sample_reads_the_prediction_type_from_the_scheduler_and_a_keyword_overrides_it():
    denoise, x_T = RandomDenoiser(4), start(2)
    v_ref = reference("ddim", "v_prediction", steps=6)
    from_config = sample(denoise, v_ref, [3, 4], steps=6, x_T=x_T, progress=False)
    keyword = sample(denoise, make_schedule("cosine"), [3, 4], steps=6, x_T=x_T, prediction_type="v_prediction",
                     progress=False)
    torch.testing.assert_close(from_config, keyword, **TOL)
    as_eps = sample(denoise, make_schedule("cosine"), [3, 4], steps=6, x_T=x_T, progress=False)
    assert not torch.allclose(as_eps, keyword)  # the default for a NoiseSchedule is 'epsilon'


# ---- a v-prediction UNet2DModel, as the digits model will ship ----


def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=11, norm_num_groups=4).eval()


def shipped_like_scheduler(sampler: str = "ddim"):
    """The digits recipe's scheduler with prediction_type='v_prediction': cosine, leading, to alpha_bar = 1."""
    return reference(sampler, "v_prediction", "cosine", "leading", steps=10)


@pytest.mark.parametrize("sampler", ("ddim", "ddpm"))
def test_v_prediction_unet_sampled_like_diffusers(sampler):
    unet, labels = tiny_unet(), torch.tensor([0, 3, 9])
    ref = shipped_like_scheduler(sampler)
    x_T = start(3, (1, 8, 8))
    expected = diffusers_loop(lambda x, t, c: unet(x, t, class_labels=c).sample, ref, x_T, labels)
    ours = sample(unet, ref, labels, steps=10, sampler=sampler, x_T=x_T, generator=torch.Generator().manual_seed(2),
                  progress=False)
    torch.testing.assert_close(ours, expected, **TOL)


def test_guided_v_prediction_unet_equals_a_two_pass_diffusers_loop():
    unet, labels, s = tiny_unet(1), torch.tensor([2, 5]), 3.0
    ref = shipped_like_scheduler()
    null = torch.full((2,), 10)

    def two_passes(x, t, c):  # CFG on v, as a v-prediction pipeline does
        v_cond, v_null = unet(x, t, class_labels=c).sample, unet(x, t, class_labels=null).sample
        return v_null + s * (v_cond - v_null)

    x_T = start(2, (1, 8, 8))
    expected = diffusers_loop(two_passes, ref, x_T, labels)
    ours = sample(unet, ref, labels, steps=10, guidance_scale=s, x_T=x_T, progress=False)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)  # one batched pass against two


def test_guidance_on_v_equals_guidance_on_eps_through_the_loop():
    """CFG commutes with v -> eps: guiding v and converting equals converting each branch to eps and guiding."""
    schedule, v_denoise, s = make_schedule("cosine"), RandomDenoiser(5), 4.0
    x_T, labels = start(2).double(), torch.tensor([1, 8])

    def eps_denoise(x, t, c):
        return eps_from_v(schedule, x, v_denoise(x, t, c), t)

    null = torch.full((2,), 10)
    on_v = sample(guided_denoiser(v_denoise, s, null), schedule, labels, steps=10, x_T=x_T,
                  prediction_type="v_prediction", progress=False)
    on_eps = sample(guided_denoiser(eps_denoise, s, null), schedule, labels, steps=10, x_T=x_T,
                    prediction_type="epsilon", progress=False)
    torch.testing.assert_close(on_v, on_eps, rtol=1e-9, atol=1e-9)
    with_labels = sample(v_denoise, schedule, labels, steps=10, x_T=x_T, guidance_scale=s,
                         prediction_type="v_prediction", progress=False)  # the same through sample's own guidance
    torch.testing.assert_close(with_labels, on_v, rtol=0, atol=0)


# ---- conversions ----


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_x0_and_eps_inverts_the_forward_process(prediction_type):
    s = make_schedule("cosine")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 1, 4, 4, generator=g,
                                                                                        dtype=torch.float64)
    for t in (0, 300, 990):
        x_t = s.add_noise(x0, eps, torch.tensor([t]))
        abar = float(s.alphas_cumprod[t])
        v = abar**0.5 * eps - (1 - abar) ** 0.5 * x0
        prediction = {"epsilon": eps, "v_prediction": v, "sample": x0}[prediction_type]
        got_x0, got_eps = x0_and_eps(prediction, x_t, abar, prediction_type)
        torch.testing.assert_close(got_x0, x0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got_eps, eps, rtol=1e-6, atol=1e-6)
        if prediction_type == "v_prediction":
            torch.testing.assert_close(got_x0, x0_from_v(s, x_t, v, t))
        if prediction_type == "epsilon":
            torch.testing.assert_close(got_x0, x0_from_eps(s, x_t, eps, t))


def test_cfg_on_v_equals_cfg_on_eps_after_conversion():
    s, t = make_schedule("cosine"), torch.tensor([700])
    g = torch.Generator().manual_seed(1)
    x_t, v_cond, v_uncond = (torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for scale in (0.0, 0.5, 3.0, 7.5):
        guided_then_converted = eps_from_v(s, x_t, cfg_combine(v_cond, v_uncond, scale), t)
        converted_then_guided = cfg_combine(eps_from_v(s, x_t, v_cond, t), eps_from_v(s, x_t, v_uncond, t), scale)
        torch.testing.assert_close(guided_then_converted, converted_then_guided)


# ---- the denoiser adapter ----


def test_unet_denoiser_for_class_labels_and_for_text():
    unet, x, t = tiny_unet(), start(2, (1, 8, 8)), torch.tensor(500)
    labels = torch.tensor([1, 10])
    with torch.no_grad():
        assert torch.equal(unet_denoiser(unet)(x, t, labels), predict_eps(unet, x, t, labels))
    torch.manual_seed(0)
    text_unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                     cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4).eval()
    z, emb = start(2, (4, 8, 8)), torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = text_unet(z, t, encoder_hidden_states=emb).sample
        assert torch.equal(unet_denoiser(text_unet)(z, t, emb), expected)  # picked encoder_hidden_states itself
        assert torch.equal(unet_denoiser(text_unet, "encoder_hidden_states")(z, t, emb), expected)


def test_unconditional_unet2dmodel_gets_no_labels():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    assert sample(unet, make_schedule("cosine"), num_samples=2, steps=2, progress=False).shape == (2, 1, 8, 8)


# ---- bad input ----


def test_bad_inputs_name_the_argument_and_what_is_allowed():
    s, denoise, x_T = make_schedule("cosine"), RandomDenoiser(), start(2)
    ts = [500, 250, 0]
    cases = [
        (lambda: denoising_loop(denoise, s, x_T, timesteps=ts, sampler="euler"), r"sampler must be one of \('ddpm'"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=ts, eta=-1), "eta must be a number >= 0"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=ts, sampler="ddpm", eta=0.5), "eta applies"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=ts, prediction_type="v"),
         r"prediction_type must be one of \('epsilon', 'v_prediction', 'sample'\)"),
        (lambda: denoising_loop(denoise, s, x_T.long(), timesteps=ts), "x_T must be a floating-point tensor"),
        (lambda: denoising_loop(denoise, s, x_T, torch.tensor([1, 2, 3]), timesteps=ts), "cond must hold"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=[0, 500]), "timesteps must be .*strictly decreasing"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=[1000]), r"timesteps must .* in \[0, 1000\)"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=[]), "timesteps must be a non-empty"),
        (lambda: denoising_loop(denoise, s, x_T, timesteps=ts, final_alpha=0.0), r"final_alpha must be .* \(0, 1\]"),
        (lambda: denoising_loop(denoise, "cosine", x_T, timesteps=ts), "schedule must be a NoiseSchedule"),
        (lambda: sample_loop(denoise, s, [1, 2], x_T=x_T, prediction_type="x0"), "prediction_type must be one of"),
        (lambda: sample_loop(denoise, s, [1, 2]), "x_T: give the starting noise"),
        (lambda: sample_loop(denoise, s, [1, 2, 3], x_T=x_T), "labels must hold one label per sample"),
        (lambda: sample_loop(42, s, [1, 2], x_T=x_T), "model must be a network"),
        (lambda: sample_loop(denoise, DDIMScheduler(prediction_type="flow"), [1, 2], x_T=x_T),
         r"schedule: config.prediction_type must be one of"),
        (lambda: unet_denoiser(tiny_unet(), "labels"), "cond_argument must be 'class_labels' or"),
        (lambda: sampling_timesteps(s, 10, "cosine"), r"spacing must be one of \('leading'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_as_schedule_keeps_v_prediction_schedulers():
    ref = reference("ddim", "v_prediction")
    torch.testing.assert_close(as_schedule(ref).alphas_cumprod, make_schedule("cosine").alphas_cumprod)
    assert prediction_type_of(ref) == "v_prediction" and prediction_type_of(make_schedule("cosine")) == "epsilon"
