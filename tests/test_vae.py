"""The lesson-06 VAE: latent shapes, the scaling factor on encode and decode, and (for the shipped
model) the round-trip error on held-out generated images."""

import json

import pytest
import torch

from diffusion_lessons import data, evaluation, latents, models, pretrained

# Stated bound for the shipped VAE: mean squared round-trip error on [-1, 1] images. The feasibility
# run reached about 0.005 (a feasibility run of this recipe); 0.01 leaves room without hiding a broken model.
ROUND_TRIP_MSE_BOUND = 0.01


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def vae():
    return models.build_shapes_vae(seed=0).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return data.make_shapes(6, generator=gen(3)).images


def test_builder_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = models.build_shapes_vae(seed=1), models.build_shapes_vae(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("size", [32, 48])
def test_latent_shape_is_b_4_h_over_f(vae, size):
    x = data.make_shapes(3, image_size=size, generator=gen(0)).images
    f = latents.downsampling_factor(vae)
    assert f == 4
    with torch.no_grad():
        z = latents.encode(vae, x, generator=gen(0))
        assert z.shape == (3, 4, size // f, size // f)
        assert latents.decode(vae, z).shape == x.shape


def test_scaling_factor_applied_on_encode_and_removed_on_decode(images):
    vae = models.build_shapes_vae(seed=0).eval()
    latents.set_scaling_factor(vae, 0.25)
    with torch.no_grad():
        mean = vae.encode(images).latent_dist.mean
        z = latents.encode(vae, images, sample=False)
        assert torch.allclose(z, 0.25 * mean, atol=1e-6)
        assert torch.allclose(latents.decode(vae, z), vae.decode(z / 0.25).sample, atol=1e-6)
        x_quarter = latents.reconstruct(vae, images)
        latents.set_scaling_factor(vae, 4.0)  # the factor cancels in a round trip
        assert torch.allclose(latents.reconstruct(vae, images), x_quarter, atol=1e-5)


def test_sampled_latents_use_the_generator_and_the_posterior_std(vae, images):
    with torch.no_grad():
        a = latents.encode(vae, images, generator=gen(5))
        b = latents.encode(vae, images, generator=gen(5))
        dist = latents.posterior(vae, images)
        eps = torch.randn(dist.mean.shape, generator=gen(5))
    assert torch.equal(a, b)
    assert torch.allclose(a, (dist.mean + dist.std * eps) * vae.config.scaling_factor, atol=1e-6)


def test_computed_scaling_factor_gives_unit_std_latents(images):
    vae = models.build_shapes_vae(seed=0).eval()
    x = data.make_shapes(64, generator=gen(4)).images
    factor = latents.compute_scaling_factor(vae, x, generator=gen(1))
    latents.set_scaling_factor(vae, factor)
    with torch.no_grad():
        z = latents.encode(vae, x, generator=gen(1))
    assert z.std().item() == pytest.approx(1.0, abs=1e-4)


def test_scaling_factor_is_saved_in_the_config(tmp_path, images):
    from diffusers import AutoencoderKL

    vae = models.build_shapes_vae(seed=0)
    latents.set_scaling_factor(vae, 0.7)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["scaling_factor"] == 0.7
    loaded = AutoencoderKL.from_pretrained(tmp_path / "vae", use_safetensors=True)
    assert loaded.config.scaling_factor == 0.7


def test_bad_input(vae):
    with pytest.raises(ValueError, match="x must"):
        latents.encode(vae, torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        latents.encode(vae, torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="z must"):
        latents.decode(vae, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="value must"):
        latents.set_scaling_factor(vae, 0.0)


def shipped_vae():
    try:
        return pretrained.load_pretrained("vae", device="cpu")
    except FileNotFoundError as err:
        pytest.skip(f"shipped VAE absent ({err})")


def test_shipped_vae_round_trip_on_held_out_images():
    vae = shipped_vae()
    record = pretrained.load_recipe("vae")
    held_out = data.make_shapes(200, generator=gen(12345))  # the recipe trains on seed 0, tests on seed 1
    x_hat = latents.reconstruct(vae, held_out.images)
    mse = ((x_hat - held_out.images) ** 2).mean().item()
    assert mse < ROUND_TRIP_MSE_BOUND
    read = evaluation.read_accuracy(evaluation.read_shapes(x_hat), held_out.attributes)
    assert read["all"] >= 0.98
    assert vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    assert vae.config.scaling_factor != 1.0  # computed from data, not diffusers' default
