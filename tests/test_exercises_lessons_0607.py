"""Coding exercises of lessons 06 and 07 (the checks common to every exercise are in test_coding_exercises.py): the
reference solutions agree with the package and the shipped tokenizer; thresholding against diffusers."""

import pytest
import torch

from diffusion_lessons import text, thresholding
from diffusion_lessons.exercise_bank import lesson07


def test_tokenize_by_hand_equals_the_shipped_tokenizer():
    from diffusion_lessons.pretrained import load_pretrained

    tokenizer, _ = load_pretrained("text", "cpu")
    for seed in range(40):
        prompt, vocab, max_length = lesson07._prompt_inputs(torch.Generator().manual_seed(seed))
        assert vocab == tokenizer.get_vocab()
        assert lesson07.tokenize_by_hand(prompt, vocab, max_length) == text.tokenize(tokenizer, prompt)[0].tolist()


def test_attention_weights_equal_diffusers_attention_scores():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=12, cross_attention_dim=10, heads=4, dim_head=4).eval()
    h, c = torch.randn(2, 16, 12), torch.randn(2, 6, 10)
    with torch.no_grad():
        want = attn.get_attention_scores(attn.head_to_batch_dim(attn.to_q(h)), attn.head_to_batch_dim(attn.to_k(c)))
        got = lesson07.attention_weights(h, c, attn.to_q.weight, attn.to_k.weight, 4)
    torch.testing.assert_close(got.reshape(8, 16, 6), want)


def test_dynamic_threshold_equals_diffusers_for_pixels_and_the_exercise():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1e6)
    x0 = torch.randn(4, 3, 8, 8) * torch.tensor([0.3, 1.0, 3.0, 10.0])[:, None, None, None]
    torch.testing.assert_close(thresholding.dynamic_threshold(x0, 0.995, 1.0), scheduler._threshold_sample(x0))
    torch.testing.assert_close(lesson07.dynamic_threshold(x0, 0.99, 2.0), thresholding.dynamic_threshold(x0, 0.99, 2.0))


def test_thresholded_denoiser_matches_diffusers_ddpm_thresholding():
    # The wrapped eps, stepped by an unthresholded DDPM scheduler, equals diffusers' thresholded step (floor 1).
    from diffusers import DDPMScheduler

    plain, clipped = (DDPMScheduler(thresholding=flag, dynamic_thresholding_ratio=0.9, sample_max_value=1e6)
                      for flag in (False, True))
    z_t, eps, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8) * 1.5, 600
    denoise = thresholding.thresholded_denoiser(lambda x, t, cond: eps, plain, 0.9, 1.0)
    ours = plain.step(denoise(z_t, torch.tensor(t), None), t, z_t, generator=torch.Generator().manual_seed(0))
    want = clipped.step(eps, t, z_t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.prev_sample, want.prev_sample, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_thresholded_denoiser_keeps_the_prediction_type(prediction_type):
    from diffusion_lessons.parameterisation import x0_and_eps
    from diffusion_lessons.schedules import make_schedule

    schedule, t = make_schedule("scaled_linear"), 900
    abar = float(schedule.alphas_cumprod[t])
    x_t, prediction = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8) * 3
    wrapped = thresholding.thresholded_denoiser(lambda x, t, cond: prediction, schedule, 0.99, 2.0, prediction_type)
    x0, _ = x0_and_eps(prediction, x_t, abar, prediction_type)
    x0_new, _ = x0_and_eps(wrapped(x_t, torch.tensor(t), None), x_t, abar, prediction_type)
    torch.testing.assert_close(x0_new, thresholding.dynamic_threshold(x0, 0.99, 2.0), rtol=1e-4, atol=1e-4)


def test_dynamic_threshold_leaves_small_samples_alone_and_rejects_bad_input():
    x0 = torch.rand(2, 4, 8, 8) * 1.8 - 0.9
    assert torch.equal(thresholding.dynamic_threshold(x0, 0.995, 1.0), x0)
    with pytest.raises(ValueError, match="percentile"):
        thresholding.dynamic_threshold(x0, 1.5)
    with pytest.raises(ValueError, match="floor"):
        thresholding.dynamic_threshold(x0, 0.9, 0.0)


def test_guided_steps_without_options_equal_generate_steps_and_rescale_equals_the_pipeline():
    from diffusion_lessons import latents, t2i
    from diffusion_lessons.pretrained import load_pretrained

    pipe = load_pretrained("shapes-t2i", "cpu")
    prompts = ["a red circle on a white background", "a blue square on a black background"]
    ours = list(thresholding.guided_steps(pipe, prompts, 4, 7.5, torch.Generator().manual_seed(0)))[-1]["z_t"]
    base = list(t2i.generate_steps(pipe, prompts, 4, 7.5, torch.Generator().manual_seed(0)))[-1]["z_t"]
    assert torch.equal(ours, base)
    z = list(thresholding.guided_steps(pipe, prompts, 4, 7.5, torch.Generator().manual_seed(0),
                                       guidance_rescale=0.7))[-1]["z_t"]
    with torch.no_grad():
        x = latents.decode(pipe.vae, z).clamp(-1, 1)
    x_pipe = t2i.pipeline_images(pipe, prompts, torch.Generator().manual_seed(0), num_inference_steps=4,
                                 guidance_rescale=0.7)
    torch.testing.assert_close(x, x_pipe, rtol=0, atol=1e-4)
