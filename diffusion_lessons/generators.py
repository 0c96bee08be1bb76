"""Lesson 17's other generators on digits: a class-conditional GAN and a class-conditional VAE.

Both draw a digit in ONE network evaluation, from a code z ~ N(0, I) and a label, with the same network:
DigitsGenerator (DCGAN-style, Radford et al. 2016: a linear layer to 256x4x4, two stride-2 transposed
convolutions to 16x16, tanh; GroupNorm instead of BatchNorm so no running statistics are kept), sized to
the digits U-Net (about 1.05 M parameters against its 1.06 M). What differs is how it is trained:

- GAN (Goodfellow et al. 2014): a DigitsCritic (convolutions, then a projection on the label, Miyato &
  Koyama 2018) learns to tell real digits from generated ones; the generator learns to fool it, with the
  non-saturating loss. gan_losses gives both; gan_loss_fn trains both with ONE optimizer in the book's one
  loop (training.train_loop): the critic's loss sees the fake digits detached, and the generator's loss
  sees the critic through a detached copy of its weights, so each network gets only its own gradient and
  both are updated together (simultaneous gradient steps).
- VAE (Kingma & Welling 2014): a DigitsEncoder gives q(z | x, label); the generator decodes; the loss is the
  reconstruction error (a Gaussian likelihood with standard deviation VAE_SIGMA) plus the KL divergence to
  the prior N(0, I). Sampling decodes z drawn from the prior.

Both are diffusers models (ModelMixin, ConfigMixin): save_pretrained / from_pretrained, safetensors.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

from . import _checks
from .data import DIGITS_SIZE, NUM_DIGIT_CLASSES

__all__ = ["Z_DIM", "VAE_SIGMA", "DigitsGenerator", "DigitsCritic", "DigitsEncoder", "GanPair", "DigitsVAE",
           "gan_losses", "gan_loss_fn", "vae_loss", "vae_loss_fn", "generate"]

Z_DIM = 64          # the code each sample starts from
VAE_SIGMA = 0.2     # the VAE's likelihood: x ~ N(decoder(z), VAE_SIGMA^2) per pixel, in the [-1, 1] scale


def _check_sizes(multiple: int = 2, **sizes) -> None:
    """Every size an int >= 1; channels a multiple of `multiple` (the networks halve or quarter it)."""
    for name, value in sizes.items():
        _checks.integer(value, name, 1)
    if sizes.get("channels", 0) % multiple:
        raise ValueError(f"channels must be a multiple of {multiple}, got {sizes['channels']}")


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


class DigitsGenerator(ModelMixin, ConfigMixin):
    """(z, label) -> a 16x16 digit in [-1, 1]: DCGAN's generator, class-conditional by a label embedding."""

    @register_to_config
    def __init__(self, z_dim: int = Z_DIM, label_dim: int = 32, channels: int = 256,
                 num_classes: int = NUM_DIGIT_CLASSES, sample_size: int = DIGITS_SIZE):
        super().__init__()
        if sample_size != 16:
            raise ValueError(f"sample_size must be 16 (4x4 upsampled twice), got {sample_size}")
        _check_sizes(32, z_dim=z_dim, label_dim=label_dim, channels=channels, num_classes=num_classes)  # GroupNorm(8)
        self.embed = nn.Embedding(num_classes, label_dim)
        self.project = nn.Linear(z_dim + label_dim, channels * 16)
        self.body = nn.Sequential(
            _gn(channels), nn.ReLU(),
            nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1), _gn(channels // 2), nn.ReLU(),        # 8x8
            nn.ConvTranspose2d(channels // 2, channels // 4, 4, 2, 1), _gn(channels // 4), nn.ReLU(),   # 16x16
            nn.Conv2d(channels // 4, 1, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(labels)], dim=1))
        return self.body(h.view(z.shape[0], self.config.channels, 4, 4))


def _features(channels: int) -> nn.Sequential:
    """16x16x1 -> (channels * 2) x 4 x 4 features by strided convolutions with leaky ReLUs (no normalisation)."""
    return nn.Sequential(
        nn.Conv2d(1, channels // 2, 4, 2, 1), nn.LeakyReLU(0.2),                 # 8x8
        nn.Conv2d(channels // 2, channels, 4, 2, 1), nn.LeakyReLU(0.2),          # 4x4
        nn.Conv2d(channels, channels * 2, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten())


class DigitsCritic(ModelMixin, ConfigMixin):
    """(image, label) -> one logit, real (> 0) or generated: convolutions, then a linear read-out plus a
    projection on the label's embedding (Miyato & Koyama 2018)."""

    @register_to_config
    def __init__(self, channels: int = 128, num_classes: int = NUM_DIGIT_CLASSES):
        super().__init__()
        _check_sizes(channels=channels, num_classes=num_classes)
        self.features = _features(channels)
        self.out = nn.Linear(channels * 2 * 16, 1)
        self.embed = nn.Embedding(num_classes, channels * 2 * 16)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.out(h).squeeze(1) + (self.embed(labels) * h).sum(1)


class DigitsEncoder(ModelMixin, ConfigMixin):
    """(image, label) -> (mean, log-variance) of q(z | x, label), each (batch, z_dim)."""

    @register_to_config
    def __init__(self, z_dim: int = Z_DIM, channels: int = 128, num_classes: int = NUM_DIGIT_CLASSES):
        super().__init__()
        _check_sizes(z_dim=z_dim, channels=channels, num_classes=num_classes)
        self.features = _features(channels)
        self.embed = nn.Embedding(num_classes, 32)
        self.out = nn.Linear(channels * 2 * 16 + 32, 2 * z_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.out(torch.cat([self.features(x), self.embed(labels)], dim=1)).chunk(2, dim=1)
        return mean, logvar.clamp(-12, 6)


class GanPair(nn.Module):
    """The generator and the critic as one module: what train_loop trains with one optimizer."""

    def __init__(self, generator: DigitsGenerator, critic: DigitsCritic):
        super().__init__()
        if not isinstance(generator, DigitsGenerator):
            raise ValueError(f"generator must be a DigitsGenerator, got {type(generator).__name__}")
        if not isinstance(critic, DigitsCritic):
            raise ValueError(f"critic must be a DigitsCritic, got {type(critic).__name__}")
        self.generator, self.critic = generator, critic


class DigitsVAE(nn.Module):
    """The encoder and the decoder (a DigitsGenerator) as one module: what train_loop trains."""

    def __init__(self, encoder: DigitsEncoder, decoder: DigitsGenerator):
        super().__init__()
        if not isinstance(encoder, DigitsEncoder):
            raise ValueError(f"encoder must be a DigitsEncoder, got {type(encoder).__name__}")
        if not isinstance(decoder, DigitsGenerator):
            raise ValueError(f"decoder must be a DigitsGenerator, got {type(decoder).__name__}")
        self.encoder, self.decoder = encoder, decoder


def _check_batch(x: torch.Tensor, labels: torch.Tensor, z: torch.Tensor, z_name: str = "z") -> None:
    _checks.tensor(x, "x", floating=True, ndim=4)
    if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({x.shape[0]},), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != x.shape[0]:
        raise ValueError(f"{z_name} must have shape ({x.shape[0]}, z_dim), got "
                         f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")


def _check_module(value, name: str, cls) -> None:
    if not isinstance(value, cls):
        raise ValueError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


def gan_losses(pair: GanPair, x: torch.Tensor, labels: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """(critic loss, generator loss) on real digits x with their labels and codes z for as many fakes:
    critic: softplus(-D(x)) + softplus(D(G(z))) (binary cross-entropy, real = 1, fake = 0), with G(z) detached;
    generator: softplus(-D(G(z))) (the non-saturating loss), through a detached copy of the critic's weights."""
    _check_module(pair, "pair", GanPair)
    _check_batch(x, labels, z)
    fake = pair.generator(z, labels)
    critic_loss = F.softplus(-pair.critic(x, labels)).mean() + F.softplus(pair.critic(fake.detach(), labels)).mean()
    frozen = {name: p.detach() for name, p in pair.critic.named_parameters()}
    generator_loss = F.softplus(-torch.func.functional_call(pair.critic, frozen, (fake, labels))).mean()
    return critic_loss, generator_loss


def gan_loss_fn(pair: GanPair):
    """loss_fn for train_loop on batches {'x0', 'labels', 'z'}: critic loss + generator loss (gan_losses), whose
    gradient is the critic's loss's for the critic and the generator's loss's for the generator."""
    _check_module(pair, "pair", GanPair)

    def loss_fn(batch: dict) -> torch.Tensor:
        critic_loss, generator_loss = gan_losses(pair, batch["x0"], batch["labels"], batch["z"])
        return critic_loss + generator_loss

    return loss_fn


def vae_loss(vae: DigitsVAE, x: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor,
             sigma: float = VAE_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL), each summed over a digit and averaged over the batch: z = mean + exp(logvar / 2)
    eps; reconstruction = |x - decoder(z)|^2 / (2 sigma^2); KL(q || N(0, I)) = (mean^2 + var - 1 - logvar) / 2."""
    _check_module(vae, "vae", DigitsVAE)
    _check_batch(x, labels, eps, "eps")
    _checks.number(sigma, "sigma", above=0)
    mean, logvar = vae.encoder(x, labels)
    recon = vae.decoder(mean + (0.5 * logvar).exp() * eps, labels)
    reconstruction = ((x - recon) ** 2).flatten(1).sum(1).mean() / (2 * sigma ** 2)
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
    return reconstruction, kl


def vae_loss_fn(vae: DigitsVAE):
    """loss_fn for train_loop on batches {'x0', 'labels', 'z'} (z: the reparameterisation noise): the negative
    evidence lower bound per digit, reconstruction + KL (vae_loss), in nats up to a constant."""
    _check_module(vae, "vae", DigitsVAE)

    def loss_fn(batch: dict) -> torch.Tensor:
        reconstruction, kl = vae_loss(vae, batch["x0"], batch["labels"], batch["z"])
        return reconstruction + kl

    return loss_fn


def batch_fn(x0: torch.Tensor, labels: torch.Tensor, batch_size: int, z_dim: int = Z_DIM):
    """batch_fn for train_loop: rows of (x0, labels) drawn with replacement and a code z ~ N(0, I) per row."""
    def draw(generator: torch.Generator) -> dict:
        idx = torch.randint(0, x0.shape[0], (batch_size,), generator=generator)
        return dict(x0=x0[idx], labels=labels[idx], z=torch.randn(batch_size, z_dim, generator=generator))

    return draw


@torch.no_grad()
def generate(generator_net: DigitsGenerator, labels, generator: torch.Generator | None = None) -> torch.Tensor:
    """One digit per label from the GAN's generator or the VAE's decoder: z ~ N(0, I) drawn on the CPU
    generator, one network evaluation, clamped to [-1, 1]."""
    if not isinstance(generator_net, DigitsGenerator):
        raise ValueError(f"generator_net must be a DigitsGenerator (the GAN's generator or the VAE's decoder), "
                         f"got {type(generator_net).__name__}")
    labels = _checks.labels(labels, "labels", generator_net.config.num_classes, allow_empty=False)
    _checks.generator(generator)
    z = torch.randn(labels.shape[0], generator_net.config.z_dim, generator=generator)
    device = next(generator_net.parameters()).device
    return generator_net(z.to(device), labels.to(device)).clamp(-1, 1).cpu()
