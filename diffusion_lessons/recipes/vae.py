"""Recipe: the lesson-06 AutoencoderKL on generated captioned shapes (python -m diffusion_lessons.train vae).

Loss = MSE(decoder(z), x) + kl_weight * KL(q(z | x) || N(0, I)), z sampled from q(z | x), trained in
training.train_loop (AdamW, diffusers' cosine LR with warm-up, no EMA). After training it computes the
latent scaling factor (1 / std of the latents, as Stable Diffusion's 0.18215 was found), stores it in
the VAE's config and saves OUT/vae/ (save_pretrained, safetensors), OUT/recipe-vae.json (the record of
recipes.common) and OUT/manifest.json, all at once (recipes.common.publish). OUT: --out, default
./runs/vae-<timestamp>, a folder of its own (never another model's); train shapes-t2i with --vae OUT next.
"""

from __future__ import annotations

import argparse
import time

import torch

from .. import data, device as _device, evaluation, latents, models
from ..training import TrainingInterrupted, train_loop, training_device
from . import common

SETTINGS = {  # per run profile; --steps, --batch-size, --n-train override them
    "quick": dict(steps=1200, batch_size=64, n_train=20000),
    "full": dict(steps=5000, batch_size=128, n_train=50000),
}
LR, WARMUP, KL_WEIGHT, N_TEST = 1e-3, 50, 1e-6, 1000
LOOP = dict(weight_decay=0.0, warmup=WARMUP, max_grad_norm=None)  # train_loop's settings: no clipping, no EMA
RECORD = "recipe-vae.json"
OUTPUTS = ("vae", RECORD)  # what OUT holds


def latent_shape(vae, x_shape: torch.Size) -> tuple[int, ...]:
    """The shape of the latents of images shaped x_shape: latent_channels, and H, W halved per down block."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return (x_shape[0], vae.config.latent_channels, x_shape[2] // factor, x_shape[3] // factor)


def vae_loss(vae, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE of the reconstruction, KL per image) for a batch x in [-1, 1], decoding z = mean + std * eps."""
    dist = latents.posterior(vae, x)
    x_hat = vae.decode(dist.mean + dist.std * eps.to(x.device)).sample
    return torch.nn.functional.mse_loss(x_hat, x), dist.kl().mean()


@torch.no_grad()
def measure_vae(vae, test: data.ShapesData, dev: torch.device) -> dict:
    """Round-trip MSE on held-out images and how often the reader still reads their reconstructions."""
    x_hat = torch.cat([latents.reconstruct(vae, test.images[i:i + 250].to(dev)).cpu()
                       for i in range(0, len(test), 250)])
    read = evaluation.read_accuracy(evaluation.read_shapes(x_hat), test.attributes)
    return dict(test_mse=float(((x_hat - test.images) ** 2).mean()),
                test_mse_worst_image=float(((x_hat - test.images) ** 2).mean((1, 2, 3)).max()),
                reader_on_reconstructions={k: round(v, 4) for k, v in read.items()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return common.parse(common.make_parser("vae", __doc__, SETTINGS), argv, "vae", SETTINGS, outputs=OUTPUTS)


def train(args: argparse.Namespace, dev: torch.device, images: torch.Tensor,
          accelerator=None, build=models.build_shapes_vae, name: str = "vae",
          settings: dict | None = None) -> tuple[torch.nn.Module, list, float]:
    """Build the VAE (build(seed=...), default the lesson-06 one; settings: its recipe's SETTINGS, default this
    one's) from the seed and run train_loop on random batches of images (under `accelerator`, with the
    run's checkpoints, when given); returns the trained VAE, the loss history and the training seconds."""
    generator = _device.seed_everything(args.seed)
    vae = build(seed=args.seed).to(dev)
    images = images.to(dev)

    def batch_fn(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch: random images and the noise that samples their latents."""
        x = images[torch.randint(0, len(images), (args.batch_size,), generator=gen).to(dev)]
        return x, torch.randn(latent_shape(vae, x.shape), generator=gen)

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mse, kl = vae_loss(vae, *batch)
        return mse + KL_WEIGHT * kl

    checkpointing = common.checkpointing(args, settings or SETTINGS) if accelerator is not None else None
    start = time.perf_counter()
    history = train_loop(vae, loss_fn, batch_fn, steps=args.steps, lr=LR, generator=generator, desc=name,
                         accelerator=accelerator, checkpointing=checkpointing, **LOOP)
    common.synchronize(dev)
    return vae, history, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict | None:
    """Train (on every process of a launch); on the main process set the scaling factor, then save, measure and
    write recipe-vae.json and manifest.json into --out at once; returns the record (None on the others)."""
    started = time.perf_counter()
    args = parse_args(argv)
    dev = training_device()
    accelerator = common.accelerator(args, dev)
    if accelerator.is_main_process:
        print(f"vae recipe: {args.steps} steps, profile {args.profile}, device {dev}, "
              f"{accelerator.num_processes} process(es), writing to {args.out}")
    images = data.make_shapes(args.n_train, generator=_device.make_generator(args.seed)).images
    try:
        vae, history, train_s = train(args, dev, images, accelerator)
    except TrainingInterrupted as err:
        raise common.interrupted(err, "vae") from None
    if not accelerator.is_main_process:
        return None
    factor = latents.compute_scaling_factor(vae, images[:4000].to(dev), _device.make_generator(args.seed + 2))
    latents.set_scaling_factor(vae, factor)
    with common.publish(args.out, args.keep_checkpoints) as staging:
        return save_and_measure(args, vae, factor, history, train_s, dev, staging, started)


def save_and_measure(args: argparse.Namespace, vae, factor: float, history: list[float], train_s: float,
                     dev: torch.device, folder, started: float) -> dict:
    """Save vae/ into folder, measure it (unless --skip-eval) and write recipe-vae.json."""
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    t_eval = time.perf_counter()
    quality = None if args.skip_eval else measure_vae(
        vae, data.make_shapes(N_TEST, generator=_device.make_generator(args.seed + 1)), dev)
    record = common.run_record(
        "vae", args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev, quality=quality,
        eval_s=None if args.skip_eval else time.perf_counter() - t_eval, batch_size=args.batch_size, lr=LR,
        data=dict(kind="captioned shapes (diffusion_lessons.data.make_shapes)", n_train=args.n_train,
                  train_seed=args.seed, n_test=N_TEST, test_seed=args.seed + 1, image_size=32),
        loop=common.loop_settings(**LOOP),
        vae=dict(kind="diffusers AutoencoderKL", config=models.SHAPES_VAE_CONFIG,
                 parameters=models.count_parameters(vae)),
        kl_weight=KL_WEIGHT, scaling_factor=factor,
        scaling_factor_from="1 / std of latents sampled from q(z|x) on the first 4000 training images")
    common.write_record(record, folder / RECORD, show=("steps", "wall_time_s", "final_loss", "scaling_factor",
                                                         "quality"))
    return record
