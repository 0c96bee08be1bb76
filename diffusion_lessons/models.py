"""Model builders: small diffusers models sized for a CPU, and a U-Net small enough to read.

Lesson 03 (digits UNet2DModel, the readable TinyUNet); lessons 06-07 (AutoencoderKL,
UNet2DConditionModel).
"""

from __future__ import annotations

# ---- digits: class-conditional UNet2DModel and the readable U-Net (lessons 03-05) ----
import math

import torch
from torch import nn
from torch.nn import functional as F

from . import _checks
from .data import DIGITS_SIZE, NULL_LABEL, NUM_DIGIT_CLASSES

DIGITS_UNET_CONFIG = dict(
    sample_size=DIGITS_SIZE, in_channels=1, out_channels=1,
    block_out_channels=(32, 64, 64),          # 16x16 -> 8x8 -> 4x4
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    add_attention=True,                        # the one attention block: in the middle, at 4x4
    num_class_embeds=NUM_DIGIT_CLASSES + 1,    # labels 0..9 and NULL_LABEL = 10
)


def build_digits_unet(seed: int | None = 0) -> "UNet2DModel":  # noqa: F821
    """The class-conditional diffusers UNet2DModel of lessons 03-05 (about 1.06 M parameters):
    16x16x1 digits, labels 0-9 plus NULL_LABEL (10) for the unconditional prediction."""
    from diffusers import UNet2DModel

    seed = _checks.optional_seed(seed)
    if seed is None:   # no seed: the weights come from torch's global generator, as any torch module's do
        return UNet2DModel(**DIGITS_UNET_CONFIG)
    with torch.random.fork_rng(devices=[]):   # seeded without touching the global generator
        torch.manual_seed(seed)
        return UNet2DModel(**DIGITS_UNET_CONFIG)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (learned numbers) in a model, frozen or not."""
    _checks.module(model)
    return sum(p.numel() for p in model.parameters())


def predict_eps(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor | int,
                class_labels: torch.Tensor | None) -> torch.Tensor:
    """eps_theta(x_t, t, label) from a UNet2DModel (unwraps .sample) or a TinyUNet (plain tensor)."""
    _checks.module(model)
    _checks.tensor(x_t, "x_t", floating=True)
    out = model(x_t, t, class_labels=class_labels)
    return out.sample if hasattr(out, "sample") else out


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Transformer; DDPM): [cos(t w_i), sin(t w_i)], w_i = max_period^(-i / (dim/2)).
    Same numbers as diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)."""
    _checks.tensor(t, "t")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2, got {dim!r}")
    _checks.number(max_period, "max_period", above=1)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1).float()[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the (time + class) embedding added in between, plus a skip path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        for value, name in ((c_in, "c_in"), (c_out, "c_out")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
                raise ValueError(f"{name} must be a positive multiple of 8 (GroupNorm's 8 groups), got {value!r}")
        _checks.integer(emb_dim, "emb_dim", 1)
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]      # every channel learns where in time we are
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class TinyUNet(nn.Module):
    """A U-Net to read in one sitting (lesson 03). Down path (ResBlock, then halve the size),
    a middle block, up path (concatenate the skip from the same size, ResBlock, then double).
    Call it like UNet2DModel: model(x_t, t, class_labels) -> eps of x_t's shape (a plain tensor)."""

    def __init__(self, channels: tuple[int, ...] = (32, 64), in_channels: int = 1,
                 num_class_embeds: int = NUM_DIGIT_CLASSES + 1, sample_size: int = DIGITS_SIZE):
        if not isinstance(channels, (tuple, list)) or not channels or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 8 or c % 8 for c in channels):
            raise ValueError(f"channels must be a non-empty tuple of positive multiples of 8 (GroupNorm's 8 groups), "
                             f"got {channels!r}")
        in_channels = _checks.integer(in_channels, "in_channels", 1)
        _checks.integer(num_class_embeds, "num_class_embeds", NULL_LABEL + 1)
        sample_size = _checks.integer(sample_size, "sample_size", 1)
        if sample_size % 2 ** (len(channels) - 1):
            raise ValueError(f"sample_size must be divisible by {2 ** (len(channels) - 1)} (it halves at every level "
                             f"but the last), got {sample_size}")
        super().__init__()
        self.in_channels, self.sample_size, self.t_dim = in_channels, sample_size, channels[0]
        emb_dim = 4 * channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_class_embeds, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        last = len(channels) - 1
        c_prev, self.down, self.downsample = channels[0], nn.ModuleList(), nn.ModuleList()
        for i, c in enumerate(channels):   # size halves after every level but the last
            self.down.append(ResBlock(c_prev, c, emb_dim))
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < last else nn.Identity())
            c_prev = c
        self.mid = ResBlock(c_prev, c_prev, emb_dim)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels))):  # input: the path so far + the skip of the same size
            self.up.append(ResBlock(c_prev + channels[i], channels[i], emb_dim))
            self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(channels[i], channels[i], 3,
                                 padding=1)) if i > 0 else nn.Identity())
            c_prev = channels[i]
        self.conv_out = nn.Sequential(nn.GroupNorm(8, channels[0]), nn.SiLU(),
                                      nn.Conv2d(channels[0], in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, class_labels: torch.Tensor | None = None):
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        if class_labels is None:  # no label given: the unconditional (null) class
            class_labels = torch.full((x.shape[0],), NULL_LABEL, device=x.device)
        emb = self.time_mlp(timestep_embedding(t, self.t_dim).to(x.dtype)) + self.class_emb(class_labels)
        h, skips = self.conv_in(x), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)                 # kept for the up path: the fine detail of this size
            h = down(h)
        h = self.mid(h, emb)
        for block, up in zip(self.up, self.upsample):
            h = up(block(torch.cat([h, skips.pop()], dim=1), emb))
        return self.conv_out(h)

# ---- latents and text: AutoencoderKL and UNet2DConditionModel (lessons 06-07) ----

SHAPES_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, sample_size=32, latent_channels=4,
    block_out_channels=(32, 64, 64),          # 32x32 -> 16x16 -> 8x8: downsampling factor 4
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1, norm_num_groups=32,
)
SHAPES_UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4,    # 4x8x8 latents = a 32x32 image through the VAE
    block_out_channels=(64, 128),                   # 8x8 -> 4x4
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),  # cross-attention to the words at 8x8
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),        # ... and in the middle block at 4x4
    layers_per_block=1, cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
)


def build_shapes_vae(seed: int | None = 0) -> "AutoencoderKL":  # noqa: F821
    """The diffusers AutoencoderKL of lesson 06 (about 0.95 M parameters): 3x32x32 <-> 4x8x8."""
    from diffusers import AutoencoderKL

    seed = _checks.optional_seed(seed)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return AutoencoderKL(**SHAPES_VAE_CONFIG)


SIGNS_VAE_CONFIG = dict(SHAPES_VAE_CONFIG, sample_size=64)   # 3x32x64 <-> 4x8x16, the lesson-06 VAE's shape
SIGNS_UNET_CONFIG = dict(
    SHAPES_UNET_CONFIG, sample_size=(8, 16),        # 4x8x16 latents = a 32x64 sign through the VAE
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),  # cross-attention to the letters at
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),        # 8x16 and 4x8 (and the middle)
)


def build_signs_vae(seed: int | None = 0) -> "AutoencoderKL":  # noqa: F821
    """The lesson-06 AutoencoderKL's architecture for the 32x64 signs of lesson 14 (3x32x64 <-> 4x8x16)."""
    return _seeded("AutoencoderKL", SIGNS_VAE_CONFIG, seed)


def build_signs_unet(seed: int | None = 0) -> "UNet2DConditionModel":  # noqa: F821
    """The lesson-14 UNet2DConditionModel (about 4.2 M parameters): cross-attention at both resolutions,
    4x8x16 latents, 64-wide text embeddings."""
    return _seeded("UNet2DConditionModel", SIGNS_UNET_CONFIG, seed)


def _seeded(kind: str, config: dict, seed: int | None):
    import diffusers

    seed = _checks.optional_seed(seed)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return getattr(diffusers, kind)(**config)


def build_shapes_unet(seed: int | None = 0) -> "UNet2DConditionModel":  # noqa: F821
    """The text-conditioned diffusers UNet2DConditionModel of lesson 07 (about 3.15 M parameters):
    eps_theta(z_t, t, text embeddings) on 4x8x8 latents, 64-wide text embeddings."""
    from diffusers import UNet2DConditionModel

    seed = _checks.optional_seed(seed)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return UNet2DConditionModel(**SHAPES_UNET_CONFIG)


SCENES_UNET_CONFIG = dict(
    SHAPES_UNET_CONFIG, sample_size=16,             # 4x16x16 latents = a 64x64 scene through the VAE
    block_out_channels=(32, 64, 128),               # 16x16 -> 8x8 -> 4x4
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),  # cross-attention to the
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),          # words at 8x8 and 4x4
)


def build_scenes_unet(seed: int | None = 0, cross_attention_dim: int = 64) -> "UNet2DConditionModel":  # noqa: F821
    """The lesson-15 UNet2DConditionModel (about 4.1 M parameters): 4x16x16 latents, cross-attention to the
    words at 8x8, 4x4 and in the middle block, text embeddings cross_attention_dim wide (the text encoder's
    width; only the cross-attention's to_k and to_v change with it)."""
    cross_attention_dim = _checks.integer(cross_attention_dim, "cross_attention_dim", 1)
    return _seeded("UNet2DConditionModel", dict(SCENES_UNET_CONFIG, cross_attention_dim=cross_attention_dim), seed)
