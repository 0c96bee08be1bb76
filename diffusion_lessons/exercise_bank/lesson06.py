"""Lesson 06's coding exercises: the KL term of a VAE, and the latent scaling factor."""

from __future__ import annotations

import torch

from ..exercises import CodingExercise


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    # KL(N(mu, sigma^2) || N(0, 1)) of every latent value, summed over each image's latent values.
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def scale_latents(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The scaling factor is 1 / std over all the values; the scaled latents have std 1.
    factor = 1 / z.std()
    return z * factor, factor


def _posterior_inputs(g: torch.Generator) -> tuple:
    shape = (int(torch.randint(1, 5, (1,), generator=g)), 4, 8, 8)
    mu = torch.randn(shape, generator=g) * (0.5 + 3 * torch.rand(1, generator=g))
    logvar = torch.rand(shape, generator=g) * 6 - 7          # sigma from about 0.03 to 0.6
    return mu, logvar


def _latent_inputs(g: torch.Generator) -> tuple:
    shape = (int(torch.randint(2, 9, (1,), generator=g)), 4, 8, 8)
    spread = 0.5 + 6 * torch.rand(1, generator=g)            # Stable Diffusion's raw latents: about 5.5
    return (torch.randn(shape, generator=g) * spread + torch.randn(1, generator=g),)


EXERCISES = [
    CodingExercise(
        lesson=6, name="KL per image",
        task="given the posterior's mean mu and log-variance logvar, both (B, 4, h, w), return the KL divergence "
             "KL(q(z | x) || N(0, I)) of each image, a tensor (B,): 1/2 * sum over its latent values of "
             "(mu^2 + sigma^2 - 1 - log sigma^2), with sigma^2 = exp(logvar)",
        signature="kl_per_image(mu, logvar)",
        solution=kl_per_image, make_inputs=_posterior_inputs, rtol=1e-4, atol=1e-3,
        hint="logvar is log sigma^2 already, so sigma^2 = logvar.exp(); sum over dims (1, 2, 3), not over the batch."),
    CodingExercise(
        lesson=6, name="latent scaling factor",
        task="given raw latents z (B, 4, h, w) sampled from the posterior, return (scaled latents, factor): the "
             "factor is 1 / the standard deviation of all the values in z (how Stable Diffusion's 0.18215 was "
             "found), and the scaled latents are z times it",
        signature="scale_latents(z)",
        solution=scale_latents, make_inputs=_latent_inputs,
        hint="one standard deviation over every value: z.std(), not z.std(dim=...); return a tuple of two."),
]
