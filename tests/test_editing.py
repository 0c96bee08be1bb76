"""Lesson 11's editing by partial noising (diffusion_lessons.editing): img2img written out, checked against
diffusers' StableDiffusionImg2ImgPipeline built from the shipped text-to-image model's parts."""

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from diffusion_lessons import data, editing, t2i
from diffusion_lessons.pretrained import ROOT

PROMPT = "a blue square on a white background"


@pytest.fixture(scope="module")
def pipe():
    return t2i.load_pipeline(ROOT / "shapes-t2i", "cpu")


@pytest.fixture(scope="module")
def picture():
    return data.make_shapes(1, 32, generator=torch.Generator().manual_seed(0)).images


def diffusers_img2img(pipe, picture, strength, steps=10, scale=5.0, seed=3):
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    out = i2i(PROMPT, image=(picture + 1) / 2, strength=strength, num_inference_steps=steps, guidance_scale=scale,
              generator=torch.Generator().manual_seed(seed), output_type="pt")
    return out.images * 2 - 1


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_img2img_equals_the_diffusers_pipeline(pipe, picture, strength):
    ours = editing.img2img(pipe, picture, PROMPT, strength, 10, 5.0, torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, diffusers_img2img(pipe, picture, strength), atol=1e-4, rtol=0)


def test_timesteps_are_the_pipelines(pipe):
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    for steps, strength in ((10, 0.3), (20, 0.55), (7, 1.0)):
        i2i.scheduler.set_timesteps(steps)
        want, kept = i2i.get_timesteps(steps, strength, "cpu")
        got = editing.img2img_timesteps(pipe.scheduler, steps, strength)
        assert got == want.tolist() and len(got) == kept == int(steps * strength)


def test_low_strength_keeps_the_picture(pipe, picture):
    """A little noise and a few steps return nearly the input; strength 1 forgets it (the prompt's square)."""
    def change(strength):
        out = editing.img2img(pipe, picture, PROMPT, strength, 10, 5.0, torch.Generator().manual_seed(3))
        return (out - picture).abs().mean().item()

    assert change(0.2) < change(1.0) / 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(strength=0.0), "strength"), (dict(strength=1.5), "strength"),
    (dict(strength=0.05, num_inference_steps=10), "strength"),
    (dict(image=torch.zeros(1, 3, 16, 16)), "image"), (dict(image=torch.zeros(2, 3, 32, 32)), "image"),
    (dict(prompt=3), "prompt"),
])
def test_bad_inputs_name_the_argument(pipe, picture, kwargs, match):
    args = dict(image=picture, prompt=PROMPT, strength=0.5, num_inference_steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        editing.img2img(pipe, **args)


def test_ddim_inversion_equals_diffusers_inverse_scheduler(pipe, picture):
    from diffusers import DDIMInverseScheduler

    from diffusion_lessons import latents, text

    ours = editing.ddim_invert(pipe, picture, PROMPT, 10)
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=False)
    inverse.set_timesteps(10)
    with torch.no_grad():
        z = latents.encode(pipe.vae, picture, sample=False)
        emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [PROMPT])
        for t in inverse.timesteps:
            z = inverse.step(pipe.unet(z, t, encoder_hidden_states=emb).sample, t, z).prev_sample
    torch.testing.assert_close(ours, z, atol=1e-5, rtol=0)


def test_sampling_the_inverted_noise_gives_the_picture_back(pipe):
    pics = data.make_shapes(4, caption_style="plain", generator=torch.Generator().manual_seed(2))
    back = editing.sample_from(pipe, editing.ddim_invert(pipe, pics.images, pics.captions, 20), pics.captions, 20)
    noise = editing.sample_from(pipe, torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
                                pics.captions, 20)
    err = lambda x: float((x - pics.images).abs().mean())  # noqa: E731
    assert err(back) < 0.1 and err(back) < err(noise) / 3
