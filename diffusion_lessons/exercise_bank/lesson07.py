"""Lesson 07's coding exercises: the tokenizer by hand, the cross-attention weights of every head, and
Imagen's dynamic thresholding."""

from __future__ import annotations

import re

import torch

from ..exercises import CodingExercise
from ..text import MAX_LENGTH, SPECIAL_TOKENS, caption_words


def tokenize_by_hand(prompt: str, vocab: dict, max_length: int) -> list[int]:
    # Normalize (lower case, punctuation to spaces), split into words, look each up ([UNK] if unknown),
    # keep what fits between [BOS] and [EOS], then pad with [PAD] to max_length ids.
    words = re.sub(r"[^\w\s]", " ", prompt.lower()).split()
    ids = [vocab.get(w, vocab["[UNK]"]) for w in words][: max_length - 2]
    ids = [vocab["[BOS]"], *ids, vocab["[EOS]"]]
    return ids + [vocab["[PAD]"]] * (max_length - len(ids))


def attention_weights(h: torch.Tensor, c: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                      heads: int) -> torch.Tensor:
    # q = W_q h and k = W_k c (nn.Linear weights: x @ W.T); head i owns channels i*d .. (i+1)*d - 1.
    q, k = h @ w_q.T, c @ w_k.T                                        # (B, pixels, heads*d), (B, tokens, heads*d)
    d = q.shape[-1] // heads
    q = q.reshape(q.shape[0], q.shape[1], heads, d).transpose(1, 2)  # (B, heads, pixels, d)
    k = k.reshape(k.shape[0], k.shape[1], heads, d).transpose(1, 2)  # (B, heads, tokens, d)
    return torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)    # (B, heads, pixels, tokens)


def dynamic_threshold(x0: torch.Tensor, percentile: float, floor: float) -> torch.Tensor:
    # Per sample: s = max(the percentile-quantile of |x0|, floor); clip to [-s, s]; scale by floor / s.
    flat = x0.reshape(x0.shape[0], -1)
    s = torch.quantile(flat.abs(), percentile, dim=1).clamp_min(floor)[:, None]
    return (flat.clamp(-s, s) * floor / s).reshape(x0.shape)


_EXTRA_WORDS = ["Red", "CIRCLE", "zebra", "two", "circel", "background!", "(left)", "top-left", "a,"]


def _prompt_inputs(g: torch.Generator) -> tuple:
    words = caption_words() + _EXTRA_WORDS
    n = int(torch.randint(0, 23, (1,), generator=g))                 # up to 22 words: some get cut
    prompt = " ".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=g))
    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *caption_words()])}
    return prompt, vocab, MAX_LENGTH


def _attention_inputs(g: torch.Generator) -> tuple:
    heads = [1, 2, 4, 8][int(torch.randint(0, 4, (1,), generator=g))]
    b, pixels, tokens, d = int(torch.randint(1, 3, (1,), generator=g)), 16, 6, 4
    return (torch.randn(b, pixels, 12, generator=g), torch.randn(b, tokens, 10, generator=g),
            torch.randn(heads * d, 12, generator=g) / 3, torch.randn(heads * d, 10, generator=g) / 3, heads)


def _threshold_inputs(g: torch.Generator) -> tuple:
    x0 = torch.randn(int(torch.randint(1, 5, (1,), generator=g)), 4, 8, 8, generator=g)
    x0 = x0 * (0.5 + 5 * torch.rand(x0.shape[0], 1, 1, 1, generator=g))  # some overshoot, some do not
    percentile = [0.9, 0.99, 0.995][int(torch.randint(0, 3, (1,), generator=g))]
    return x0, percentile, 1.0 + 2.5 * float(torch.rand(1, generator=g))


EXERCISES = [
    CodingExercise(
        lesson=7, name="tokenizer by hand",
        task="turn a prompt into max_length ids as the shipped tokenizer does: lower-case it, replace every "
             "character that is not a letter, digit, _ or space by a space, split on spaces, map each word through "
             "vocab (unknown words to vocab['[UNK]']), keep at most max_length - 2 words, wrap them in [BOS] and "
             "[EOS], and pad with [PAD] to max_length. Return a list of ints",
        signature="tokenize_by_hand(prompt, vocab, max_length)",
        solution=tokenize_by_hand, make_inputs=_prompt_inputs,
        hint="re.sub(r'[^\\w\\s]', ' ', prompt.lower()).split() gives the words; vocab.get(word, vocab['[UNK]'])."),
    CodingExercise(
        lesson=7, name="cross-attention weights",
        task="return the cross-attention weights of every head, a tensor (B, heads, pixels, tokens): q = h @ w_q.T "
             "and k = c @ w_k.T (nn.Linear's convention), split the channels into `heads` heads of "
             "d = channels / heads each (head i owns channels i*d to (i+1)*d - 1, as diffusers' "
             "head_to_batch_dim), then "
             "softmax(q k^T / sqrt(d)) over the tokens",
        signature="attention_weights(h, c, w_q, w_k, heads)",
        solution=attention_weights, make_inputs=_attention_inputs,
        hint="reshape (B, pixels, heads * d) to (B, pixels, heads, d), then move the heads forward: "
             ".transpose(1, 2)."),
    CodingExercise(
        lesson=7, name="dynamic thresholding",
        task="Imagen's dynamic thresholding of a predicted clean latent x0 (B, C, h, w), per sample: s = the "
             "`percentile` quantile of |x0| over the sample's values, raised to `floor` if smaller; clip x0 to "
             "[-s, s] and multiply by floor / s",
        signature="dynamic_threshold(x0, percentile, floor)",
        solution=dynamic_threshold, make_inputs=_threshold_inputs,
        hint="flatten each sample: x0.reshape(len(x0), -1); torch.quantile(..., percentile, dim=1); "
             ".clamp_min(floor); keep s's shape (B, 1) so it broadcasts."),
]
