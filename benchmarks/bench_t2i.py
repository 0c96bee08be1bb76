"""Text to image speed (lessons 00 and 07): 4 pictures of 32x32 from prompts with 25 DDIM steps and
guidance 7.5, through the shipped StableDiffusionPipeline; the target on the 2-core CPU is at most 3 s.

    python benchmarks/bench_t2i.py [--images 4] [--steps 25] [--repeats 5]

Uses the shipped shapes-t2i pipeline when there is one, else untrained parts of the same shapes
(speed does not depend on the weights). bench_t2i() returns the numbers as a dict.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion_lessons import data, models, pretrained, t2i, text
from diffusion_lessons.device import make_generator, pick_device


def load_pipeline(device: torch.device):
    """The shipped pipeline, or one assembled from untrained parts of the same shapes."""
    try:
        return pretrained.load_pretrained("shapes-t2i", device=device), "shipped shapes-t2i pipeline"
    except (FileNotFoundError, OSError):
        tokenizer = text.build_tokenizer()
        pipe = t2i.assemble_pipeline(models.build_shapes_vae(), tokenizer, text.build_text_encoder(tokenizer),
                                     models.build_shapes_unet())
        return pipe.to(device), "untrained parts of the shipped shapes"


def bench_t2i(device: torch.device | None = None, images: int = 4, steps: int = 25, repeats: int = 5) -> dict:
    """Median and best wall time of pipe(prompts, num_inference_steps=steps) after one warm-up call."""
    device = device or pick_device()
    pipe, source = load_pipeline(device)
    prompts = (data.shape_prompts() * images)[:images]
    seconds = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        t2i.pipeline_images(pipe, prompts, make_generator(i), num_inference_steps=steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    label = f"{images} images 32x32, {steps} steps, guidance {t2i.DEFAULT_GUIDANCE}"
    return {"model": source, "device": str(device), "torch threads": torch.get_num_threads(),
            f"{label}: median s": round(statistics.median(seconds[1:]), 3),
            f"{label}: best s": round(min(seconds[1:]), 3),
            "first call (warm-up) s": round(seconds[0], 3), "target (2-core CPU) s": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = bench_t2i(images=args.images, steps=args.steps, repeats=args.repeats)
    width = max(len(k) for k in result)
    print(f"| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in result.items():
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
