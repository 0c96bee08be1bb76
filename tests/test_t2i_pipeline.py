"""Lesson 07's StableDiffusionPipeline: it saves and loads with diffusers alone, the hand-written loop
gives the pipeline's images, the package loads it by name, awkward prompts behave as documented.

Untrained parts with the shipped configurations stand in where the shipped model is absent."""

import json
import os

import pytest
import torch

from diffusion_lessons import data, evaluation, models, pretrained, t2i, text

PROMPTS = ["a red circle on a white background", "a small blue square at the top left on a black background"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An untrained pipeline from the book's builders, saved like the recipe saves it."""
    tokenizer = text.build_tokenizer()
    pipe = t2i.assemble_pipeline(models.build_shapes_vae(seed=0), tokenizer,
                                 text.build_text_encoder(tokenizer, seed=0), models.build_shapes_unet(seed=0))
    folder = tmp_path_factory.mktemp("shapes-t2i")
    t2i.save_pipeline(pipe, folder)
    return folder


@pytest.fixture(scope="module")
def pipe(saved):
    from diffusers import StableDiffusionPipeline

    loaded = StableDiffusionPipeline.from_pretrained(saved)  # plain diffusers, no extra arguments
    loaded.set_progress_bar_config(disable=True)
    return loaded


def test_saved_layout(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    files = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert {"vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".ckpt")) for f in files)


def test_pipeline_defaults_make_32x32_images(pipe):
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.vae_scale_factor == 4
    x = t2i.pipeline_images(pipe, PROMPTS[:1], gen(0), num_inference_steps=2)
    assert x.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("guidance_scale", [1.0, 7.5])
def test_hand_written_loop_equals_the_pipeline(pipe, guidance_scale):
    kw = dict(num_inference_steps=4, guidance_scale=guidance_scale, num_images_per_prompt=2)
    ours = t2i.generate(pipe, PROMPTS, generator=gen(11), **kw)
    theirs = t2i.pipeline_images(pipe, PROMPTS, gen(11), **kw)
    assert ours.shape == (4, 3, 32, 32)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_pooled_drawing_hands_the_unet_one_vector_per_caption(pipe):
    """pooled=True: the U-Net cross-attends to the caption's mean token state alone, so the picture equals the one
    drawn with that vector repeated at every position (attention over identical keys returns their value), and
    differs from the token-sequence picture; "" pools to the guidance's unconditional vector."""
    kw = dict(num_inference_steps=3, guidance_scale=4.0, num_images_per_prompt=2)
    pooled = t2i.pipeline_images(pipe, PROMPTS, gen(7), pooled=True, **kw)
    with torch.no_grad():
        one = text.encode_pooled(pipe.tokenizer, pipe.text_encoder, PROMPTS)
        empty = text.encode_pooled(pipe.tokenizer, pipe.text_encoder, ["", ""])
        ids = text.tokenize(pipe.tokenizer, PROMPTS)
        real = ids != text.PAD_ID
        states = pipe.text_encoder(ids)[0]
    torch.testing.assert_close(one[:, 0], torch.stack([s[m].mean(0) for s, m in zip(states, real)]))
    repeated = pipe(prompt_embeds=one.expand(-1, text.MAX_LENGTH, -1), generator=gen(7), output_type="pt",
                    negative_prompt_embeds=empty.expand(-1, text.MAX_LENGTH, -1), **kw).images * 2 - 1
    torch.testing.assert_close(pooled, repeated, atol=1e-4, rtol=0)
    sequence = t2i.pipeline_images(pipe, PROMPTS, gen(7), **kw)
    assert (pooled - sequence).abs().max() > 1e-3


def test_generate_steps_yields_every_step(pipe):
    states = list(t2i.generate_steps(pipe, PROMPTS[0], num_inference_steps=3, generator=gen(0)))
    assert [s["t"] for s in states] == pipe.scheduler.timesteps.tolist()
    assert all(s["z_t"].shape == s["z0_pred"].shape == (1, 4, 8, 8) for s in states)


def test_empty_prompt_is_an_unconditional_sample(pipe):
    # "" has the ids of the guidance's unconditional prompt, so guidance changes nothing
    guided = t2i.generate(pipe, "", num_inference_steps=3, guidance_scale=7.5, generator=gen(3))
    plain = t2i.generate(pipe, "", num_inference_steps=3, guidance_scale=1.0, generator=gen(3))
    torch.testing.assert_close(guided, plain, atol=1e-4, rtol=0)


def test_unknown_words_warn_and_act_as_unk(pipe):
    with pytest.warns(UserWarning, match="unknown words become \\[UNK\\]: 'zebra'"):
        zebra = t2i.generate(pipe, "a red zebra on a white background", num_inference_steps=2, generator=gen(1))
    with pytest.warns(UserWarning, match="'horse'"):
        horse = t2i.generate(pipe, "a red horse on a white background", num_inference_steps=2, generator=gen(1))
    torch.testing.assert_close(zebra, horse, atol=1e-6, rtol=0)


def test_too_long_prompt_warns_and_is_cut(pipe):
    long = PROMPTS[1] + " a large red circle in the center on a white background"  # 23 words
    with pytest.warns(UserWarning, match="23 words but only 18 fit; dropped: 'center on a white background'"):
        cut = t2i.generate(pipe, long, num_inference_steps=2, generator=gen(2))
    kept = " ".join(long.split()[:18])
    torch.testing.assert_close(cut, t2i.generate(pipe, kept, num_inference_steps=2, generator=gen(2)))


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="prompt must be"):
        t2i.generate(pipe, 42)
    with pytest.raises(ValueError, match="prompt must be"):
        t2i.generate(pipe, [])
    with pytest.raises(ValueError, match="num_inference_steps"):
        t2i.generate(pipe, "a red circle", num_inference_steps=0)


def with_scheduler(pipe, scheduler):
    return t2i.assemble_pipeline(pipe.vae, pipe.tokenizer, pipe.text_encoder, pipe.unet, scheduler)


@pytest.mark.parametrize("variant", ["ddpm", "v_prediction"])
def test_the_one_loop_follows_the_pipelines_scheduler(pipe, variant):
    """DDPMScheduler, and a v-prediction DDIMScheduler: t2i's loop (the digits' loop) still equals the pipeline."""
    from diffusers import DDIMScheduler, DDPMScheduler

    config = dict(pipe.scheduler.config)
    if variant == "ddpm":
        other = with_scheduler(pipe, DDPMScheduler.from_config(config, clip_sample=False))
    else:
        other = with_scheduler(pipe, DDIMScheduler.from_config(config, prediction_type="v_prediction"))
    kw = dict(num_inference_steps=4, guidance_scale=5.0, num_images_per_prompt=1)
    torch.testing.assert_close(t2i.generate(other, PROMPTS, generator=gen(4), **kw),
                               t2i.pipeline_images(other, PROMPTS, gen(4), **kw), atol=2e-5, rtol=0)


def test_scales_below_1_follow_lesson_05_not_diffusers_switch(pipe):
    """The package's rule at every s: s = 0 is the empty prompt's sample. diffusers' pipeline switches guidance
    off for s <= 1, so its s = 0.5 is its s = 1; the package's s = 0.5 lies between its s = 0 and s = 1."""
    def run(prompt, s):
        return t2i.generate(pipe, prompt, num_inference_steps=3, guidance_scale=s, generator=gen(5))

    torch.testing.assert_close(run(PROMPTS[0], 0.0), run("", 1.0), atol=1e-6, rtol=0)
    half, one, zero = run(PROMPTS[0], 0.5), run(PROMPTS[0], 1.0), run(PROMPTS[0], 0.0)
    assert (half - one).abs().max() > 1e-3 and (half - zero).abs().max() > 1e-3
    theirs = [t2i.pipeline_images(pipe, PROMPTS[:1], gen(5), num_inference_steps=3, guidance_scale=s) for s in (0.5, 1)]
    torch.testing.assert_close(theirs[0], theirs[1])
    torch.testing.assert_close(one, theirs[1], atol=2e-5, rtol=0)


def test_other_schedulers_and_scales_are_refused(pipe):
    from diffusers import EulerDiscreteScheduler

    euler = with_scheduler(pipe, EulerDiscreteScheduler.from_config(pipe.scheduler.config))
    with pytest.raises(ValueError, match="pipe.scheduler must be a DDIMScheduler or a DDPMScheduler"):
        t2i.generate(euler, PROMPTS[0], num_inference_steps=2)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        t2i.generate(pipe, PROMPTS[0], num_inference_steps=2, guidance_scale=-1.0)


def test_load_pretrained_by_name_with_this_layout(saved, monkeypatch):
    import shutil

    root = saved.parent / "root"
    if not root.exists():
        shutil.copytree(saved, root / "shapes-t2i")
        pretrained.write_manifest(root / "shapes-t2i")     # as a recipe writes it: loading checks it
    monkeypatch.setattr(pretrained, "ROOT", root)
    vae = pretrained.load_pretrained("vae", device="cpu")
    tokenizer, encoder = pretrained.load_pretrained("text", device="cpu")
    pipe = pretrained.load_pretrained("shapes-t2i", device="cpu")
    assert type(vae).__name__ == "AutoencoderKL" and type(encoder).__name__ == "CLIPTextModel"
    assert tokenizer("a red circle").input_ids[0] == text.BOS_ID
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def shipped_pipeline():
    try:
        folder = pretrained.pretrained_path("shapes-t2i")
    except FileNotFoundError as err:
        pytest.skip(f"shipped text-to-image model absent ({err})")
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"{folder} holds no pipeline yet: run python -m diffusion_lessons.train shapes-t2i")
    return folder


def test_shipped_pipeline_loads_offline_and_follows_prompts(monkeypatch):
    from diffusers import StableDiffusionPipeline

    folder = shipped_pipeline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    prompts = data.shape_prompts()[::4]  # 6 of the 24, both backgrounds, all shapes and colors
    x = t2i.pipeline_images(pipe, prompts, gen(0), num_inference_steps=25)
    torch.testing.assert_close(t2i.generate(pipe, prompts, 25, generator=gen(0)), x, atol=2e-5, rtol=0)
    acc = evaluation.prompt_adherence(x, prompts)
    assert acc["background"] == 1.0 and acc["color"] >= 5 / 6 and acc["shape"] >= 4 / 6


def test_shipped_recipe_record():
    shipped_pipeline()
    record = pretrained.load_recipe("shapes-t2i")
    for key in ("data", "seed", "steps", "batch_size", "lr", "wall_seconds", "hardware", "torch", "diffusers",
                "final_loss", "quality"):
        assert key in record, key
    size = sum(f.stat().st_size for f in pretrained.ROOT.joinpath("shapes-t2i").rglob("*") if f.is_file())
    assert size < 25 * 2**20, f"shipped files take {size / 2**20:.1f} MB"
    assert os.path.isfile(pretrained.ROOT / "shapes-t2i" / "recipe-vae.json")
