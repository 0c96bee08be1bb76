"""The shipped scenes models of lesson 15 load with plain diffusers, share one VAE, and were measured."""

import json

import pytest
import torch

from diffusion_lessons import scenes
from diffusion_lessons.pretrained import ROOT, verify_manifest
from diffusion_lessons.recipes import scenes as scenes_recipe

FOLDERS = {"bidirectional": "scenes-t2i", "causal": "scenes-t2i-causal"}


@pytest.fixture(scope="module")
def pipes():
    from diffusers import StableDiffusionPipeline

    return {k: StableDiffusionPipeline.from_pretrained(ROOT / f, use_safetensors=True, local_files_only=True,
                                                       safety_checker=None, requires_safety_checker=False)
            for k, f in FOLDERS.items()}


def test_folders_share_one_vae_and_hold_their_encoders(pipes):
    for folder in FOLDERS.values():
        verify_manifest(ROOT / folder)
    assert not (ROOT / "scenes-t2i" / "vae").is_symlink()
    assert (ROOT / "scenes-t2i-causal" / "vae").is_symlink()
    assert (ROOT / "scenes-t2i-causal" / "vae").resolve() == (ROOT / "scenes-t2i" / "vae").resolve()
    assert type(pipes["bidirectional"].text_encoder).__name__ == "T5EncoderModel"
    assert type(pipes["causal"].text_encoder).__name__ == "CLIPTextModel"
    for k, folder in FOLDERS.items():
        record = json.loads((ROOT / folder / "recipe.json").read_text())
        assert record["encoder"] == k and record["wall_time_s"] <= 45 * 60
    a, b = (json.loads((ROOT / f / "recipe.json").read_text()) for f in FOLDERS.values())
    assert a["steps"] == b["steps"] and a["batch_size"] == b["batch_size"] and a["seed"] == b["seed"]


def test_tokenizer_takes_every_caption_as_a_plain_string(pipes):
    tok = pipes["bidirectional"].tokenizer
    data = scenes.make_scenes(40, generator=torch.Generator().manual_seed(1))
    for caption in data.captions:
        ids = tok(caption, padding="max_length", max_length=tok.model_max_length).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == caption


def test_the_pipelines_draw_scenes_of_the_worlds_size(pipes):
    out = pipes["causal"](["two red circles on a white background"], num_inference_steps=2, output_type="pt",
                          generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, scenes.SIZE, scenes.SIZE)


def test_records_agree_with_their_own_verdicts():
    for folder in FOLDERS.values():
        found = json.loads((ROOT / folder / "measurements.json").read_text())
        n = found["settings"]["prompts_per_kind"]
        for kind in scenes.KINDS:
            right = found["main"][kind]["right"]
            assert right["n"] == (n // 2 if kind == "single" else n) >= 32
            assert abs(sum(right["each"]) / right["n"] - right["value"]) < 1e-3
            assert found["main"][kind]["captions"] == [s.caption for s in scenes_recipe.test_scenes(
                kind, right["n"], 0)]
        for kind in ("binding", "relation"):
            reworded = found["reworded"][kind]
            assert reworded["captions"] == [scenes.reworded(s).caption for s in scenes_recipe.test_scenes(kind, n, 0)]
        assert found["guidance"][str(scenes_recipe.GUIDANCE)]["binding"]["value"] == \
            found["main"]["binding"]["right"]["value"]


def test_the_pooled_model_is_drawn_only_the_pooled_way():
    """scenes-t2i-pooled, loaded by the book, refuses plain prompts (it would read a token sequence it never saw)
    and draws with pooled=True; the sequence model is not marked."""
    from diffusion_lessons import t2i

    pooled = t2i.load_pipeline(ROOT / "scenes-t2i-pooled")
    assert pooled.caption_conditioning == "pooled"
    with pytest.raises(ValueError, match="pooled must be True"):
        t2i.pipeline_images(pooled, ["a red circle on a white background"], num_inference_steps=2)
    out = t2i.pipeline_images(pooled, ["a red circle on a white background"], torch.Generator().manual_seed(0),
                              num_inference_steps=2, pooled=True)
    assert out.shape == (1, 3, scenes.SIZE, scenes.SIZE)
    with pytest.raises(ValueError, match="pipe was trained on one pooled"):      # the package's own loop too
        t2i.generate(pooled, "a red circle on a white background", num_inference_steps=2)
    assert t2i.load_pipeline(ROOT / "scenes-t2i").caption_conditioning == "sequence"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_recipe_loss_is_the_mse_to_diffusers_target(prediction_type):
    """shapes_t2i.loss_fn (every scenes and signs recipe's loss): the MSE between the U-Net's output on
    diffusers' noisy latents at the batch's timesteps and eps, or v as the scheduler's get_velocity defines it."""
    from types import SimpleNamespace

    from diffusers import DDIMScheduler

    from diffusion_lessons import t2i
    from diffusion_lessons.recipes import shapes_t2i
    from diffusion_lessons.schedules import make_schedule

    g = torch.Generator().manual_seed(0)
    z0, eps, out = (torch.randn(3, 4, 16, 16, generator=g) for _ in range(3))
    t, seen = torch.tensor([5, 500, 961]), {}

    def unet(x, timesteps, encoder_hidden_states):
        seen.update(x=x, t=timesteps)
        return SimpleNamespace(sample=out)

    trained = dict(unet=unet, text_encoder=lambda ids: (torch.zeros(len(ids), 2, 64),))
    batch = dict(z0=z0, eps=eps, t=t, ids=torch.zeros(3, 2, dtype=torch.long))
    loss = shapes_t2i.loss_fn(trained, make_schedule(shapes_t2i.NOISE_SCHEDULE), batch,
                              prediction_type=prediction_type)
    scheduler = t2i.build_scheduler()
    assert isinstance(scheduler, DDIMScheduler)
    target = eps if prediction_type == "epsilon" else scheduler.get_velocity(z0, eps, t)
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(out, target))
    torch.testing.assert_close(seen["x"], scheduler.add_noise(z0, eps, t))
    assert torch.equal(seen["t"], t)


def test_the_shipped_scenes_models_say_what_their_unet_predicts():
    """Every shipped scenes model was trained to predict v, and its scheduler (what plain diffusers reads) says so."""
    for folder in ("scenes-t2i", "scenes-t2i-causal", "scenes-t2i-w256", "scenes-t2i-pooled"):
        record = json.loads((ROOT / folder / "recipe.json").read_text())
        saved = json.loads((ROOT / folder / "scheduler" / "scheduler_config.json").read_text())
        assert record["prediction_type"] == saved["prediction_type"] == "v_prediction", folder
        assert "--prediction-type v_prediction" in record["command"], folder
