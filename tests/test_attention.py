"""Cross-attention maps: recording leaves the U-Net's output as diffusers computes it, and the maps are
distributions over the prompt's tokens that follow the trajectory they are replayed on."""

import pytest
import torch

from diffusion_lessons import attention, t2i
from diffusion_lessons.pretrained import ROOT


@pytest.fixture(scope="module")
def pipe():
    return t2i.load_pipeline(ROOT / "shapes-t2i")


def test_recording_changes_nothing_and_restores_the_processors(pipe):
    unet = pipe.unet
    before = {k: type(v).__name__ for k, v in unet.attn_processors.items()}
    gen = torch.Generator().manual_seed(0)
    z, emb = torch.randn((2, 4, 8, 8), generator=gen), torch.randn((2, 20, 64), generator=gen)
    with torch.no_grad():
        expected = unet(z, 500, encoder_hidden_states=emb).sample
        with attention.record_cross_attention(unet) as records:
            got = unet(z, 500, encoder_hidden_states=emb).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    n_cross = sum(k.endswith("attn2.processor") for k in before)
    assert len(records) == n_cross and all(r.shape[0] == 2 and r.shape[-1] == 20 for r in records)
    for r in records:
        torch.testing.assert_close(r.sum(-1), torch.ones(r.shape[:-1]))      # a distribution over the tokens
    assert {k: type(v).__name__ for k, v in unet.attn_processors.items()} == before


def test_trajectory_matches_the_pipeline_and_maps_are_per_token(pipe):
    prompt = "a red circle on a white background"
    run = attention.trajectory(pipe, prompt, torch.Generator().manual_seed(3), num_inference_steps=4)
    direct = t2i.pipeline_images(pipe, [prompt], torch.Generator().manual_seed(3), num_inference_steps=4)
    torch.testing.assert_close(run["image"], direct[0].cpu(), atol=1e-4, rtol=1e-4)
    assert len(run["latents"]) == len(run["timesteps"]) == 4
    maps = attention.word_maps(pipe, prompt, run, size=16)
    labels = attention.token_labels(pipe.tokenizer, prompt)
    assert maps.shape == (len(labels), 16, 16) and labels[:4] == ["[BOS]", "a", "red", "circle"]
    torch.testing.assert_close(maps.sum(0), torch.ones(16, 16), atol=1e-4, rtol=1e-4)
    other = attention.word_maps(pipe, "a blue square on a black background", run, size=16)
    assert not torch.allclose(maps, other)                                 # the words matter


def test_bad_inputs_name_the_argument(pipe):
    with pytest.raises(ValueError, match="unet"):
        with attention.record_cross_attention(torch.nn.Linear(2, 2)):
            pass
    with pytest.raises(ValueError, match="run"):
        attention.word_maps(pipe, "a red circle", {"latents": []})
    with pytest.raises(ValueError, match="prompt"):
        attention.trajectory(pipe, ["a", "b"], None, 2)
