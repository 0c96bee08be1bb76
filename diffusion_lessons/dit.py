"""Diffusion transformers for the digits world (lesson 10): diffusers' DiTTransformer2DModel in three sizes.

A DiT (Peebles and Xie 2023) cuts the 16x16 image into 2x2 patches (64 tokens), embeds each patch with a
linear map plus a fixed sine-cosine position, runs a stack of transformer blocks whose LayerNorms are
modulated by the timestep and the class (adaLN-Zero: scale, shift and a gate per block, the gate's layer
initialised to zero so each block starts as the identity), and maps every token back to its patch.

Labels 0-9 are the digits and 10 is the null label of classifier-free guidance: diffusers builds the label
table with num_embeds_ada_norm + 1 rows (the extra row is its own "dropped label"), so `num_embeds_ada_norm=10`
gives exactly labels 0-10. The book draws label dropout itself (from the training generator), so the
builder switches off diffusers' own dropout, which would draw from the global torch RNG.
"""

from __future__ import annotations

import torch

from . import _checks
from .data import DIGITS_SIZE, NUM_DIGIT_CLASSES

# the sizes of lesson 10's scaling study: (attention heads, width per head, depth); width = heads x head width
DIT_SIZES = {
    "small": (2, 32, 3),    # width 64, 3 blocks: about 0.2 M parameters
    "base": (4, 24, 5),     # width 96, 5 blocks: about 1.0 M, matched to the digits U-Net's 1.06 M
    "large": (4, 32, 8),    # width 128, 8 blocks: about 2.8 M
}
DIT_SIZE = "base"           # the shipped model
PATCH_SIZE = 2


def digits_dit_config(size: str = DIT_SIZE) -> dict:
    """The DiTTransformer2DModel config of the digits DiT of the given size ('small', 'base', 'large')."""
    if size not in DIT_SIZES:
        raise ValueError(f"size must be one of {sorted(DIT_SIZES)}, got {size!r}")
    heads, head_dim, depth = DIT_SIZES[size]
    return dict(num_attention_heads=heads, attention_head_dim=head_dim, num_layers=depth,
                in_channels=1, out_channels=1, sample_size=DIGITS_SIZE, patch_size=PATCH_SIZE,
                num_embeds_ada_norm=NUM_DIGIT_CLASSES,   # + diffusers' extra row = the null label 10
                norm_type="ada_norm_zero")


def no_label_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Switch off diffusers' built-in class-label dropout in every adaLN-Zero block (it draws from the global
    torch RNG in training mode); the book's loop drops labels itself. Returns the model."""
    _checks.module(model)
    for module in model.modules():
        if type(module).__name__ == "LabelEmbedding":
            module.dropout_prob = 0.0
    return model


def zero_init(model: torch.nn.Module) -> torch.nn.Module:
    """adaLN-Zero's initialisation (Peebles and Xie 2023, section 3.2), which diffusers' constructor does not
    apply (its DiT is made to load trained weights): every block's modulation layer (scale, shift, gate) and the
    final layer's modulation and projection start at zero, so each block starts as the identity and the whole
    network outputs 0. Returns the model."""
    _checks.module(model)
    if not hasattr(model, "transformer_blocks") or not hasattr(model, "proj_out_2"):
        raise ValueError(f"model must be a DiTTransformer2DModel, got {type(model).__name__}")
    with torch.no_grad():
        layers = [block.norm1.linear for block in model.transformer_blocks] + [model.proj_out_1, model.proj_out_2]
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()
    return model


def build_digits_dit(size: str = DIT_SIZE, seed: int | None = 0) -> "DiTTransformer2DModel":  # noqa: F821
    """A fresh class-conditional DiT for 16x16x1 digits (labels 0-9, null label 10), initialised from `seed`
    without touching the global torch RNG (torch.random.fork_rng), adaLN-Zero's zeros in place (zero_init),
    label dropout left to the training loop."""
    from diffusers import DiTTransformer2DModel

    config = digits_dit_config(size)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
        raise ValueError(f"seed must be None or an int in [0, 2**63), got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = DiTTransformer2DModel(**config)
    return no_label_dropout(zero_init(model))


def patchify(images: torch.Tensor, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """(B, C, H, W) images -> (B, H/p * W/p, p p C) patch vectors, patches row by row, each patch's values
    in diffusers' order (row, column, channel; its DiT unpatchifies with 'nhwpqc->nchpwq'). diffusers'
    PatchEmbed is a p x p convolution with stride p: each token is a linear map of one such vector."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (batch, channels, height, width) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an int >= 1, got {patch_size!r}")
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"patch_size must divide the image size {h}x{w}, got {patch_size}")
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, height: int, width: int, channels: int = 1,
               patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """The inverse of patchify: (B, N, p p C) -> (B, C, H, W), as DiTTransformer2DModel's last step."""
    if not isinstance(patches, torch.Tensor) or patches.ndim != 3:
        raise ValueError(f"patches must be a (batch, tokens, values) tensor, got "
                         f"{tuple(patches.shape) if isinstance(patches, torch.Tensor) else type(patches).__name__}")
    height = _checks.integer(height, "height", 1)
    width = _checks.integer(width, "width", 1)
    channels = _checks.integer(channels, "channels", 1)
    patch_size = _checks.integer(patch_size, "patch_size", 1)
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size must divide height and width ({height}x{width}), got {patch_size}")
    p = patch_size
    b, n, d = patches.shape
    if n != (height // p) * (width // p) or d != channels * p * p:
        raise ValueError(f"patches must have shape (batch, {(height // p) * (width // p)}, {channels * p * p}) "
                         f"for {channels}x{height}x{width} images, got {tuple(patches.shape)}")
    x = patches.reshape(b, height // p, width // p, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, height, width)


# ---- lesson 10's looking glass: attention over patches, shapes through the model, parameters by part ----

import re  # noqa: E402  (kept with the helpers that use it)

# where each parameter of the digits DiT and of the digits U-Net belongs, for lesson 10's comparison (first match)
DIT_PARTS = {
    "patch embedding": r"^pos_embed\.",
    "timestep + label embedding": r"\.norm1\.emb\.",          # diffusers gives every block its own copy
    "adaLN-Zero modulation": r"\.norm1\.linear\.",
    "attention": r"\.attn1\.",
    "MLP": r"\.ff\.",
    "final layer": r"^proj_out_",
}
UNET_PARTS = {
    "input conv": r"^conv_in\.",
    "timestep + label embedding": r"^(time_embedding|class_embedding)\.",
    "attention": r"\.attentions\.",
    "down path (ResNet blocks)": r"^down_blocks\.",
    "middle (ResNet blocks)": r"^mid_block\.",
    "up path (ResNet blocks)": r"^up_blocks\.",
    "output norm and conv": r"^(conv_norm_out|conv_out)\.",
}


def _check_module(model, name: str) -> None:
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")


def parameters_by_part(model: torch.nn.Module, parts: dict[str, str]) -> dict[str, int]:
    """The model's parameters counted by part: each parameter goes to the first part whose regular expression
    matches its name (re.search); parameters no part matches are counted under 'other'. The counts add up to
    models.count_parameters(model)."""
    _check_module(model, "model")
    if not isinstance(parts, dict) or not parts or not all(isinstance(v, str) for v in parts.values()):
        raise ValueError(f"parts must be a non-empty dict of part name -> regular expression, got {parts!r}")
    patterns = {name: re.compile(pattern) for name, pattern in parts.items()}
    counts = dict.fromkeys(parts, 0)
    for name, p in model.named_parameters():
        part = next((k for k, pattern in patterns.items() if pattern.search(name)), "other")
        counts[part] = counts.get(part, 0) + p.numel()
    return counts


def attention_weights(attn: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) of a diffusers self-attention module (its to_q, to_k and heads; d = width per
    head) on the tokens it is given, hidden_states (B, N, width): (B, heads, N, N), row i holding how query
    token i spreads its attention over the N tokens (each row sums to 1). Lesson 10's attention over patches."""
    if not all(hasattr(attn, name) for name in ("to_q", "to_k", "heads")):
        raise ValueError(f"attn must be a diffusers Attention module (with to_q, to_k, heads), got "
                         f"{type(attn).__name__}")
    width = attn.to_q.in_features
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim != 3 or hidden_states.shape[-1] != width:
        raise ValueError(f"hidden_states must be a (batch, tokens, {width}) tensor, got "
                         f"{tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else type(hidden_states).__name__}")
    b, n, _ = hidden_states.shape
    with torch.no_grad():
        q, k = attn.to_q(hidden_states), attn.to_k(hidden_states)
        q, k = (z.reshape(b, n, attn.heads, -1).transpose(1, 2) for z in (q, k))   # (B, heads, N, d)
        if getattr(attn, "norm_q", None) is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)


def _shape(value) -> str:
    if isinstance(value, torch.Tensor):
        return "x".join(str(n) for n in value.shape)
    if hasattr(value, "sample"):                              # a diffusers output object
        return _shape(value.sample)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return type(value).__name__


def shape_trace(model: torch.nn.Module, names, *inputs, **kw_inputs) -> tuple[object, list[tuple[str, str, str]]]:
    """Run model(*inputs, **kw_inputs) once without gradients, with forward hooks on the named submodules;
    return (the model's output, rows of (name, first input's shape, output's shape) in the order they ran)."""
    _check_module(model, "model")
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty list of submodule names, got {names!r}")
    known = dict(model.named_modules())
    missing = [name for name in names if name not in known]
    if missing:
        raise ValueError(f"names must name submodules of the model, got {missing}")
    rows = []

    def hook_for(name):
        def hook(module, args, kwargs, output):
            first = args[0] if args else next(iter(kwargs.values()), None)
            rows.append((name, _shape(first), _shape(output)))
        return hook

    handles = [known[name].register_forward_hook(hook_for(name), with_kwargs=True) for name in names]
    try:
        with torch.no_grad():
            return model(*inputs, **kw_inputs), rows
    finally:
        for handle in handles:
            handle.remove()
