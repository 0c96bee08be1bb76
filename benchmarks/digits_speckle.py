"""Where the digits' speckle comes from, measured: python benchmarks/digits_speckle.py MODEL_DIR NAME.

One digits model (a folder with unet/ and scheduler/), sampled by the package's loop with several samplers
from the same starting noise, 20 per digit (n = 200 per row): the share of samples rougher than every real
digit and the share read as the asked digit, each with a Wilson 95% interval. Writes
benchmarks/digits-speckle/NAME.json with the weights' SHA-256. Run it on the eps-prediction model that
shipped before (git show 90460f3:diffusion_lessons/pretrained/digits/...) and on the v-prediction one
that ships now (both records are kept in benchmarks/digits-speckle/).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROWS = [  # (sampler, steps, eta, guidance)
    ("ddim", 50, 0.0, 1.0), ("ddim", 50, 0.0, 3.0), ("ddpm", 50, None, 3.0),
]



def run(model_dir: Path, per_label: int = 20) -> dict:
    from diffusers import DDIMScheduler, UNet2DModel

    from diffusion_lessons import evaluation
    from diffusion_lessons.measure import model_hashes
    from diffusion_lessons.sampling import sample
    from diffusion_lessons.stats import proportion

    unet = UNet2DModel.from_pretrained(model_dir / "unet", use_safetensors=True, local_files_only=True).eval()
    scheduler = DDIMScheduler.from_pretrained(model_dir / "scheduler", local_files_only=True)
    classifier = evaluation.train_digit_classifier(16)
    labels = torch.arange(10).repeat_interleave(per_label)
    rows = []
    for sampler, steps, eta, scale in ROWS:
        gen = torch.Generator().manual_seed(0)
        images = sample(unet, scheduler, labels, steps=steps, sampler=sampler, eta=eta, guidance_scale=scale,
                        generator=gen, progress=False).cpu()
        rows.append(dict(sampler=sampler, steps=steps, eta=eta, guidance=scale,
                         kind="deterministic" if sampler == "ddim" and eta == 0 else "stochastic",
                         rough=proportion(evaluation.rough_mask(images)).as_dict(),
                         fidelity=proportion(classifier.predict(images) == labels).as_dict()))
        print(rows[-1], flush=True)
    return dict(model_sha256=model_hashes(model_dir), prediction_type=scheduler.config.prediction_type,
                per_label=per_label, rows=rows)


if __name__ == "__main__":
    model_dir, name = Path(sys.argv[1]), sys.argv[2]
    start = time.perf_counter()
    record = run(model_dir)
    record["wall_time_s"] = round(time.perf_counter() - start, 1)
    record["command"] = f"python benchmarks/digits_speckle.py {sys.argv[1]} {name}"
    out = Path(__file__).resolve().parent / "digits-speckle" / f"{name}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
