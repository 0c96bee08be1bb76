"""Recipe: lesson 13's star adapter (python -m diffusion_lessons.train shapes-lora-star).

Teaches the shipped shapes-t2i model a five-pointed star from 20 pictures (lora.star_pictures: every color and
background, outer radius 0.38-0.44 of the side: lora.STAR_SIZE) with a peft LoRA on the U-Net's attention
projections (lora.add_lora) and one of the same rank on the text encoder's (lora.add_text_lora, DreamBooth-LoRA's
--train_text_encoder), everything else frozen. The caption is "a <color> star on a <background> background";
"star" is not in the tokenizer's vocabulary and becomes [UNK], DreamBooth's rare identifier (lora's docstring).
DreamBooth's prior preservation: each batch also holds the base model's own pictures of the 24 plain prompts
(generated here first, 25 steps, guidance 7.5), loss = MSE(star half) + PRIOR_WEIGHT * MSE(prior half).
Captions are dropped to the empty prompt CAPTION_DROPOUT of the time, as the base model was trained: the
adapter also moves the empty prompt's prediction, which classifier-free guidance subtracts, and a never-trained
unconditional prediction turns guidance 7.5 into over-cooked pictures.

Six runs, the same steps and seed: rank 1, 4 and 16 with prior preservation, rank 16 without, rank 16 with
prior preservation on the U-Net alone (text encoder frozen: the control for what the text side adds), and rank
16 without caption dropout (the control for what guidance needs). Each is
measured with its adapter loaded into a fresh pipeline (pipe.load_lora_weights), by lora.measure_adapter: the
star read as a star, its color, the base prompts still right (language drift); the base model without adapter
too; the shipped run and the one without caption dropout also the star at the guidance scales SWEEP. Writes
OUT/pytorch_lora_weights.safetensors (rank 16 with prior preservation: pipe.load_lora_weights(OUT)),
OUT/variants/<run>/ (the other five), recipe.json, measurements.json (the rank table) and manifest.json.
OUT: --out, default ./runs/shapes-lora-star-<timestamp>.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path

import torch

from .. import data, device as _device, lora, t2i, text
from ..pretrained import ROOT
from ..schedules import make_schedule
from ..training import TrainingInterrupted, train_loop
from . import common, shapes_t2i

NAME = "shapes-lora-star"
SETTINGS = {
    "quick": dict(steps=800, batch_size=32, n_pictures=20, per_prompt=6),
    "full": dict(steps=1500, batch_size=64, n_pictures=20, per_prompt=12),
}
BASE = ROOT / "shapes-t2i"
LR, WARMUP = 1e-2, 25
LOOP = dict(weight_decay=0.0, warmup=WARMUP, max_grad_norm=1.0)
PRIOR_WEIGHT = 1.0
PRIOR_PER_PROMPT = 4          # base-model pictures per plain prompt (96 prior pictures)
CAPTION_DROPOUT = 0.1         # share of captions (stars and prior alike) replaced by the empty prompt
RUNS = {"r1": (1, True, True, True), "r4": (4, True, True, True), "r16": (16, True, True, True),
        "r16-no-prior": (16, False, True, True), "r16-unet-only": (16, True, False, True),
        "r16-no-dropout": (16, True, True, False)}
# name: (rank, prior preservation, text-encoder LoRA, caption dropout)
SHIPPED = "r16"
STEPS, GUIDANCE = 25, 7.5
SWEEP_RUNS, SWEEP = (SHIPPED, "r16-no-dropout"), (3.0, 5.0)   # the star also measured at these guidance scales
OUTPUTS = (lora.WEIGHTS_NAME, "variants", "recipe.json", "measurements.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser(NAME, __doc__, SETTINGS)
    parser.add_argument("--base", type=Path, default=BASE,
                        help=f"the text-to-image pipeline folder the adapter is for (default {BASE})")
    args = common.parse(parser, argv, NAME, SETTINGS, outputs=OUTPUTS)
    if args.n_pictures > 20:
        parser.error(f"--n-pictures must be at most 20 (the lesson's few pictures), got {args.n_pictures}")
    return args


@torch.no_grad()
def latent_store(base, images: torch.Tensor, captions: list[str], dev: torch.device) -> dict:
    mean, std = shapes_t2i.encode_dataset(base.vae, images.to(dev))
    return dict(mean=mean, std=std, ids=text.tokenize(base.tokenizer, captions).to(dev),
                empty_ids=text.tokenize(base.tokenizer, "")[0].to(dev))


def sample_batch(stars: dict, prior: dict | None, batch_size: int, generator: torch.Generator, num_steps: int,
                 scaling: float, caption_dropout: float = CAPTION_DROPOUT) -> dict:
    """Half stars and half prior pictures (all stars without prior preservation); each caption replaced by the
    empty prompt with probability caption_dropout; noise, timesteps."""
    half = batch_size // 2 if prior is not None else batch_size
    parts = [(stars, half)] + ([(prior, batch_size - half)] if prior is not None else [])
    z0, ids = [], []
    for store, n in parts:
        idx = torch.randint(0, len(store["ids"]), (n,), generator=generator)
        noise = torch.randn((n, *store["mean"].shape[1:]), generator=generator).to(store["mean"].device)
        i = idx.to(store["mean"].device)
        z0.append((store["mean"][i] + store["std"][i] * noise) * scaling)
        ids.append(store["ids"][i])
    t = torch.randint(0, num_steps, (batch_size,), generator=generator)
    eps = torch.randn((batch_size, *stars["mean"].shape[1:]), generator=generator)
    drop = (torch.rand(batch_size, generator=generator) < caption_dropout).to(stars["ids"].device)
    ids = torch.where(drop[:, None], stars["empty_ids"][None, :], torch.cat(ids))
    return dict(z0=torch.cat(z0), ids=ids, t=t, eps=eps, n_star=half)


def loss_fn(unet, text_encoder, schedule, batch: dict) -> torch.Tensor:
    """MSE on the star rows + PRIOR_WEIGHT * MSE on the prior rows (DreamBooth's prior preservation); the
    gradient reaches the text encoder's LoRA when it has one."""
    dev = batch["z0"].device
    t, eps = batch["t"].to(dev), batch["eps"].to(dev)
    z_t = schedule.add_noise(batch["z0"], eps, t)
    with torch.set_grad_enabled(lora.lora_parameters(text_encoder) > 0):
        emb = text_encoder(batch["ids"])[0]
    err = ((unet(z_t, t, encoder_hidden_states=emb).sample - eps) ** 2).mean(dim=(1, 2, 3))
    n = batch["n_star"]
    return err[:n].mean() + (PRIOR_WEIGHT * err[n:].mean() if n < len(err) else 0.0)


def load_base(folder: Path, dev: torch.device):
    return t2i.load_pipeline(folder, dev)


def main(argv: list[str] | None = None) -> dict | None:
    """Generate the prior pictures, train the six adapters, measure each loaded into a fresh pipeline, write."""
    started = time.perf_counter()
    args = parse_args(argv)
    dev, accelerator, generator = shapes_t2i.start(args, NAME, f", runs {', '.join(RUNS)}")
    base = load_base(args.base, dev)
    for part in (base.vae, base.text_encoder, base.unet):
        part.eval().requires_grad_(False)
    found = lora.star_pictures(args.n_pictures, seed=args.seed)
    prior_prompts = [p for p in data.shape_prompts() for _ in range(PRIOR_PER_PROMPT)]
    prior_images = t2i.pipeline_images(base, data.shape_prompts(), _device.make_generator(args.seed + 1),
                                       PRIOR_PER_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    stars = latent_store(base, found["images"], found["captions"], dev)
    prior = latent_store(base, prior_images, prior_prompts, dev)
    schedule = make_schedule(shapes_t2i.NOISE_SCHEDULE)
    scaling = base.vae.config.scaling_factor
    runs, histories, train_s = {}, {}, 0.0
    with common.publish(args.out, args.keep_checkpoints) as folder:
        for name, (rank, with_prior, with_text, with_dropout) in RUNS.items():
            unet, text_encoder = copy.deepcopy(base.unet), copy.deepcopy(base.text_encoder)
            lora.add_lora(unet, rank, seed=args.seed)
            if with_text:
                lora.add_text_lora(text_encoder, rank, seed=args.seed)
            unet.train(), text_encoder.train(with_text)
            trained = torch.nn.ModuleDict(dict(unet=unet, text_encoder=text_encoder))
            start = time.perf_counter()
            try:
                history = train_loop(trained, lambda batch, u=unet, te=text_encoder: loss_fn(u, te, schedule, batch),
                                     lambda gen, p=(prior if with_prior else None), d=with_dropout: sample_batch(
                                         stars, p, args.batch_size, gen, schedule.num_steps, scaling,
                                         CAPTION_DROPOUT if d else 0.0),
                                     steps=args.steps, lr=LR, generator=_device.make_generator(args.seed),
                                     desc=f"{NAME} {name}", accelerator=accelerator, **LOOP)
            except TrainingInterrupted as err:
                raise common.interrupted(err, NAME) from None
            common.synchronize(dev)
            seconds = time.perf_counter() - start
            train_s += seconds
            where = folder / "variants" / name
            lora.save_lora(unet, where, text_encoder if with_text else None)
            histories[name] = history
            runs[name] = dict(rank=rank, prior_preservation=with_prior, text_encoder_lora=with_text,
                              caption_dropout=CAPTION_DROPOUT if with_dropout else 0.0,
                              lora_parameters=lora.lora_parameters(unet) + lora.lora_parameters(text_encoder),
                              adapter_bytes=lora.adapter_bytes(where), train_s=round(seconds, 1),
                              first_loss=round(history[0], 5), final_loss=round(sum(history[-50:]) / len(
                                  history[-50:]), 5))
        shutil.move(str(folder / "variants" / SHIPPED / lora.WEIGHTS_NAME), str(folder / lora.WEIGHTS_NAME))
        (folder / "variants" / SHIPPED).rmdir()
        t_eval = time.perf_counter()
        measured = {}
        if not args.skip_eval:
            measured["base model (no adapter)"] = lora.measure_adapter(
                load_base(args.base, dev), args.per_prompt, args.seed, STEPS, GUIDANCE)["measures"]
            for name in RUNS:
                pipe = load_base(args.base, dev)
                lora.load_adapter(pipe, folder if name == SHIPPED else folder / "variants" / name)
                measured[name] = lora.measure_adapter(pipe, args.per_prompt, args.seed, STEPS, GUIDANCE)["measures"]
                if name in SWEEP_RUNS:
                    measured[name]["star_read_by_guidance"] = {
                        **{str(scale): lora.measure_adapter(pipe, args.per_prompt, args.seed, STEPS, scale,
                                                            old_prompts=False)["measures"]["star_read"]
                           for scale in SWEEP}, str(GUIDANCE): measured[name]["star_read"]}
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        unet_bytes = sum(f.stat().st_size for f in (Path(args.base) / "unet").glob("*.safetensors"))
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=histories[SHIPPED], train_s=train_s, device=dev,
            quality=measured.get(SHIPPED), eval_s=eval_s, batch_size=args.batch_size, lr=LR,
            loop=common.loop_settings(**LOOP),
            data=dict(kind="lora.star_pictures (stars, inner radius 0.4) + the base model's own pictures of the 24 "
                           "plain prompts (prior preservation)", n_pictures=args.n_pictures,
                      prior_pictures=len(prior_prompts), train_seed=args.seed, base=str(args.base)),
            models=dict(target_modules=lora.TARGET_MODULES, text_target_modules=lora.TEXT_TARGET_MODULES,
                        lora_alpha="= rank", shipped=SHIPPED,
                        full_unet_bytes=unet_bytes),
            runs=runs, prior_weight=PRIOR_WEIGHT, caption_dropout=CAPTION_DROPOUT)
        record["steps_per_s"] = round(args.steps * len(RUNS) / train_s, 2)
        common.write_record(record, folder / "recipe.json")
        if measured:
            table = {name: dict(**runs.get(name, {}), **m) for name, m in measured.items()}
            common.write_measurements(folder, NAME, record, dict(runs=table, full_unet_bytes=unet_bytes), eval_s,
                                      show=("runs",))
        return record


if __name__ == "__main__":
    main()
