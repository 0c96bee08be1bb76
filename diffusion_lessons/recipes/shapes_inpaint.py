"""Recipe: lesson 11's inpainting model (python -m diffusion_lessons.train shapes-inpaint).

Stable Diffusion's inpainting recipe at the book's size: the shipped shapes-t2i U-Net widened to 9 input
channels (inpainting.inpaint_unet: the noisy latents, the mask at latent size and the masked picture's latents;
the 5 new input weights start at zero, so training starts from the base model), fine-tuned with the text
encoder and VAE frozen, on captioned shapes with random masks (white = 1 = repaint):
  - 25% the shape's box (1-3 px margin, whole latent cells): the model learns to paint what the caption asks
    into a hole;
  - 50% everything but the shape's box; 80% of these show the model the shape on the *other* background in
    the known box, with the caption's background the target: the model learns to repaint every background
    pixel the caption contradicts, also those left inside the box, and to keep the shape's outline there;
  - 10% a random rectangle of latent cells; 15% the whole picture (plain text to image).
loss = MSE(v_theta([z_t, m, z_masked], t, text(caption)), v) with v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0
(Salimans and Ho 2022): the inpainting U-Net predicts v, not the base model's eps (the saved scheduler says
prediction_type 'v_prediction'). Where the noise is high, v is almost -z_0: the network is asked for the
picture's latents directly (the known box shows their outline), and the v loss is the x0 loss there. With z_t
given, an error delta in z_0 moves the eps target by only sqrt(SNR) delta (about a twelfth of it at the first
sampling step), so an outline drawn wrong barely moves the eps loss. Captions dropped to "" 15% of the time (for
guidance), EMA of the weights. Saves a StableDiffusionInpaintPipeline folder to OUT/ whose vae/, text_encoder/
and tokenizer/ are links to the base folder's (shared, not copied; --copy-shared copies them), with
recipe.json, measurements.json (inpainting.measure_edits on the two edits, for this model and for the base
model's blending trick, side by side) and manifest.json. OUT: --out, default ./runs/shapes-inpaint-<timestamp>.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from .. import data, device as _device, inpainting, latents, t2i, text
from ..pretrained import ROOT
from ..schedules import make_schedule
from ..training import EMA, TrainingInterrupted, loss_target, train_loop
from . import common, shapes_t2i

NAME = "shapes-inpaint"
SETTINGS = {
    "quick": dict(steps=4000, batch_size=32, n_train=10000, per_task=96),
    "full": dict(steps=6000, batch_size=128, n_train=40000, per_task=240),
}
BASE = ROOT / "shapes-t2i"
LR, WARMUP, EMA_DECAY = 1e-3, 50, 0.995
LOOP = dict(weight_decay=0.0, warmup=WARMUP, max_grad_norm=1.0)
MASK_ODDS = {"box": 0.25, "outside": 0.5, "rectangle": 0.1, "everything": 0.15}
SWAP_SHARE = 0.8       # of the 'outside' masks: the known box shows the shape on the other background
PREDICTION_TYPE = "v_prediction"   # what the inpainting U-Net predicts (the base predicts eps)
CAPTION_DROPOUT = shapes_t2i.CAPTION_DROPOUT
STEPS, GUIDANCE = 25, 7.5
SHARED = ("vae", "text_encoder", "tokenizer")
OUTPUTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "model_index.json", "recipe.json",
           "measurements.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser(NAME, __doc__, SETTINGS)
    parser.add_argument("--base", type=Path, default=BASE,
                        help=f"the text-to-image pipeline folder to start from (default {BASE})")
    parser.add_argument("--copy-shared", action="store_true",
                        help="copy vae/, text_encoder/ and tokenizer/ instead of linking to the base folder's")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-measure the model saved in --out (no training): measurements.json and the record's "
                             "quality are rewritten")
    return common.parse(parser, argv, NAME, SETTINGS, out_needed_by="evaluate_only", outputs=OUTPUTS)


def training_store(n: int, seed: int, vae, tokenizer, dev: torch.device) -> dict:
    """n captioned shapes, the same shapes on the other background, the targets' latent posteriors and the
    caption token ids."""
    shapes = data.make_shapes(n, generator=_device.make_generator(seed))
    index = lambda key, names: torch.tensor([list(names).index(a[key]) for a in shapes.attributes])  # noqa: E731
    s, c, b = index("shape", data.SHAPES), index("color", data.COLORS), index("background", data.BACKGROUNDS)
    swapped = data.render_shapes(s, c, 1 - b, shapes.geometry)
    mean, std = shapes_t2i.encode_dataset(vae, shapes.images.to(dev))
    return dict(images=shapes.images, swapped=swapped, geometry=shapes.geometry, mean=mean, std=std,
                ids=text.tokenize(tokenizer, shapes.captions).to(dev),
                empty_ids=text.tokenize(tokenizer, "")[0].to(dev), scaling_factor=vae.config.scaling_factor)


def random_masks(kinds: torch.Tensor, geometry: torch.Tensor, generator: torch.Generator,
                 image_size: int = 32) -> torch.Tensor:
    """One mask (B, 1, H, W) per row: kinds index MASK_ODDS (box, outside, rectangle, everything)."""
    n, cells = len(kinds), image_size // inpainting.CELL
    margin = 1 + 2 * torch.rand(n, generator=generator)
    boxes = torch.cat([inpainting.box_masks(geometry[i:i + 1], image_size, float(margin[i])) for i in range(n)])
    corners = torch.randint(0, cells, (n, 2, 2), generator=generator).sort(dim=2).values
    grid = torch.arange(cells)
    inside = lambda k: (grid[None] >= corners[:, k, :1]) & (grid[None] <= corners[:, k, 1:])  # noqa: E731
    rect = (inside(1)[:, :, None] & inside(0)[:, None, :]).float()
    rect = rect.repeat_interleave(inpainting.CELL, 1).repeat_interleave(inpainting.CELL, 2)[:, None]
    table = torch.stack([boxes, 1 - boxes, rect, torch.ones_like(boxes)], dim=1)  # (B, 4, 1, H, W)
    return table[torch.arange(n), kinds]


def sample_batch(store: dict, vae, batch_size: int, generator: torch.Generator, num_steps: int) -> dict:
    """The global batch and all its randomness: target latents, masks of random kinds, the masked pictures'
    latents (encoded here by the frozen VAE), dropped captions, timesteps and noise."""
    idx = torch.randint(0, len(store["ids"]), (batch_size,), generator=generator)
    odds = torch.tensor(list(MASK_ODDS.values()))
    kinds = torch.multinomial(odds, batch_size, replacement=True, generator=generator)
    masks = random_masks(kinds, store["geometry"][idx], generator)
    swap = (kinds == 1) & (torch.rand(batch_size, generator=generator) < SWAP_SHARE)
    known = torch.where(swap[:, None, None, None], store["swapped"][idx], store["images"][idx])
    noise_z0 = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    noise_known = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    drop = torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT
    t = torch.randint(0, num_steps, (batch_size,), generator=generator)
    eps = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    dev = store["mean"].device
    with torch.no_grad():
        post = latents.posterior(vae, (known * (masks < 0.5)).to(dev))
        z_known = (post.mean + post.std * noise_known.to(dev)) * store["scaling_factor"]
    idx_d = idx.to(dev)
    z0 = (store["mean"][idx_d] + store["std"][idx_d] * noise_z0.to(dev)) * store["scaling_factor"]
    ids = torch.where(drop.to(dev)[:, None], store["empty_ids"][None, :], store["ids"][idx_d])
    small = torch.nn.functional.interpolate(masks, size=z0.shape[-2:]).to(dev)   # as the pipeline does
    return dict(z0=z0, mask=small, z_known=z_known, ids=ids, t=t, eps=eps)


def loss_fn(unet, text_encoder, schedule, batch: dict) -> torch.Tensor:
    """MSE between v (training.loss_target, PREDICTION_TYPE) and the 9-channel U-Net's prediction from
    [z_t, mask, masked latents] and text."""
    dev = batch["z0"].device
    t, eps = batch["t"].to(dev), batch["eps"].to(dev)
    z_t = schedule.add_noise(batch["z0"], eps, t)
    with torch.no_grad():
        emb = text_encoder(batch["ids"])[0]
    pred = unet(torch.cat([z_t, batch["mask"], batch["z_known"]], dim=1), t, encoder_hidden_states=emb).sample
    return torch.nn.functional.mse_loss(pred, loss_target(schedule, batch["z0"], eps, t, PREDICTION_TYPE))


def save(base, unet, base_folder: Path, folder: Path, copy_shared: bool) -> None:
    """The StableDiffusionInpaintPipeline folder; the base's vae, text encoder and tokenizer linked (relative
    links, so the shipped folders share them) or copied."""
    pipe = inpainting.inpaint_pipeline(base, unet)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=PREDICTION_TYPE)
    pipe.save_pretrained(folder, safe_serialization=True)
    if copy_shared:
        return
    for part in SHARED:
        shutil.rmtree(folder / part)
        target = (Path(base_folder) / part).resolve()
        os.symlink(os.path.relpath(target, folder.resolve()), folder / part, target_is_directory=True)


def load(folder: Path, dev: torch.device | None = None):
    """The saved pipeline, loaded the way a user loads it (StableDiffusionInpaintPipeline.from_pretrained)."""
    return inpainting.load_inpaint_pipeline(folder, dev)


def measure(pipe, base, per_task: int, seed: int) -> dict:
    """Both edits (inpainting.edit_tasks, per_task pictures each) with this model and with the base model's
    blending trick, 25 steps, guidance 7.5."""
    tasks = inpainting.edit_tasks(per_task, seed=seed + 100)
    return dict(inpainting_unet=inpainting.measure_edits(pipe, tasks, STEPS, GUIDANCE, seed)["measures"],
                blending_base_model=inpainting.measure_edits(inpainting.inpaint_pipeline(base), tasks, STEPS,
                                                             GUIDANCE, seed)["measures"])


def evaluate_only(args: argparse.Namespace) -> dict:
    """--evaluate-only: measure the pipeline saved in --out again (the blending trick on --base, default the
    shipped shapes-t2i) and rewrite its records, saying where and by which command."""
    return common.evaluate_pipeline(
        args, NAME, lambda pipe, seed: measure(pipe, t2i.load_pipeline(args.base, pipe.device), args.per_task, seed),
        lambda found: found["inpainting_unet"], f"--per-task {args.per_task}", load=load,
        show=("inpainting_unet", "blending_base_model"))


def main(argv: list[str] | None = None) -> dict | None:
    """Fine-tune the 9-channel U-Net; on the main process save, measure and write the records into --out."""
    started = time.perf_counter()
    args = parse_args(argv)
    if args.evaluate_only:
        return evaluate_only(args)
    dev, accelerator, generator = shapes_t2i.start(args, NAME)
    base = t2i.load_pipeline(args.base, dev)
    vae, text_encoder = base.vae.eval().requires_grad_(False), base.text_encoder.eval().requires_grad_(False)
    store = training_store(args.n_train, args.seed, vae, base.tokenizer, dev)
    unet = inpainting.inpaint_unet(base.unet).train()
    schedule = make_schedule(shapes_t2i.NOISE_SCHEDULE)
    ema = EMA(unet, max_decay=EMA_DECAY)
    start = time.perf_counter()
    try:
        history = train_loop(unet, lambda batch: loss_fn(unet, text_encoder, schedule, batch),
                             lambda gen: sample_batch(store, vae, args.batch_size, gen, schedule.num_steps),
                             steps=args.steps, lr=LR, generator=generator, ema=ema, desc=NAME,
                             accelerator=accelerator, checkpointing=common.checkpointing(args, SETTINGS), **LOOP)
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    common.synchronize(dev)
    train_s = time.perf_counter() - start
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        save(base, ema.model, args.base, folder, args.copy_shared)
        t_eval = time.perf_counter()
        pipe = load(folder, dev)
        found = None if args.skip_eval else measure(pipe, base, args.per_task, args.seed)
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
            quality=None if found is None else found["inpainting_unet"], eval_s=eval_s,
            batch_size=args.batch_size, lr=LR, loop=common.loop_settings(**LOOP, ema_max_decay=EMA_DECAY),
            data=dict(kind="captioned shapes (data.make_shapes, caption_style='mixed') with random masks",
                      n_train=args.n_train, train_seed=args.seed, image_size=32, mask_odds=MASK_ODDS,
                      swap_share_of_outside=SWAP_SHARE, base=str(args.base)),
            prediction_type=PREDICTION_TYPE, loss="MSE to v (training.loss_target), unweighted",
            models=dict(unet=dict(in_channels=9, parameters=sum(p.numel() for p in pipe.unet.parameters()),
                                  start="shapes-t2i's U-Net, conv_in widened with zero weights"),
                        shared=("copied" if args.copy_shared else "linked") + " from the base: " + ", ".join(SHARED)),
            caption_dropout=CAPTION_DROPOUT)
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            common.write_measurements(folder, NAME, record, found, eval_s, show=("inpainting_unet", "blending_base_model"))
        return record


if __name__ == "__main__":
    main()
