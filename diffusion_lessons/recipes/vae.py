"""Recipe: the lesson-06 AutoencoderKL on generated captioned shapes (python -m diffusion_lessons.train vae).

Loss = MSE(decoder(z), x) + kl_weight * KL(q(z | x) || N(0, I)), z sampled from q(z | x).
After training it computes the latent scaling factor (1 / std of the latents, as Stable
Diffusion's 0.18215 was found), stores it in the VAE's config and saves
OUT/vae/ (save_pretrained, safetensors) and OUT/recipe-vae.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import data, device as _device, evaluation, latents, models

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pretrained" / "shapes-t2i"
SETTINGS = {  # per run profile; --steps overrides steps
    "quick": dict(steps=1200, batch_size=64, n_train=20000),
    "full": dict(steps=5000, batch_size=128, n_train=50000),
}
LR, WARMUP, KL_WEIGHT, N_TEST = 1e-3, 50, 1e-6, 1000


def parse_args(argv: list[str] | None, name: str, description: str, settings: dict) -> argparse.Namespace:
    """--steps, --out, --profile, --seed, and one option per setting (--batch-size, --n-train, ...);
    settings left out come from the run profile (quick on a CPU, full on a GPU)."""
    parser = argparse.ArgumentParser(prog=f"python -m diffusion_lessons.train {name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--profile", choices=_device.PROFILES, default=None,
                        help="quick (CPU) or full (GPU); default: diffusion_lessons.device.run_profile()")
    parser.add_argument("--seed", type=int, default=0)
    for key in settings["quick"]:
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=f"default: {settings['quick'][key]} (quick), {settings['full'][key]} (full)")
    args = parser.parse_args(argv)
    args.profile = args.profile or _device.run_profile()
    for key, value in settings[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        elif getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    return args


def cosine_lr(step: int, steps: int, lr: float = LR, warmup: int = WARMUP) -> float:
    """Linear warm-up for `warmup` steps, then cosine decay from lr to 0 at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform reports, with the core count."""
    name = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else name
    return f"{name}, {os.cpu_count()} cores"


def environment(dev: torch.device) -> dict:
    """Hardware and library versions for the recipe record."""
    import diffusers
    import transformers

    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return dict(device=str(dev), hardware=hardware, cpu_threads=torch.get_num_threads(),
                python=platform.python_version(),
                torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__)


def vae_loss(vae, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE of the reconstruction, KL per image) for a batch x in [-1, 1]."""
    dist = latents.posterior(vae, x)
    eps = torch.randn(dist.mean.shape, generator=generator).to(x.device)
    x_hat = vae.decode(dist.mean + dist.std * eps).sample
    return torch.nn.functional.mse_loss(x_hat, x), dist.kl().mean()


def train_vae(vae, images: torch.Tensor, args, generator: torch.Generator) -> list[float]:
    """AdamW with a cosine learning rate; returns the loss after every step."""
    opt = torch.optim.AdamW(vae.parameters(), lr=LR, weight_decay=0.0)
    history = []
    for step in (bar := tqdm(range(args.steps), desc="vae")):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps)
        idx = torch.randint(0, len(images), (args.batch_size,), generator=generator)
        mse, kl = vae_loss(vae, images[idx], generator)
        loss = mse + KL_WEIGHT * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        bar.set_postfix(mse=f"{float(mse):.4f}", kl=f"{float(kl):.0f}", refresh=False)
    return history


@torch.no_grad()
def measure_vae(vae, test: data.ShapesData, dev: torch.device) -> dict:
    """Round-trip MSE on held-out images and how often the reader still reads their reconstructions."""
    x_hat = torch.cat([latents.reconstruct(vae, test.images[i:i + 250].to(dev)).cpu()
                       for i in range(0, len(test), 250)])
    read = evaluation.read_accuracy(evaluation.read_shapes(x_hat), test.attributes)
    return dict(test_mse=float(((x_hat - test.images) ** 2).mean()),
                test_mse_worst_image=float(((x_hat - test.images) ** 2).mean((1, 2, 3)).max()),
                reader_on_reconstructions={k: round(v, 4) for k, v in read.items()})


def main(argv: list[str] | None = None) -> dict:
    """Train, measure and save the VAE; returns the recipe record."""
    args = parse_args(argv, "vae", __doc__, SETTINGS)
    start, dev = time.time(), _device.pick_device()
    generator = _device.seed_everything(args.seed)
    train = data.make_shapes(args.n_train, generator=_device.make_generator(args.seed))
    test = data.make_shapes(N_TEST, generator=_device.make_generator(args.seed + 1))
    vae = models.build_shapes_vae(seed=args.seed).to(dev).train()
    t_train = time.time()
    history = train_vae(vae, train.images.to(dev), args, generator)
    train_s = time.time() - t_train
    vae.eval()
    factor = latents.compute_scaling_factor(vae, train.images[:4000].to(dev), _device.make_generator(args.seed + 2))
    latents.set_scaling_factor(vae, factor)
    args.out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.out / "vae", safe_serialization=True)
    record = dict(
        recipe="python -m diffusion_lessons.train vae " + " ".join(argv or []),
        data=dict(kind="captioned shapes (diffusion_lessons.data.make_shapes)", n_train=args.n_train,
                  train_seed=args.seed, n_test=N_TEST, test_seed=args.seed + 1, image_size=32),
        model=dict(kind="diffusers AutoencoderKL", config=models.SHAPES_VAE_CONFIG,
                   parameters=sum(p.numel() for p in vae.parameters())),
        seed=args.seed, profile=args.profile, steps=args.steps, batch_size=args.batch_size, lr=LR, warmup=WARMUP,
        lr_schedule="cosine to 0", optimizer="AdamW", kl_weight=KL_WEIGHT,
        scaling_factor=factor, scaling_factor_from="1 / std of latents sampled from q(z|x) on 4000 training images",
        final_loss=sum(history[-50:]) / len(history[-50:]), train_seconds=round(train_s, 1),
        steps_per_second=round(args.steps / train_s, 2),
        quality=measure_vae(vae, test, dev), **environment(dev))
    record["wall_seconds"] = round(time.time() - start, 1)
    (args.out / "recipe-vae.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({k: record[k] for k in ("steps", "final_loss", "scaling_factor", "quality", "wall_seconds")}))
    return record
