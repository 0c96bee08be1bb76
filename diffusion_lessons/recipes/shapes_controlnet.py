"""Recipe: lesson 12's ControlNet (python -m diffusion_lessons.train shapes-controlnet).

control.build_controlnet copies the shipped shapes-t2i U-Net's encoder and middle block
(ControlNetModel.from_unet, a 3-width control encoder for the VAE's 4x downsampling, zero convolutions at
zero); only the copy trains, the U-Net, text encoder and VAE stay locked. Data: captioned shapes
(data.make_shapes, mixed captions) with each shape's silhouette (white on black, RGB, 32 x 32) as the control
image; loss = MSE(eps_theta(z_t, t, text, + ControlNet(z_t, t, text, silhouette)), eps), captions dropped to ""
15% of the time (the pipeline's guidance runs the ControlNet on both branches), EMA of the weights. Saves a
ControlNetModel folder (config.json, diffusion_pytorch_model.safetensors) to OUT/ for
StableDiffusionControlNetPipeline.from_pretrained(shapes-t2i, controlnet=ControlNetModel.from_pretrained(OUT)),
with recipe.json, measurements.json (control.measure_control: IoU of the generated shape with the silhouette
and the color read, at conditioning scales 0, 0.5, 1 and 1.5) and manifest.json.
OUT: --out, default ./runs/shapes-controlnet-<timestamp>.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .. import control, data, device as _device, t2i, text
from ..pretrained import ROOT
from ..schedules import make_schedule
from ..training import EMA, TrainingInterrupted, train_loop
from . import common, shapes_t2i

NAME = "shapes-controlnet"
SETTINGS = {
    "quick": dict(steps=1200, batch_size=64, n_train=10000, n_eval=96),
    "full": dict(steps=6000, batch_size=128, n_train=40000, n_eval=240),
}
BASE = ROOT / "shapes-t2i"
LR, WARMUP, EMA_DECAY = 1e-3, 50, 0.995
LOOP = dict(weight_decay=0.0, warmup=WARMUP, max_grad_norm=1.0)
CAPTION_DROPOUT = shapes_t2i.CAPTION_DROPOUT
STEPS, GUIDANCE = 25, 7.5
OUTPUTS = ("config.json", "diffusion_pytorch_model.safetensors", "recipe.json", "measurements.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser(NAME, __doc__, SETTINGS)
    parser.add_argument("--base", type=Path, default=BASE,
                        help=f"the text-to-image pipeline folder the ControlNet is made for (default {BASE})")
    return common.parse(parser, argv, NAME, SETTINGS, outputs=OUTPUTS)


def training_store(n: int, seed: int, vae, tokenizer, dev: torch.device) -> dict:
    """n captioned shapes: their latent posteriors, silhouettes and caption token ids."""
    shapes = data.make_shapes(n, generator=_device.make_generator(seed))
    idx = torch.tensor([data.SHAPES.index(a["shape"]) for a in shapes.attributes])
    mean, std = shapes_t2i.encode_dataset(vae, shapes.images.to(dev))
    return dict(control=control.silhouette_images(idx, shapes.geometry).to(dev), mean=mean, std=std,
                ids=text.tokenize(tokenizer, shapes.captions).to(dev),
                empty_ids=text.tokenize(tokenizer, "")[0].to(dev), scaling_factor=vae.config.scaling_factor)


def sample_batch(store: dict, batch_size: int, generator: torch.Generator, num_steps: int) -> dict:
    """The global batch and all its randomness: latents, silhouettes, dropped captions, timesteps, noise."""
    idx = torch.randint(0, len(store["ids"]), (batch_size,), generator=generator)
    noise = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    drop = torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT
    t = torch.randint(0, num_steps, (batch_size,), generator=generator)
    eps = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    dev = store["mean"].device
    i = idx.to(dev)
    z0 = (store["mean"][i] + store["std"][i] * noise.to(dev)) * store["scaling_factor"]
    ids = torch.where(drop.to(dev)[:, None], store["empty_ids"][None, :], store["ids"][i])
    return dict(z0=z0, control=store["control"][i], ids=ids, t=t, eps=eps)


def loss_fn(controlnet, unet, text_encoder, schedule, batch: dict) -> torch.Tensor:
    """MSE between the noise and the locked U-Net's prediction with the ControlNet's residuals added."""
    dev = batch["z0"].device
    t, eps = batch["t"].to(dev), batch["eps"].to(dev)
    z_t = schedule.add_noise(batch["z0"], eps, t)
    with torch.no_grad():
        emb = text_encoder(batch["ids"])[0]
    down, mid = controlnet(z_t, t, encoder_hidden_states=emb, controlnet_cond=batch["control"], return_dict=False)
    pred = unet(z_t, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample
    return torch.nn.functional.mse_loss(pred, eps)


def load(folder: Path, base: Path = BASE, dev: torch.device | None = None):
    """StableDiffusionControlNetPipeline.from_pretrained(base, controlnet=ControlNetModel.from_pretrained(folder)),
    the way a user loads them."""
    return control.load_controlnet_pipeline(base, folder, dev)


def main(argv: list[str] | None = None) -> dict | None:
    """Train the ControlNet; on the main process save, measure and write the records into --out."""
    started = time.perf_counter()
    args = parse_args(argv)
    dev, accelerator, generator = shapes_t2i.start(args, NAME)
    base = t2i.load_pipeline(args.base, dev)
    for part in (base.vae, base.text_encoder, base.unet):
        part.eval().requires_grad_(False)
    store = training_store(args.n_train, args.seed, base.vae, base.tokenizer, dev)
    net = control.build_controlnet(base.unet, seed=args.seed).to(dev).train()
    schedule = make_schedule(shapes_t2i.NOISE_SCHEDULE)
    ema = EMA(net, max_decay=EMA_DECAY)
    start = time.perf_counter()
    try:
        history = train_loop(net, lambda batch: loss_fn(net, base.unet, base.text_encoder, schedule, batch),
                             lambda gen: sample_batch(store, args.batch_size, gen, schedule.num_steps),
                             steps=args.steps, lr=LR, generator=generator, ema=ema, desc=NAME,
                             accelerator=accelerator, checkpointing=common.checkpointing(args, SETTINGS), **LOOP)
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    common.synchronize(dev)
    train_s = time.perf_counter() - start
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        ema.model.save_pretrained(folder, safe_serialization=True)
        t_eval = time.perf_counter()
        pipe = load(folder, args.base, dev)
        found = None if args.skip_eval else control.measure_control(
            pipe, control.control_tasks(args.n_eval, seed=args.seed + 100), control.SCALES, STEPS, GUIDANCE,
            args.seed)["measures"]
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
            quality=None if found is None else {k: v for k, v in found.items() if k in ("0", "1")},
            eval_s=eval_s, batch_size=args.batch_size, lr=LR,
            loop=common.loop_settings(**LOOP, ema_max_decay=EMA_DECAY),
            data=dict(kind="captioned shapes (data.make_shapes, caption_style='mixed'), control = the silhouette",
                      n_train=args.n_train, train_seed=args.seed, image_size=32, base=str(args.base)),
            models=dict(controlnet=dict(parameters=sum(p.numel() for p in net.parameters()),
                                        conditioning_embedding_out_channels=list(control.CONDITIONING_CHANNELS)),
                        unet_parameters=sum(p.numel() for p in base.unet.parameters())),
            caption_dropout=CAPTION_DROPOUT)
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            common.write_measurements(folder, NAME, record, found, eval_s, show=("0", "1"))
        return record


if __name__ == "__main__":
    main()
