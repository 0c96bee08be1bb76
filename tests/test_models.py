"""The digits models (lesson 03): diffusers' class-conditional UNet2DModel and the readable TinyUNet."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import get_timestep_embedding

from diffusion_lessons.data import DIGITS_SIZE, NULL_LABEL
from diffusion_lessons.models import (DIGITS_UNET_CONFIG, TinyUNet, build_digits_unet, count_parameters,
                                      predict_eps, timestep_embedding)


def test_digits_unet_is_the_measured_class_conditional_model():
    unet = build_digits_unet()
    assert isinstance(unet, UNet2DModel)
    assert 1.0e6 < count_parameters(unet) < 1.2e6  # about 1.1 M parameters, sized for a CPU
    assert unet.config.num_class_embeds == NULL_LABEL + 1
    assert tuple(unet.config.block_out_channels) == (32, 64, 64) and unet.config.layers_per_block == 1
    x = torch.randn(3, 1, DIGITS_SIZE, DIGITS_SIZE)
    with torch.no_grad():
        out = unet(x, torch.tensor([0, 500, 999]), class_labels=torch.tensor([0, 9, NULL_LABEL])).sample
    assert out.shape == x.shape


def test_digits_unet_builder_is_seeded():
    a, b = build_digits_unet(seed=3), build_digits_unet(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert UNet2DModel(**DIGITS_UNET_CONFIG).config.sample_size == DIGITS_SIZE


@pytest.mark.parametrize("channels", [(32, 64), (16, 32, 64)])
def test_tiny_unet_returns_the_input_shape_and_uses_time_and_label(channels):
    torch.manual_seed(0)
    model = TinyUNet(channels=channels).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        out = model(x, 100, torch.tensor([1, 2]))
        assert out.shape == x.shape
        assert not torch.allclose(out, model(x, 900, torch.tensor([1, 2])))        # time matters
        assert not torch.allclose(out, model(x, 100, torch.tensor([3, 4])))        # the label matters
        assert torch.equal(model(x, 100), model(x, 100, torch.tensor([NULL_LABEL] * 2)))  # None = null label
    assert count_parameters(model) < count_parameters(build_digits_unet())


def test_tiny_unet_every_parameter_learns():
    """Down path, skip connections, up path and embeddings all reach the output."""
    model = TinyUNet()
    model(torch.randn(2, 1, 16, 16), torch.tensor([3, 7]), torch.tensor([0, 5])).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_predict_eps_unwraps_both_models():
    x = torch.randn(2, 1, 16, 16)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        for model in (build_digits_unet(), TinyUNet()):
            assert predict_eps(model, x, torch.tensor(5), labels).shape == x.shape


def test_timestep_embedding_matches_diffusers():
    t = torch.tensor([0, 1, 17, 500, 999])
    for dim in (16, 32, 128):
        ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        torch.testing.assert_close(timestep_embedding(t, dim), ref)
    emb = timestep_embedding(t, 32)
    assert torch.equal(emb[0, :16], torch.ones(16)) and torch.equal(emb[0, 16:], torch.zeros(16))  # t = 0
    with pytest.raises(ValueError, match="dim"):
        timestep_embedding(t, 7)
