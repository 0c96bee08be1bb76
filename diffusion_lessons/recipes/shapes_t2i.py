"""Recipe: the lesson-07 text-to-image model (python -m diffusion_lessons.train shapes-t2i).

Needs the VAE first (python -m diffusion_lessons.train vae): --vae names its folder (default: --out if
it holds vae/, else the newest ./runs/vae-*). Trains a word-level tokenizer's CLIPTextModel and a
UNet2DConditionModel jointly in training.train_loop on scaled VAE latents of generated captioned shapes:
loss = MSE(eps_theta(z_t, t, text(caption)), eps), captions dropped to the empty prompt 15% of the time
(for classifier-free guidance), EMA of the weights, diffusers' cosine LR with warm-up. Saves a diffusers
StableDiffusionPipeline to OUT/ (save_pretrained, safetensors, with the VAE and its recipe-vae.json),
OUT/recipe.json (the record of recipes.common) with the measured quality and OUT/manifest.json, all at once
(recipes.common.publish). OUT: --out, default ./runs/shapes-t2i-<timestamp>.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch

from .. import data, device as _device, evaluation, latents, models, t2i, text
from ..schedules import make_schedule
from ..training import EMA, TrainingInterrupted, loss_target, train_loop, training_device
from . import common
from .vae import RECORD as VAE_RECORD

SETTINGS = {  # per run profile; --steps, --batch-size, --n-train, --images-per-prompt override them
    "quick": dict(steps=2400, batch_size=128, n_train=20000, images_per_prompt=8),
    "full": dict(steps=10000, batch_size=128, n_train=50000, images_per_prompt=16),
}
LR, WARMUP, CAPTION_DROPOUT, EMA_DECAY, GRAD_CLIP = 1e-3, 100, 0.15, 0.999, 1.0
LOOP = dict(weight_decay=0.0, warmup=WARMUP, max_grad_norm=GRAD_CLIP)  # train_loop's settings (and the EMA)
NOISE_SCHEDULE = "scaled_linear"  # Stable Diffusion's: betas 0.00085..0.012, T = 1000
OUTPUTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "model_index.json", "recipe.json", VAE_RECORD,
           "measurements.json")  # what OUT holds


PREDICTION_TYPES = ("epsilon", "v_prediction")   # what a text-to-image recipe's U-Net may learn to predict


def add_prediction_type(parser: argparse.ArgumentParser, default: str) -> None:
    """--prediction-type: what the U-Net learns to predict (loss_fn), written into the saved scheduler (save)."""
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=default,
                        help="what the U-Net learns to predict: the noise (epsilon) or v (v_prediction); "
                             f"default {default}")


def add_zero_terminal_snr(parser: argparse.ArgumentParser) -> None:
    """--zero-terminal-snr: train on the schedule rescaled so its last step is pure noise and save a scheduler
    that samples from there (trailing timesteps); Lin et al. 2024. Needs --prediction-type v_prediction."""
    parser.add_argument("--zero-terminal-snr", action="store_true",
                        help="rescale the schedule so that its last step is pure noise, and sample with trailing "
                             "timesteps (Lin et al. 2024); needs --prediction-type v_prediction")


def check_zero_terminal_snr(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """At zero terminal SNR the noise is the whole input at the last step, so predicting it says nothing about
    the picture: only v_prediction goes with --zero-terminal-snr."""
    if args.zero_terminal_snr and args.prediction_type != "v_prediction":
        parser.error("--zero-terminal-snr needs --prediction-type v_prediction, got "
                     f"--prediction-type {args.prediction_type}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser("shapes-t2i", __doc__, SETTINGS)
    parser.add_argument("--vae", type=Path, default=None,
                        help="folder of the trained VAE (the vae recipe's --out; holds vae/ and recipe-vae.json); "
                             "default: --out if it holds vae/, else the newest ./runs/vae-*")
    return common.parse(parser, argv, "shapes-t2i", SETTINGS, outputs=OUTPUTS)


def vae_folder(args: argparse.Namespace) -> Path:
    """Where the trained VAE is: --vae, else --out if it holds vae/, else the newest ./runs/vae-*."""
    found = [args.vae] if args.vae is not None else [args.out, *sorted(Path.cwd().glob("runs/vae-*"), reverse=True)]
    for folder in found:
        if (folder / "vae" / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"no trained VAE in {', '.join(map(str, found))}: run python -m diffusion_lessons.train "
                            f"vae first and pass its folder with --vae")


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled posterior mean and std (N, 4, 8, 8) of every image: z is sampled from them every step."""
    dists = [latents.posterior(vae, images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


def sample_batch(store: dict, batch_size: int, generator: torch.Generator, num_steps: int) -> dict:
    """The global batch and all its randomness: captioned latents z0 = scaling_factor * (mean + std * noise),
    15% of captions -> empty prompt, then t ~ U{0..num_steps-1} and eps ~ N(0, I) for the loss."""
    idx = torch.randint(0, len(store["ids"]), (batch_size,), generator=generator)
    noise = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    dev = store["mean"].device
    idx_d = idx.to(dev)
    z0 = (store["mean"][idx_d] + store["std"][idx_d] * noise.to(dev)) * store["scaling_factor"]
    drop = (torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT).to(dev)
    ids = torch.where(drop[:, None], store["empty_ids"][None, :], store["ids"][idx_d])
    t = torch.randint(0, num_steps, (batch_size,), generator=generator)
    eps = torch.randn(z0.shape, generator=generator)
    return dict(z0=z0, ids=ids, t=t, eps=eps)


def loss_fn(trained: torch.nn.ModuleDict, schedule, batch: dict, pooled: bool = False,
            prediction_type: str = "epsilon") -> torch.Tensor:
    """One denoising loss on a batch: z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps; predict from text (the
    token sequence, or with pooled=True its pooled vector, text.pool_embeddings) the prediction_type's target
    (training.loss_target: eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0 for "v_prediction")."""
    z0, ids = batch["z0"], batch["ids"]
    dev = z0.device
    t, eps = batch["t"].to(dev), batch["eps"].to(dev)
    z_t = schedule.add_noise(z0, eps, t)
    emb = trained["text_encoder"](ids)[0]
    if pooled:
        emb = text.pool_embeddings(emb, ids)
    pred = trained["unet"](z_t, t, encoder_hidden_states=emb).sample
    return torch.nn.functional.mse_loss(pred, loss_target(schedule, z0, eps, t, prediction_type))


def generation_seconds(pipe, repeats: int = 3) -> float:
    """Median wall time of pipe(4 prompts, 25 steps) after one warm-up call (the benchmark's measure)."""
    prompts = data.shape_prompts()[:4]
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        t2i.pipeline_images(pipe, prompts, _device.make_generator(i), num_inference_steps=25).cpu()  # waits
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


@torch.no_grad()
def text_distinctness(pipe) -> dict:
    """How far apart the 24 plain prompts land: smallest and mean pairwise distance of their embeddings."""
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, data.shape_prompts()).flatten(1).float().cpu()
    dist = torch.cdist(emb, emb)
    off = dist[~torch.eye(len(emb), dtype=torch.bool)]
    return dict(min_pairwise_distance=round(float(off.min()), 4), mean_pairwise_distance=round(float(off.mean()), 4))


def measure(pipe, args) -> dict:
    """Prompt adherence at the pipeline's defaults and at 25 steps; size/position variants; speed."""
    rounded = lambda d: {k: round(v, 4) for k, v in d.items()}  # noqa: E731
    prompts, k = data.shape_prompts(), args.images_per_prompt
    variants = data.make_shapes(48, caption_style="both", generator=_device.make_generator(args.seed + 7)).captions
    return dict(
        reader_on_clean_images=rounded(evaluation.reader_accuracy(
            data.make_shapes(1000, generator=_device.make_generator(args.seed + 1)))),
        adherence_default=rounded(evaluation.prompt_adherence(pipe, prompts, k, _device.make_generator(args.seed))),
        adherence_default_settings=dict(num_inference_steps=t2i.DEFAULT_STEPS, guidance_scale=t2i.DEFAULT_GUIDANCE,
                                        prompts="24 color x shape x background", images_per_prompt=k),
        adherence_25_steps=rounded(evaluation.prompt_adherence(
            pipe, prompts, k, _device.make_generator(args.seed), num_inference_steps=25)),
        adherence_size_position_variants=rounded(evaluation.prompt_adherence(
            pipe, variants, 2, _device.make_generator(args.seed))),
        text=text_distinctness(pipe),
        seconds_4_images_25_steps=round(generation_seconds(pipe), 3),
    )


def load_parts(args: argparse.Namespace, dev: torch.device, words: list[str] | None = None) -> dict:
    """The trained VAE (frozen), a fresh tokenizer (of `words`, default the captioned-shapes words), the trained
    pair (text encoder, U-Net) and the schedule."""
    from diffusers import AutoencoderKL

    folder = vae_folder(args)
    print(f"shapes-t2i recipe: VAE from {folder / 'vae'}")
    vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True, local_files_only=True)
    tokenizer = text.build_tokenizer(words)
    trained = torch.nn.ModuleDict(dict(text_encoder=text.build_text_encoder(tokenizer, seed=args.seed),
                                       unet=models.build_shapes_unet(seed=args.seed)))
    return dict(vae=vae.to(dev).eval().requires_grad_(False), vae_folder=folder, tokenizer=tokenizer,
                trained=trained.to(dev), schedule=make_schedule(NOISE_SCHEDULE))


def train(parts: dict, args: argparse.Namespace, dev: torch.device, generator: torch.Generator,
          accelerator=None, shapes: data.ShapesData | None = None, name: str = "shapes-t2i",
          settings: dict | None = None, pooled: bool = False, prediction_type: str = "epsilon") -> tuple:
    """Encode the training set (shapes, default data.make_shapes(--n-train) from the seed) once, then
    train_loop (under `accelerator`, with the run's checkpoints, when given); returns (EMA of the pair, loss
    history, seconds). settings: the recipe's SETTINGS, for its checkpoints (default shapes-t2i's); pooled:
    the U-Net sees the caption's pooled vector (loss_fn); prediction_type: what the U-Net learns to predict
    ("epsilon" or "v_prediction", loss_fn)."""
    images = data.make_shapes(args.n_train, generator=_device.make_generator(args.seed)) if shapes is None else shapes
    mean, std = encode_dataset(parts["vae"], images.images.to(dev))
    store = dict(mean=mean, std=std, scaling_factor=parts["vae"].config.scaling_factor,
                 ids=text.tokenize(parts["tokenizer"], images.captions).to(dev),
                 empty_ids=text.tokenize(parts["tokenizer"], "")[0].to(dev))
    trained, schedule = parts["trained"], parts["schedule"]
    ema = EMA(trained, max_decay=EMA_DECAY)
    start = time.perf_counter()
    checkpointing = (common.checkpointing(args, settings or SETTINGS, vae=str(parts["vae_folder"]))
                     if accelerator else None)
    history = train_loop(trained, lambda batch: loss_fn(trained, schedule, batch, pooled, prediction_type),
                         lambda gen: sample_batch(store, args.batch_size, gen, schedule.num_steps), steps=args.steps,
                         lr=LR, generator=generator, ema=ema, desc=name, accelerator=accelerator,
                         checkpointing=checkpointing, **LOOP)
    common.synchronize(dev)
    return ema.model, history, time.perf_counter() - start


def save(parts: dict, averaged: torch.nn.ModuleDict, out: Path, prediction_type: str = "epsilon",
         zero_terminal_snr: bool = False) -> None:
    """The pipeline from the EMA weights (StableDiffusionPipeline layout, its scheduler saying what the U-Net
    predicts, and with zero_terminal_snr the rescaled schedule sampled from its last step) and the VAE's record
    next to it."""
    scheduler = t2i.build_scheduler()
    more = dict(rescale_betas_zero_snr=True, timestep_spacing="trailing") if zero_terminal_snr else {}
    scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction_type, **more)
    t2i.save_pipeline(t2i.assemble_pipeline(parts["vae"], parts["tokenizer"], averaged["text_encoder"],
                                            averaged["unet"], scheduler), out)
    source = parts["vae_folder"] / VAE_RECORD
    if source.is_file() and source.resolve() != (out / VAE_RECORD).resolve():
        shutil.copyfile(source, out / VAE_RECORD)


def start(args: argparse.Namespace, name: str, detail: str = "") -> tuple:
    """The run's device, accelerator (common.accelerator) and seeded generator, after saying what runs where."""
    dev = training_device()
    accelerator = common.accelerator(args, dev)
    if accelerator.is_main_process:
        print(f"{name} recipe: {args.steps} steps{detail}, profile {args.profile}, device {dev}, "
              f"{accelerator.num_processes} process(es), writing to {args.out}")
    return dev, accelerator, _device.seed_everything(args.seed)


def models_record(pipe, tokenizer) -> dict:
    """The record's description of the pipeline's parts (configs, parameter counts, tokenizer, scheduler)."""
    return dict(unet=dict(config=models.SHAPES_UNET_CONFIG, parameters=models.count_parameters(pipe.unet)),
                text_encoder=dict(config=text.TEXT_ENCODER_CONFIG,
                                  parameters=models.count_parameters(pipe.text_encoder)),
                tokenizer=dict(kind="tokenizers WordLevel as PreTrainedTokenizerFast",
                               vocab_size=len(tokenizer), max_length=text.MAX_LENGTH),
                scheduler="DDIMScheduler, scaled_linear 0.00085..0.012, 1000 train steps")


def main(argv: list[str] | None = None) -> dict | None:
    """Train (on every process of a launch); on the main process assemble, save and measure the text-to-image
    pipeline and write recipe.json and manifest.json into --out at once; returns the record (None elsewhere)."""
    started = time.perf_counter()
    args = parse_args(argv)
    dev, accelerator, generator = start(args, "shapes-t2i")
    parts = load_parts(args, dev)
    try:
        averaged, history, train_s = train(parts, args, dev, generator, accelerator)
    except TrainingInterrupted as err:
        raise common.interrupted(err, "shapes-t2i") from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as staging:
        return save_and_measure(args, parts, averaged, history, train_s, dev, staging, started)


def save_and_measure(args: argparse.Namespace, parts: dict, averaged, history: list[float], train_s: float,
                     dev: torch.device, folder: Path, started: float) -> dict:
    """Save the pipeline into folder, load it back the way users load it, measure it (unless --skip-eval) and
    write recipe.json."""
    save(parts, averaged, folder)
    t_eval = time.perf_counter()
    pipe = t2i.load_pipeline(folder, dev)
    quality = None if args.skip_eval else measure(pipe, args)
    record = common.run_record(
        "shapes-t2i", args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
        quality=quality, eval_s=None if args.skip_eval else time.perf_counter() - t_eval,
        batch_size=args.batch_size, lr=LR, loop=common.loop_settings(**LOOP, ema_max_decay=EMA_DECAY),
        data=dict(kind="captioned shapes (diffusion_lessons.data.make_shapes, caption_style='mixed')",
                  n_train=args.n_train, train_seed=args.seed, image_size=32, latents="4x8x8, scaled VAE samples",
                  vae=str(parts["vae_folder"] / "vae")),
        models=models_record(pipe, parts["tokenizer"]),
        noise_schedule=dict(kind=NOISE_SCHEDULE, num_train_timesteps=pipe.scheduler.config.num_train_timesteps,
                            beta_schedule=pipe.scheduler.config.beta_schedule),
        caption_dropout=CAPTION_DROPOUT)
    common.write_record(record, folder / "recipe.json")
    return record
