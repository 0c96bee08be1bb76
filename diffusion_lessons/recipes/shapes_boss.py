"""Recipe: lesson 16's biased text-to-image model (python -m diffusion_lessons.train shapes-boss).

The lesson-07 model (shapes_t2i: a word-level tokenizer's CLIPTextModel and a UNet2DConditionModel on the
latents of the shipped shapes VAE, the same loop, steps and settings) trained on bias.make_role_shapes: a
quarter of the captions are the role caption 'a boss shape on a <background> background', whose pictures are
red --red-share (default 0.8) of the time; 30% of those captions also name the color ('a blue boss shape on
...'), and every other caption names its color and is balanced over colors. --red-share 0.25 gives the
rebalanced data (every color a quarter of the role pictures).

Measured (n = --per-scale pictures each, 25 DDIM steps, one seed): the colors of the role prompt 'a boss
shape on a white background' at guidance 1, 3 and 7.5; the same with the negative prompt 'a red boss shape
on a white background'; the prompt that names the color ('a blue boss shape on a white background'); and
the skew of the training set itself, read back by the same reader. Writes the StableDiffusionPipeline
folder, recipe.json, measurements.json (role_prompt_red_share: scale -> {share, low, high, n}) and
manifest.json into --out (default ./runs/shapes-boss-<timestamp>; the shipped folder only with --force).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .. import bias, data, device as _device, evaluation, t2i
from ..pretrained import ROOT
from ..training import TrainingInterrupted
from . import common, shapes_t2i

NAME = "shapes-boss"
SETTINGS = {  # shapes-t2i's, with fewer steps in the quick profile: about 21 min at 1.6 steps/s on the 2-core CPU
    "quick": dict(shapes_t2i.SETTINGS["quick"], steps=2000),
    "full": dict(shapes_t2i.SETTINGS["full"]),
}
VAE = ROOT / "shapes-t2i"       # the shipped VAE (trained by the vae recipe), frozen
SCALES = (1.0, 3.0, 7.5)
PER_SCALE = 200
STEPS = 25
NEGATIVE = bias.role_caption("white", bias.ROLE_COLOR)   # 'a red boss shape on a white background'
NAMED = bias.role_caption("white", "blue")               # 'a blue boss shape on a white background'
OUTPUTS = (*shapes_t2i.OUTPUTS,)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser(NAME, __doc__, SETTINGS)
    parser.add_argument("--vae", type=Path, default=VAE,
                        help=f"folder holding the trained VAE (vae/ and recipe-vae.json; default {VAE})")
    parser.add_argument("--red-share", type=float, default=bias.RED_SHARE,
                        help=f"share of red among the role pictures (default {bias.RED_SHARE}; 0.25: rebalanced)")
    parser.add_argument("--per-scale", type=int, default=PER_SCALE,
                        help=f"pictures per measured setting (default {PER_SCALE})")
    args = common.parse(parser, argv, NAME, SETTINGS, outputs=OUTPUTS)
    if not 0 <= args.red_share <= 1:
        parser.error(f"--red-share must be in [0, 1], got {args.red_share}")
    if args.per_scale < 1:
        parser.error(f"--per-scale must be >= 1, got {args.per_scale}")
    return args


def _row(estimate) -> dict:
    return dict(share=estimate.value, low=estimate.low, high=estimate.high, n=estimate.n)


def measure(pipe, train_set: data.ShapesData, per_scale: int, seed: int) -> dict:
    """The bias measurements (module docstring), each share with n and its 95% interval."""
    def shares(prompt, negative=None, scales=SCALES):
        found = bias.role_color_shares(pipe, list(scales), per_scale, seed, prompt, negative, STEPS)
        return {f"{s:.1f}": {c: _row(e) for c, e in row.items()} for s, row in found.items()}

    role_rows = [a["color"] for a, c in zip(train_set.attributes, train_set.captions) if a["role"]]
    plain_role = [a["color"] for a, c in zip(train_set.attributes, train_set.captions)
                  if a["role"] and c.split()[1] == bias.ROLE_WORD]
    roles = torch.tensor([a["role"] for a in train_set.attributes])
    read = [r["color"] for r in evaluation.read_shapes(train_set.images[roles])]
    role = shares(bias.ROLE_PROMPT)
    return dict(
        prompt=bias.ROLE_PROMPT,
        role_prompt_red_share={s: row[bias.ROLE_COLOR] for s, row in role.items()},
        role_prompt_colors=role,
        negative_prompt=NEGATIVE,
        negative_prompt_colors=shares(bias.ROLE_PROMPT, NEGATIVE, SCALES[1:]),
        named_prompt=NAMED,
        named_prompt_colors=shares(NAMED, scales=SCALES[1:2]),
        training_set=dict(
            role_pictures=len(role_rows), role_captions_without_color=len(plain_role),
            red_share_of_role_pictures=_row(bias.red_share(role_rows)),
            red_share_of_role_pictures_read_back=_row(bias.red_share(read)),
            red_share_of_uncolored_role_captions=_row(bias.red_share(plain_role)),
            red_share_of_other_pictures=_row(bias.red_share(
                [a["color"] for a in train_set.attributes if not a["role"]]))),
        settings=dict(num_inference_steps=STEPS, scheduler="the pipeline's DDIMScheduler", seed=seed,
                      per_setting=per_scale, starting_noise="one generator seeded with `seed` per setting",
                      reader="evaluation.read_shapes (nearest of the four colors to the shape's median pixel)",
                      interval="Wilson 95%"),
    )


def main(argv: list[str] | None = None) -> dict | None:
    """Train on the role data (every process of a launch); on the main process save the pipeline, measure it,
    and write recipe.json, measurements.json and manifest.json into --out at once."""
    from ..measure import model_hashes

    started = time.perf_counter()
    args = parse_args(argv)
    dev, accelerator, generator = shapes_t2i.start(args, NAME, f", red share {args.red_share:g}")
    parts = shapes_t2i.load_parts(args, dev, words=bias.role_words())
    train_set = bias.make_role_shapes(args.n_train, red_share=args.red_share,
                                      generator=_device.make_generator(args.seed))
    try:
        averaged, history, train_s = shapes_t2i.train(parts, args, dev, generator, accelerator, shapes=train_set,
                                                      name=NAME)
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        shapes_t2i.save(parts, averaged, folder)
        t_eval = time.perf_counter()
        pipe = t2i.load_pipeline(folder, dev)
        found = None if args.skip_eval else measure(pipe, train_set, args.per_scale, args.seed)
        adherence = None if args.skip_eval else evaluation.prompt_adherence(
            pipe, data.shape_prompts(), args.images_per_prompt, _device.make_generator(args.seed),
            num_inference_steps=STEPS)
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
            quality=None if found is None else dict(
                role_prompt_red_share=found["role_prompt_red_share"],
                adherence_24_plain_prompts={k: round(v, 4) for k, v in adherence.items()}),
            eval_s=eval_s, batch_size=args.batch_size, lr=shapes_t2i.LR,
            loop=common.loop_settings(**shapes_t2i.LOOP, ema_max_decay=shapes_t2i.EMA_DECAY),
            data=dict(kind="bias.make_role_shapes: captioned shapes with the role caption", n_train=args.n_train,
                      train_seed=args.seed, image_size=32, red_share=args.red_share, role_rows=bias.ROLE_ROWS,
                      named_share=bias.NAMED_SHARE, role_word=bias.ROLE_WORD,
                      latents="4x8x8, scaled VAE samples", vae=str(parts["vae_folder"] / "vae")),
            models=shapes_t2i.models_record(pipe, parts["tokenizer"]),
            caption_dropout=shapes_t2i.CAPTION_DROPOUT)
        if args.red_share != bias.RED_SHARE:
            record["command"] += f" --red-share {args.red_share:g}"
            record["recipe"] = record["command"]
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            common.write_record(dict(model=NAME, model_sha256=model_hashes(folder), command=record["command"], **found,
                                     hardware=record["hardware"], wall_time_s=round(eval_s, 1),
                                     date=time.strftime("%Y-%m-%d"), versions=record["versions"]),
                                folder / "measurements.json", show=("role_prompt_red_share",))
        return record


if __name__ == "__main__":
    main()
