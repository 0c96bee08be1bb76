"""Cross-attention maps (lesson 15): where in the picture each word of the prompt is looked at.

In a UNet2DConditionModel every CrossAttn block's `attn2` lets each latent pixel attend over the prompt's tokens:
softmax(Q K^T / sqrt(d)) gives, per pixel and head, a distribution over the tokens. `record_cross_attention`
swaps diffusers' own AttnProcessor (the plain, explicit one) in for every attn2 while it is open and keeps those
distributions; the U-Net's output is unchanged. `trajectory` runs a pipeline and keeps the latents each step
started from; `word_maps` replays the U-Net on such a trajectory with any prompt (the conditional branch only)
and averages the recorded distributions over heads, layers and steps into one map per token, at one resolution.
Replaying a second prompt on the first prompt's trajectory is the lesson's control: the picture is fixed, only the
words and their positions change.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from . import _checks, text


def _check_unet(unet) -> None:
    if not hasattr(unet, "attn_processors") or not hasattr(unet, "set_attn_processor"):
        raise ValueError(f"unet must be a diffusers UNet2DConditionModel, got {type(unet).__name__}")


@contextmanager
def record_cross_attention(unet):
    """While open, every cross-attention (attn2) of the U-Net records its attention probabilities into the
    yielded list, one tensor (batch, heads, pixels, tokens) per call; on exit the U-Net's processors are
    restored."""
    from diffusers.models.attention_processor import AttnProcessor

    _check_unet(unet)
    records: list[torch.Tensor] = []

    class Recorder(AttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            original = attn.get_attention_scores

            def scores(query, key, mask=None):
                probs = original(query, key, mask)
                records.append(probs.detach().reshape(-1, attn.heads, *probs.shape[1:]).float().cpu())
                return probs

            attn.get_attention_scores = scores
            try:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
            finally:
                del attn.get_attention_scores

    before = unet.attn_processors
    if not any(name.endswith("attn2.processor") for name in before):
        raise ValueError("unet has no cross-attention (attn2) to record: is it a UNet2DConditionModel?")
    unet.set_attn_processor({name: Recorder() if name.endswith("attn2.processor") else proc
                             for name, proc in before.items()})
    try:
        yield records
    finally:
        unet.set_attn_processor(before)


@torch.no_grad()
def trajectory(pipe, prompt: str, generator: torch.Generator | None, num_inference_steps: int = 25,
               guidance_scale: float = 7.5) -> dict:
    """Run the pipeline on one prompt and keep what each step started from: {'image' (3, H, W) in [-1, 1],
    'latents': [z before step 1, ...], 'timesteps': [...]}."""
    from .t2i import _check_generation

    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be one str, got {type(prompt).__name__}")
    _check_generation(pipe, prompt, num_inference_steps, guidance_scale, generator, 1)
    unet = pipe.unet
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    start = torch.randn((1, unet.config.in_channels, h, w), generator=generator).to(pipe.device, unet.dtype)
    start = start * pipe.scheduler.init_noise_sigma
    inputs = [start]

    def keep(pipeline, i, t, kwargs):
        inputs.append(kwargs["latents"].clone())
        return kwargs

    image = pipe(prompt, latents=start.clone(), num_inference_steps=num_inference_steps, output_type="pt",
                 guidance_scale=guidance_scale, callback_on_step_end=keep).images[0]
    return dict(image=image.cpu() * 2 - 1, latents=inputs[:-1], timesteps=pipe.scheduler.timesteps.tolist())


@torch.no_grad()
def word_maps(pipe, prompt: str, run: dict, size: int | None = None) -> torch.Tensor:
    """Replay the U-Net (conditional branch) on run's latents and timesteps (`trajectory`) with `prompt` and
    return its cross-attention per token, (tokens, size, size): each layer's map upsampled to size (default
    the latent size), averaged over heads, layers and steps. Each pixel's values over the tokens sum to 1."""
    if not isinstance(run, dict) or not {"latents", "timesteps"} <= set(run) or \
            len(run["latents"]) != len(run["timesteps"]) or not run["latents"]:
        raise ValueError("run must be what attention.trajectory returns (latents and timesteps of one run)")
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be one str, got {type(prompt).__name__}")
    unet = pipe.unet
    sample = unet.config.sample_size
    size = _checks.integer(size if size is not None else (sample if isinstance(sample, int) else max(sample)),
                           "size", 1)
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompt).to(unet.dtype)
    total, count = None, 0
    for z, t in zip(run["latents"], run["timesteps"]):
        with record_cross_attention(unet) as records:
            unet(pipe.scheduler.scale_model_input(z, t), t, encoder_hidden_states=emb)
        for probs in records:
            per_token = probs[0].mean(0)                                  # (pixels, tokens), heads averaged
            side = int(round(per_token.shape[0] ** 0.5))
            grid = per_token.T.reshape(1, -1, side, side)
            grid = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
            total = grid[0] if total is None else total + grid[0]
            count += 1
    return total / count


def token_labels(tokenizer, prompt: str) -> list[str]:
    """The tokens the text encoder sees for prompt, padded as the pipeline pads it (one label per map)."""
    ids = text.tokenize(tokenizer, prompt)[0].tolist()
    return tokenizer.convert_ids_to_tokens(ids)
