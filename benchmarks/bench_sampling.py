"""Sampling speed: the package's sample loop against the loop of diffusers' pipelines on the same UNet,
and classifier-free guidance as one batched pass against two separate passes (both in diffusers' loop;
the package's loop guides with guided_denoiser's default batch_guidance='auto', which picks one of the
two per device and batch size: docs/performance.md).

    python benchmarks/bench_sampling.py [--batch 80] [--steps 50] [--repeats 3]

Uses the shipped digits model when there is one, else a randomly initialised one of the same shape
(speed does not depend on the weights). bench_sampling() returns the numbers as a dict.
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import DDIMScheduler

from diffusion_lessons.data import NULL_LABEL
from diffusion_lessons.device import pick_device
from diffusion_lessons.models import build_digits_unet
from diffusion_lessons.recipes.digits import make_scheduler
from diffusion_lessons.sampling import sample


def load_model(device: torch.device):
    """The shipped digits UNet and scheduler, or a random-init UNet of the same shape."""
    from diffusion_lessons.pretrained import load_pretrained

    try:
        unet, scheduler = load_pretrained("digits", device=device)
        return unet, scheduler, "shipped digits model"
    except FileNotFoundError:
        return build_digits_unet(seed=0).to(device).eval(), make_scheduler(), "random-init digits UNet2DModel"


@torch.no_grad()
def diffusers_loop(unet, scheduler: DDIMScheduler, labels, x_T, steps: int, guidance_scale: float = 1.0,
                   two_passes: bool = False) -> torch.Tensor:
    """The denoising loop of diffusers' pipelines (as in DDIMPipeline / StableDiffusionPipeline)."""
    scheduler.set_timesteps(steps, device=x_T.device)
    x, guided = x_T, guidance_scale != 1.0
    null = torch.full_like(labels, NULL_LABEL)
    both = torch.cat([null, labels])
    for t in scheduler.timesteps:
        if not guided:
            eps = unet(x, t, class_labels=labels).sample
        elif two_passes:
            eps_uncond, eps_cond = unet(x, t, class_labels=null).sample, unet(x, t, class_labels=labels).sample
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        else:
            eps_uncond, eps_cond = unet(torch.cat([x] * 2), t, class_labels=both).sample.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x


def _auto_path(x: torch.Tensor) -> str:
    """The path the package's guidance (guided_denoiser, batch_guidance='auto') takes for states like x."""
    from diffusion_lessons.guidance import guided_denoiser

    calls = []
    null = torch.full((x.shape[0],), NULL_LABEL, device=x.device)
    guided_denoiser(lambda x_in, t, c: calls.append(x_in.shape[0]) or x_in, 3.0, null)(x, torch.tensor(0), null)
    return "one batched pass" if len(calls) == 1 else "two passes"


def _load() -> float:
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _best_time(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _compare(fns: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Best-of-`repeats` seconds for each function, run interleaved after one warm-up each."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], _best_time(fn, device))
    return best


def bench_sampling(batch: int = 80, steps: int = 50, repeats: int = 3, guidance_scale: float = 3.0,
                   device: torch.device | str | None = None) -> dict:
    """Seconds for the package's loop and diffusers' loop (unguided and guided), their ratios
    (package / diffusers: <= 1 means not slower), and batched guidance against two passes (diffusers' loop
    both times: one pass on [x; x] against two passes on x; the package takes the path 'auto' picks)."""
    device = torch.device(device) if device is not None else pick_device()
    unet, scheduler, what = load_model(device)
    labels = torch.arange(batch, device=device) % 10
    x_T = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)
    ours = lambda s: sample(unet, scheduler, labels, steps=steps, guidance_scale=s, x_T=x_T,  # noqa: E731
                            progress=False, spacing=scheduler.config.timestep_spacing)
    theirs = lambda s, two=False: diffusers_loop(unet, scheduler, labels, x_T, steps, s, two)  # noqa: E731
    max_diff = (ours(guidance_scale) - theirs(guidance_scale)).abs().max().item()
    t = _compare({"package": lambda: ours(1.0), "diffusers": lambda: theirs(1.0),
                  "package_guided": lambda: ours(guidance_scale), "diffusers_guided": lambda: theirs(guidance_scale),
                  "two_passes_guided": lambda: theirs(guidance_scale, True)}, repeats, device)
    return dict(model=what, device=str(device), batch=batch, steps=steps, guidance_scale=guidance_scale,
                repeats=repeats, package_s=t["package"], diffusers_s=t["diffusers"],
                ratio=t["package"] / t["diffusers"], package_guided_s=t["package_guided"],
                diffusers_guided_s=t["diffusers_guided"], ratio_guided=t["package_guided"] / t["diffusers_guided"],
                two_passes_guided_s=t["two_passes_guided"],
                batched_over_two_passes=t["diffusers_guided"] / t["two_passes_guided"],
                package_guidance=_auto_path(x_T), load_average=_load(), torch_threads=torch.get_num_threads(),
                max_abs_diff=max_diff)


def format_table(r: dict) -> str:
    """The numbers as a small table."""
    lines = [f"sampling {r['batch']} images x {r['steps']} DDIM steps, {r['model']}, {r['device']}, "
             f"best of {r['repeats']}",
             f"{'':34s}{'package':>10s}{'diffusers':>11s}{'ratio':>8s}",
             f"{'no guidance (s = 1)':34s}{r['package_s']:9.2f}s{r['diffusers_s']:10.2f}s{r['ratio']:8.2f}",
             f"{'guidance s = %g' % r['guidance_scale']:34s}{r['package_guided_s']:9.2f}s"
             f"{r['diffusers_guided_s']:10.2f}s{r['ratio_guided']:8.2f}",
             f"batched guidance / two separate passes (diffusers' loop): {r['batched_over_two_passes']:.2f} "
             f"({r['diffusers_guided_s']:.2f}s vs {r['two_passes_guided_s']:.2f}s); "
             f"the package's guidance ran {r['package_guidance']}",
             f"load average after the run: {r['load_average']:.2f}, {r['torch_threads']} torch threads",
             f"largest difference between the two loops' images: {r['max_abs_diff']:.2e}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=80)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = bench_sampling(args.batch, args.steps, args.repeats)
    print(format_table(result))
    return result


if __name__ == "__main__":
    main()
