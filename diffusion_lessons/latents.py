"""Latents, lesson 06: a VAE squeezes an image into a small latent z, and diffusion runs on z.

Stable Diffusion multiplies the encoder's latents by a scaling factor (0.18215 for its VAE,
1 / std of the latents on its data) so that z has roughly unit variance, like the noise the
diffusion model adds. The factor lives in the VAE's config (vae.config.scaling_factor):

    z = scaling_factor * sample of q(z | x)        (encode)
    x = decoder(z / scaling_factor)                (decode; what StableDiffusionPipeline does)
"""

from __future__ import annotations

import torch

from . import _checks


def _check_vae(vae) -> None:
    config = getattr(vae, "config", None)
    if not isinstance(vae, torch.nn.Module) or not all(hasattr(config, k) for k in
                                                        ("block_out_channels", "latent_channels", "scaling_factor")):
        raise ValueError(f"vae must be a diffusers AutoencoderKL (models.build_shapes_vae), got {type(vae).__name__}")


def downsampling_factor(vae) -> int:
    """Pixels per latent along each side: 2 ** (number of encoder blocks - 1), as in diffusers' pipelines."""
    _check_vae(vae)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _check_images(x: torch.Tensor, vae, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 4:
        raise ValueError(f"{name} must be a float tensor (B, C, H, W) in [-1, 1], got {getattr(x, 'shape', type(x))}")
    f, c = downsampling_factor(vae), vae.config.in_channels
    if x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
        raise ValueError(f"{name} must have {c} channels and a height and width divisible by {f}, "
                         f"got {tuple(x.shape)}")


def posterior(vae, x: torch.Tensor):
    """q(z | x): the encoder's diagonal Gaussian (.mean, .std, .sample(generator), .kl()), unscaled."""
    _check_images(x, vae)
    return vae.encode(x.to(vae.device, vae.dtype)).latent_dist


def encode(vae, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] -> scaled latents (B, 4, H/f, W/f): scaling_factor * z.

    sample=True draws z from q(z | x) (as in training); sample=False takes its mean."""
    _checks.generator(generator)
    _checks.flag(sample, "sample")
    dist = posterior(vae, x)
    if not sample:
        z = dist.mean
    else:
        eps = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
        z = dist.mean + dist.std * eps.to(dist.mean.device)
    return z * vae.config.scaling_factor


def decode(vae, z: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (not clipped): the decoder applied to z / scaling_factor."""
    _check_vae(vae)
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != vae.config.latent_channels:
        raise ValueError(f"z must be a tensor (B, {vae.config.latent_channels}, h, w), "
                         f"got {getattr(z, 'shape', type(z))}")
    return vae.decode(z.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample


@torch.no_grad()
def compute_scaling_factor(vae, images: torch.Tensor, generator: torch.Generator | None = None,
                           batch_size: int = 256) -> float:
    """1 / std of unscaled latents sampled from q(z | x) over `images` (how SD's 0.18215 was found)."""
    batch_size = _checks.integer(batch_size, "batch_size", 1)
    _checks.generator(generator)
    _check_images(images, vae, "images")
    if len(images) * images[0].numel() < 2:
        raise ValueError(f"images must hold more than one pixel value to measure a std, got {tuple(images.shape)}")
    zs = []
    for i in range(0, len(images), batch_size):
        dist = posterior(vae, images[i:i + batch_size])
        eps = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype).to(dist.mean.device)
        zs.append((dist.mean + dist.std * eps).float().cpu())
    return float(1.0 / torch.cat(zs).std())


def set_scaling_factor(vae, value: float) -> None:
    """Store the scaling factor in the VAE's config, so save_pretrained writes it to config.json."""
    _check_vae(vae)
    _checks.number(value, "value", above=0)
    vae.register_to_config(scaling_factor=float(value))


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) with the posterior mean: the VAE's round trip, images in [-1, 1] (clipped)."""
    return decode(vae, encode(vae, x, sample=False)).clamp(-1, 1)
