"""Lesson 17's coding exercises: the GAN's two losses from the critic's logits (Goodfellow et al. 2014, the
non-saturating form), the VAE's KL term (Kingma and Welling 2014), and the exact log-likelihood of a one-layer
normalizing flow by the change of variables (Dinh et al. 2017)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..exercises import CodingExercise


def gan_losses_by_hand(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    critic = -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()   # -log D(x) - log(1 - D(G(z)))
    generator = -F.logsigmoid(fake_logits).mean()                                     # non-saturating: -log D(G(z))
    return critic, generator


def gaussian_kl_by_hand(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=1)


def affine_flow_log_likelihood(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    z = (x - shift) / scale                                          # the inverse of x = scale * z + shift
    log_pz = -0.5 * (z ** 2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return log_pz - scale.abs().log().sum()                         # + log |det dz/dx| = - sum log |scale|


def _logit_inputs(g: torch.Generator) -> tuple:
    n = int(torch.randint(2, 40, (1,), generator=g))
    return torch.randn(n, generator=g) * 3 + 1, torch.randn(n, generator=g) * 3 - 1


def _kl_inputs(g: torch.Generator) -> tuple:
    b, d = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def _flow_inputs(g: torch.Generator) -> tuple:
    b, d = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
    sign = torch.where(torch.rand(d, generator=g) < 0.3, -1.0, 1.0)
    return (torch.randn(b, d, generator=g) * 2, sign * (torch.rand(d, generator=g) * 2 + 0.2),
            torch.randn(d, generator=g))


EXERCISES = [
    CodingExercise(
        lesson=17, name="GAN losses",
        task="from the critic's logits on real digits and on generated ones (each a 1-D tensor), return (critic "
             "loss, generator loss): the critic's binary cross-entropy mean(-log sigmoid(real)) + "
             "mean(-log(1 - sigmoid(fake))), and the generator's non-saturating loss mean(-log sigmoid(fake)); "
             "compute them stably (log(1 - sigmoid(a)) = logsigmoid(-a))",
        signature="gan_losses_by_hand(real_logits, fake_logits)",
        solution=gan_losses_by_hand, make_inputs=_logit_inputs,
        hint="F.logsigmoid(a) is log sigmoid(a) without overflow; log(1 - sigmoid(a)) = F.logsigmoid(-a)."),
    CodingExercise(
        lesson=17, name="Gaussian KL",
        task="the VAE's KL term: for q = N(mean, exp(logvar)) per code dimension (mean and logvar (B, D)) and the "
             "prior N(0, 1), return KL(q || prior) summed over the D dimensions, one number per row (B,)",
        signature="gaussian_kl_by_hand(mean, logvar)",
        solution=gaussian_kl_by_hand, make_inputs=_kl_inputs,
        hint="per dimension: (mean^2 + var - 1 - log var) / 2, with var = exp(logvar)."),
    CodingExercise(
        lesson=17, name="affine flow likelihood",
        task="a one-layer normalizing flow draws x = scale * z + shift (element-wise; scale and shift (D,), no "
             "zero in scale) from z ~ N(0, I). Return the exact log-likelihood log p(x) of each row of x (B, D) by "
             "the change of variables: log N(z; 0, I) at z = (x - shift) / scale, plus log |det dz/dx|",
        signature="affine_flow_log_likelihood(x, scale, shift)",
        solution=affine_flow_log_likelihood, make_inputs=_flow_inputs,
        hint="log N(z; 0, I) = -|z|^2 / 2 - (D / 2) log(2 pi); dz/dx is diagonal with entries 1 / scale."),
]
