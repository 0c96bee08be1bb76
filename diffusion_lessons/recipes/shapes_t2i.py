"""Recipe: the lesson-07 text-to-image model (python -m diffusion_lessons.train shapes-t2i).

Needs the VAE first (python -m diffusion_lessons.train vae, same --out). Trains a word-level
tokenizer's CLIPTextModel and a UNet2DConditionModel jointly on scaled VAE latents of generated
captioned shapes: loss = MSE(eps_theta(z_t, t, text(caption)), eps), captions dropped to the empty
prompt 15% of the time (for classifier-free guidance), EMA of the weights. Saves a diffusers
StableDiffusionPipeline to OUT/ (save_pretrained, safetensors; OUT/vae/ and recipe-vae.json stay)
and OUT/recipe.json with the measured quality.
"""

from __future__ import annotations

import copy
import json
import statistics
import time

import torch
from tqdm.auto import tqdm

from .. import data, device as _device, evaluation, latents, models, t2i, text
from ..schedules import make_schedule
from .vae import cosine_lr, environment, parse_args

SETTINGS = {  # per run profile; --steps overrides steps
    "quick": dict(steps=2400, batch_size=128, n_train=20000, images_per_prompt=8),
    "full": dict(steps=10000, batch_size=128, n_train=50000, images_per_prompt=16),
}
LR, WARMUP, CAPTION_DROPOUT, EMA_DECAY, GRAD_CLIP = 1e-3, 100, 0.15, 0.999, 1.0


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled posterior mean and std (N, 4, 8, 8) of every image: z is sampled from them every step."""
    dists = [latents.posterior(vae, images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter (one fused call)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def train_step(parts: dict, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """One denoising loss on a batch: z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps; predict eps from text."""
    z0, ids = batch["z0"], batch["ids"]
    dev = z0.device
    t = torch.randint(0, parts["schedule"].num_steps, (len(z0),), generator=generator).to(dev)
    eps = torch.randn(z0.shape, generator=generator).to(dev)
    z_t = parts["schedule"].add_noise(z0, eps, t)
    emb = parts["text_encoder"](ids)[0]
    eps_pred = parts["unet"](z_t, t, encoder_hidden_states=emb).sample
    return torch.nn.functional.mse_loss(eps_pred, eps)


def sample_batch(store: dict, batch_size: int, generator: torch.Generator) -> dict:
    """Random captioned latents: z0 = scaling_factor * (mean + std * noise); 15% of captions -> empty prompt."""
    idx = torch.randint(0, len(store["ids"]), (batch_size,), generator=generator)
    noise = torch.randn((batch_size, *store["mean"].shape[1:]), generator=generator)
    dev = store["mean"].device
    idx_d = idx.to(dev)
    z0 = (store["mean"][idx_d] + store["std"][idx_d] * noise.to(dev)) * store["scaling_factor"]
    drop = (torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT).to(dev)
    ids = torch.where(drop[:, None], store["empty_ids"][None, :], store["ids"][idx_d])
    return dict(z0=z0, ids=ids)


def fit(parts: dict, store: dict, args, generator: torch.Generator) -> list[float]:
    """AdamW on text encoder + U-Net with a cosine learning rate and EMA; returns the loss of every step."""
    trained = [parts["text_encoder"], parts["unet"]]
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    history = []
    for step in (bar := tqdm(range(args.steps), desc="shapes-t2i")):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps, LR, WARMUP)
        loss = train_step(parts, sample_batch(store, args.batch_size, generator), generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        for model, ema in zip(trained, parts["ema"]):
            ema_update(ema, model, decay)
        history.append(loss.item())
        bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    return history


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


def load_parts(args, dev: torch.device) -> dict:
    """The trained VAE (frozen) and fresh tokenizer, text encoder, U-Net, their EMA copies and the schedule."""
    from diffusers import AutoencoderKL

    if not (args.out / "vae" / "config.json").is_file():
        raise FileNotFoundError(f"{args.out / 'vae'} is missing: run python -m diffusion_lessons.train vae "
                                f"--out {args.out} first")
    vae = AutoencoderKL.from_pretrained(args.out / "vae", use_safetensors=True, local_files_only=True)
    tokenizer = text.build_tokenizer()
    parts = dict(vae=vae.to(dev).eval().requires_grad_(False), tokenizer=tokenizer,
                 text_encoder=text.build_text_encoder(tokenizer, seed=args.seed).to(dev).train(),
                 unet=models.build_shapes_unet(seed=args.seed).to(dev).train(),
                 schedule=make_schedule("scaled_linear"))
    parts["ema"] = [copy.deepcopy(parts[m]).requires_grad_(False) for m in ("text_encoder", "unet")]
    return parts


def main(argv: list[str] | None = None) -> dict:
    """Train, assemble, save and measure the text-to-image pipeline; returns the recipe record."""
    args = parse_args(argv, "shapes-t2i", __doc__, SETTINGS)
    start, dev = time.time(), _device.pick_device()
    generator = _device.seed_everything(args.seed)
    parts = load_parts(args, dev)
    train = data.make_shapes(args.n_train, generator=_device.make_generator(args.seed))
    mean, std = encode_dataset(parts["vae"], train.images.to(dev))
    store = dict(mean=mean, std=std, scaling_factor=parts["vae"].config.scaling_factor,
                 ids=text.tokenize(parts["tokenizer"], train.captions).to(dev),
                 empty_ids=text.tokenize(parts["tokenizer"], "")[0].to(dev))
    t_train = time.time()
    history = fit(parts, store, args, generator)
    train_s = time.time() - t_train
    text_encoder, unet = (m.eval() for m in parts["ema"])
    t2i.save_pipeline(t2i.assemble_pipeline(parts["vae"], parts["tokenizer"], text_encoder, unet), args.out)
    pipe = t2i.load_pipeline(args.out, dev)  # measure what was saved, loaded back the way users load it
    record = dict(
        recipe="python -m diffusion_lessons.train shapes-t2i " + " ".join(argv or []),
        data=dict(kind="captioned shapes (diffusion_lessons.data.make_shapes, caption_style='mixed')",
                  n_train=args.n_train, train_seed=args.seed, image_size=32, latents="4x8x8, scaled VAE samples"),
        models=dict(unet=dict(config=models.SHAPES_UNET_CONFIG, parameters=models.count_parameters(unet)),
                    text_encoder=dict(config=text.TEXT_ENCODER_CONFIG,
                                      parameters=models.count_parameters(text_encoder)),
                    tokenizer=dict(kind="tokenizers WordLevel as PreTrainedTokenizerFast",
                                   vocab_size=len(parts["tokenizer"]), max_length=text.MAX_LENGTH),
                    scheduler="DDIMScheduler, scaled_linear 0.00085..0.012, 1000 train steps"),
        seed=args.seed, profile=args.profile, steps=args.steps, batch_size=args.batch_size, lr=LR, warmup=WARMUP,
        lr_schedule="cosine to 0", optimizer="AdamW", grad_clip=GRAD_CLIP, caption_dropout=CAPTION_DROPOUT,
        ema_decay=EMA_DECAY, final_loss=sum(history[-100:]) / len(history[-100:]),
        train_seconds=round(train_s, 1), steps_per_second=round(args.steps / train_s, 2),
        quality=measure(pipe, args), **environment(dev))
    record["wall_seconds"] = round(time.time() - start, 1)
    (args.out / "recipe.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({k: record[k] for k in ("steps", "final_loss", "quality", "wall_seconds")}))
    return record
