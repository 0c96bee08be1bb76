"""Recipe of the shipped digits diffusion transformer (lesson 10): python -m diffusion_lessons.train digits-dit.

The digits-flow recipe (flow matching on sklearn's digits at 16x16, labels 0-9 and the null label 10, label
dropout 0.15, batch 128, AdamW decayed to 0 on a cosine, EMA up to 0.999) with the U-Net replaced by diffusers'
DiTTransformer2DModel (dit.build_digits_dit: 2x2 patches, adaLN-Zero on timestep and class; --size base, about
1.0 M parameters, is matched to the U-Net's 1.06 M; small and large are lesson 10's scaling study). Flow
matching rather than eps prediction: the same objective and sampler as digits-flow, so the comparison of the
two networks changes one thing. Writes, under --out (default ./runs/digits-dit-<timestamp>; the shipped
diffusion_lessons/pretrained/digits-dit/ only with --force): transformer/ (EMA weights, safetensors),
scheduler/ (FlowMatchEulerDiscreteScheduler), recipe.json (with fidelity, roughness and diversity per
sampling setting, n and 95% intervals) and manifest.json, all at once. Runs unchanged under accelerate launch.
"""

from __future__ import annotations

import torch

from ..dit import DIT_SIZE, DIT_SIZES, build_digits_dit, digits_dit_config
from ..models import count_parameters
from . import digits_flow

NAME = "digits-dit"
STEPS = {"quick": 3000, "full": 8000}   # quick: about 22 min at 2.3 steps/s on the idle 2-core CPU
LR = 2e-3      # AdamW; the U-Net's rate, so the two recipes differ in the network alone
SETTINGS = {profile: dict(steps=steps) for profile, steps in STEPS.items()}


def describe(model: torch.nn.Module) -> dict:
    size = next((k for k in DIT_SIZES if digits_dit_config(k)["num_layers"] == model.config.num_layers
                 and digits_dit_config(k)["attention_head_dim"] == model.config.attention_head_dim), None)
    return dict(transformer=dict(parameters=count_parameters(model), size=size,
                                 **{k: model.config[k] for k in digits_dit_config(DIT_SIZE)}))


def network(size: str = DIT_SIZE) -> digits_flow.Network:
    """The recipe's network spec for a DiT of the given size."""
    return digits_flow.Network(NAME, __doc__, "transformer", "DiTTransformer2DModel",
                               lambda seed: build_digits_dit(size, seed=seed), describe, SETTINGS)


def main(argv: list[str] | None = None) -> dict | None:
    def extra(parser):
        parser.add_argument("--size", choices=sorted(DIT_SIZES), default=DIT_SIZE,
                            help=f"the DiT's size (default {DIT_SIZE}, matched to the U-Net; lesson 10's scaling study "
                                 f"trains all three)")

    def select(args):
        return network(args.size), "" if args.size == DIT_SIZE else f" --size {args.size}"

    return digits_flow.run(argv, network(DIT_SIZE), lr=LR, extra=extra, select=select)


if __name__ == "__main__":
    main()
