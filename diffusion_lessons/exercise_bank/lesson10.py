"""Lesson 10's coding exercises: an image cut into patch vectors (diffusers' DiT order), adaLN's modulated
LayerNorm (Peebles and Xie 2023), the parameters of one DiT block, and MMDiT's joint attention over text and image
tokens (Esser et al. 2024)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..exercises import CodingExercise


def patchify_by_hand(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)         # split rows and columns into (patch, inside the patch)
    x = x.permute(0, 2, 4, 3, 5, 1)                         # (B, patch row, patch column, row, column, channel)
    return x.reshape(b, (h // p) * (w // p), p * p * c)     # one vector of p*p*C values per patch, row by row


def adaln_by_hand(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    normed = F.layer_norm(x, x.shape[-1:], eps=1e-6)        # no learned weight or bias: adaLN supplies them
    return normed * (1 + scale[:, None]) + shift[:, None]   # one (shift, scale) per image, the same for every token


def dit_block_parameters(width: int) -> int:
    modulation = width * 6 * width + 6 * width               # Linear(width, 6 width): shift, scale, gate twice
    attention = 4 * (width * width + width)                  # to_q, to_k, to_v, to_out, each with a bias
    mlp = (width * 4 * width + 4 * width) + (4 * width * width + width)   # width -> 4 width -> width
    return modulation + attention + mlp


def joint_attention_by_hand(q_img, k_img, v_img, q_txt, k_txt, v_txt):
    q, k, v = (torch.cat(pair, dim=2) for pair in ((q_img, q_txt), (k_img, k_txt), (v_img, v_txt)))  # one sequence
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = weights @ v
    return out[:, :, :q_img.shape[2]], out[:, :, q_img.shape[2]:]   # split back into the two streams


def _patch_inputs(g: torch.Generator) -> tuple:
    p = int(torch.randint(1, 4, (1,), generator=g))
    b, c = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
    h, w = p * int(torch.randint(1, 5, (1,), generator=g)), p * int(torch.randint(1, 5, (1,), generator=g))
    if p == 1 and c == 1:     # a 1x1 patch of one channel is the image itself, flattened: make it a real test
        p, h, w = 2, 2 * h, 2 * w
    return torch.randn(b, c, h, w, generator=g), p


def _adaln_inputs(g: torch.Generator) -> tuple:
    b, n, d = (int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 9, (1,), generator=g)),
               int(torch.randint(4, 17, (1,), generator=g)))
    return torch.randn(b, n, d, generator=g) * 3 + 1, torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def _width_inputs(g: torch.Generator) -> tuple:
    return (int(torch.randint(8, 1153, (1,), generator=g)),)


def _joint_inputs(g: torch.Generator) -> tuple:
    b, heads, d = (int(torch.randint(1, 3, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g)),
                   int(torch.randint(2, 9, (1,), generator=g)))
    n_img, n_txt = int(torch.randint(4, 17, (1,), generator=g)), int(torch.randint(2, 8, (1,), generator=g))
    return tuple(torch.randn(b, heads, n, d, generator=g) for n in (n_img, n_img, n_img, n_txt, n_txt, n_txt))


EXERCISES = [
    CodingExercise(
        lesson=10, name="patchify",
        task="cut images (B, C, H, W) into non-overlapping patch_size x patch_size patches and return them as a "
             "sequence (B, number of patches, patch_size * patch_size * C): patches row by row (left to right, top "
             "to bottom), the values inside a patch in the order (row, column, channel), as diffusers' DiT unpatchifies",
        signature="patchify_by_hand(images, patch_size)",
        solution=patchify_by_hand, make_inputs=_patch_inputs,
        hint="reshape to (B, C, H/p, p, W/p, p), permute to (B, H/p, W/p, p, p, C), reshape to (B, -1, p*p*C)."),
    CodingExercise(
        lesson=10, name="adaLN modulation",
        task="apply adaLN's modulated LayerNorm to tokens x (B, N, D): normalise each token over its D values "
             "(mean 0, variance 1, eps 1e-6, no learned weight or bias), then multiply by (1 + scale) and add shift, "
             "where shift and scale (B, D) are one vector per image, shared by all its tokens",
        signature="adaln_by_hand(x, shift, scale)",
        solution=adaln_by_hand, make_inputs=_adaln_inputs,
        hint="torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-6); then shift[:, None] broadcasts over tokens."),
    CodingExercise(
        lesson=10, name="DiT block parameters",
        task="count the parameters of one DiT block of the given width, its timestep and label embedding left out: "
             "the adaLN-Zero modulation Linear(width, 6 width), the attention's four width x width projections "
             "(to_q, to_k, to_v, to_out) and the MLP width -> 4 width -> width, every linear layer with a bias",
        signature="dit_block_parameters(width)",
        solution=dit_block_parameters, make_inputs=_width_inputs, rtol=0, atol=0,
        hint="a Linear(a, b) with bias has a * b + b parameters; the answer is a quadratic in width, 18 width^2 + ..."),
    CodingExercise(
        lesson=10, name="joint attention",
        task="MMDiT's joint attention (SD3, FLUX): given per-head queries, keys and values of the image tokens and of "
             "the text tokens, each (B, heads, tokens, d), join the two token sequences, attend once with "
             "softmax(Q K^T / sqrt(d)) V over all tokens, and return (image part, text part) of the result",
        signature="joint_attention_by_hand(q_img, k_img, v_img, q_txt, k_txt, v_txt)",
        solution=joint_attention_by_hand, make_inputs=_joint_inputs,
        hint="torch.cat along the token dimension (dim=2), image first; split the output at the number of image tokens."),
]
