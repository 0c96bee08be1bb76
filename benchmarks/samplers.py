"""One model, many solvers, on equal footing (lesson 09's recorded table): python benchmarks/samplers.py

The shipped Part I digits model (v-prediction, cosine schedule), guidance 3, 20 samples per digit (n = 200 per
row), every row from the same starting noise (seed 0). For each solver (Euler, Heun, DPM-Solver++ 2M, UniPC,
DDIM, diffusers' schedulers built by diffusion_lessons.solvers.make_solver from the shipped scheduler config) and
each ladder (leading = the shipped config's spacing, trailing, Karras from the schedule's largest sigma, Karras
from sigma_max 80; DDIM has no Karras ladder) at a budget of about 5, 10 and 25 model evaluations (Heun's N steps
cost 2N - 1), plus DDIM at 50 steps as the book's reference and DDIM trailing with zero-terminal-SNR betas:
fidelity and rough share (Wilson 95% intervals), diversity (bootstrap 95%), the evaluations actually made.
Writes benchmarks/samplers/digits.json with the weights' SHA-256, the command, date, hardware and wall time.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/samplers.py   # 781 evaluations of 400 digits: 15-20 min, one thread
    python benchmarks/samplers.py --per-label 2 --budgets 2 3 --out /tmp/s.json    # a smoke run (20 s)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "samplers" / "digits.json"
BUDGETS = (5, 10, 25)
GUIDANCE = 3.0
SEED = 0
SOLVER_ORDER = ("euler", "heun", "dpm++2m", "unipc", "ddim")


def settings(budgets=BUDGETS) -> list[tuple[str, str, int, dict]]:
    """(solver, ladder, evaluation budget, make_solver arguments) for every row of the table."""
    from diffusion_lessons.solvers import LADDERS

    rows = []
    for name in SOLVER_ORDER:
        for ladder, kwargs in LADDERS.items():
            if name == "ddim" and kwargs.get("karras"):
                continue
            rows += [(name, ladder, budget, dict(kwargs)) for budget in budgets]
    rows.append(("ddim", "leading", 50, dict(LADDERS["leading"])))                            # the book's reference
    rows += [("ddim", "trailing+zero_snr", b, dict(spacing="trailing", zero_snr=True)) for b in budgets[:2]]
    return rows


def measure(per_label: int, budgets, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from diffusion_lessons import evaluation
    from diffusion_lessons.pretrained import load_pretrained
    from diffusion_lessons.solvers import make_solver, sample_with_solver, steps_for_evaluations

    unet, shipped = load_pretrained("digits", "cpu")
    classifier = evaluation.train_digit_classifier(unet.config.sample_size)
    labels = torch.arange(10).repeat_interleave(per_label)
    x_T = torch.randn(len(labels), 1, unet.config.sample_size, unet.config.sample_size,
                      generator=torch.Generator().manual_seed(SEED))     # the same starting noise for every row
    rows = {}
    for name, ladder, budget, kwargs in tqdm(settings(budgets), desc="settings", disable=not progress):
        scheduler = make_solver(name, shipped, **kwargs)
        steps = steps_for_evaluations(name, budget)
        start = time.perf_counter()
        run = sample_with_solver(unet, scheduler, labels, num_steps=steps, guidance_scale=GUIDANCE, x_T=x_T)
        seconds = time.perf_counter() - start
        row = {k: est.as_dict() for k, est in evaluation.measure_digits(run.images, labels, classifier).items()}
        rows[f"{name}/{ladder}/{budget}"] = dict(solver=name, ladder=ladder, budget=budget, steps=steps,
                                                 evaluations=run.evaluations, first_timestep=run.timesteps[0],
                                                 sampling_s=round(seconds, 2), **row)
    return dict(rows=rows, classifier_held_out_accuracy=round(classifier.held_out_accuracy, 4),
                real_roughness_max=round(float(evaluation.real_roughness(unet.config.sample_size)[-1]), 5))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=20, help="samples per digit and row (default 20: n = 200)")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS),
                        help="model-evaluation budgets (default 5 10 25)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the record (default {OUT})")
    args = parser.parse_args(argv)
    if args.per_label < 2:
        parser.error(f"--per-label must be >= 2 (diversity needs pairs), got {args.per_label}")
    if len(args.budgets) < 2 or min(args.budgets) < 1:
        parser.error(f"--budgets needs at least two budgets >= 1, got {args.budgets}")
    sys.path.insert(0, str(ROOT))
    import diffusers

    from diffusion_lessons.measure import _hardware, model_hashes
    from diffusion_lessons.pretrained import pretrained_path

    start = time.perf_counter()
    results = measure(args.per_label, tuple(args.budgets))
    command = "python benchmarks/samplers.py" + (f" --per-label {args.per_label}" if args.per_label != 20 else "") \
        + (f" --budgets {' '.join(map(str, args.budgets))}" if tuple(args.budgets) != BUDGETS else "")
    record = dict(model="digits", model_sha256=model_hashes(pretrained_path("digits")), command=command,
                  settings=dict(guidance_scale=GUIDANCE, per_label=args.per_label, per_setting=10 * args.per_label,
                                seed=SEED, budgets=list(args.budgets),
                                starting_noise="one tensor drawn with torch.Generator().manual_seed(seed), "
                                               "used for every row",
                                key="solver/ladder/budget; budget = the most model evaluations allowed, "
                                    "evaluations = those made (Heun: 2 steps - 1)",
                                ladders="leading: the shipped config's timestep spacing; trailing: starts at "
                                        "t = 999; karras: Karras sigmas from the schedule's largest sigma; karras80: "
                                        "Karras sigmas from sigma_max = 80; trailing+zero_snr: "
                                        "rescale_betas_zero_snr=True"),
                  measures=dict(fidelity="share read as the asked digit (evaluation.train_digit_classifier; Wilson "
                                         "95% interval)",
                                rough="share rougher than the roughest real digit (evaluation.rough_mask; Wilson)",
                                diversity="within-class diversity between shapes, 1.0 = real held-out digits "
                                          "(bootstrap 95%)",
                                pixel_diversity="the same in raw pixels (bootstrap)"),
                  **results, wall_time_s=round(time.perf_counter() - start, 1), hardware=_hardware(),
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                  versions=dict(torch=torch.__version__, diffusers=diffusers.__version__))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} ({record['wall_time_s']} s)")
    return record


if __name__ == "__main__":
    main()
