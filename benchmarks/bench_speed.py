"""Where the digits UNet's time goes, and what makes it faster on this machine:

- cfg: classifier-free guidance as one batched pass of 2B against two passes of B, per network
  evaluation, for several batch sizes, with the per-operator profile of one forward pass at B and 2B
  (which operators cost more per sample in the bigger batch) and the path the package picks ('auto');
- attention: the guided digits sampler with diffusers' AttnProcessor2_0 (fused scaled-dot-product
  attention, diffusers' default) against the classic AttnProcessor, channels-last memory format, and
  torch.compile of the UNet (only with --compile: inductor compiles C++ on a CPU, which takes minutes here);
- utilisation: FLOPs of a forward pass and of a training step (torch.utils.flop_counter), measured time,
  GFLOP/s and the share of this CPU's fp32 peak (estimated from /proc/cpuinfo, and measured as a large
  matmul's rate), for torch thread counts and batch sizes; torch.profiler's top operators.

    python benchmarks/bench_speed.py [--sections cfg,attention,utilisation] [--compile] [--repeats 5]

Every figure carries the machine's load average and the thread count at the time it was taken: on a
shared machine wall times are inflated. A/B variants run interleaved (A, B, A, B, ...) after one warm-up
each, and the median is reported, so that load affects them alike. bench_speed() returns the figures as
a nested dict (make bench prints them).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import time
from typing import Callable

import torch

from diffusion_lessons.data import NULL_LABEL
from diffusion_lessons.device import pick_device
from diffusion_lessons.guidance import guided_denoiser
from diffusion_lessons.loop import unet_denoiser
from diffusion_lessons.sampling import sample

SECTIONS = ("cfg", "attention", "utilisation")


# ---- measuring ---------------------------------------------------------------------------------

def load_average() -> float:
    """The 1-minute load average (runnable processes); 0 where the OS does not say."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def conditions(device: torch.device) -> str:
    """'load 1.02, 2 threads': the state a figure was measured in."""
    n = torch.get_num_threads()
    threads = f"{n} thread{'s' if n != 1 else ''}" if device.type == "cpu" else str(device)
    return f"load {load_average():.2f}, {threads}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every call: one warm-up each, then rounds A, B, A, B, ... (`repeats` rounds)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn, device))
    return times


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def auto_path(x: torch.Tensor) -> str:
    """The path guided_denoiser's default (batch_guidance='auto') takes for states like x."""
    calls = []

    def count(x_in, t, cond):
        calls.append(x_in.shape[0])
        return x_in

    null = torch.full((x.shape[0],), NULL_LABEL, device=x.device)
    guided_denoiser(count, 3.0, null)(x, torch.tensor(0), null)
    return "one batched pass" if len(calls) == 1 else "two passes"


def load_digits(device: torch.device):
    """The shipped digits UNet2DModel and its scheduler (a random-init one of the same shape if absent)."""
    from bench_sampling import load_model

    return load_model(device)


# ---- the CPU's peak ------------------------------------------------------------------------------

def _cpuinfo() -> dict:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in first.splitlines()))
    return fields


def cpu_peak(threads: int) -> dict:
    """Theoretical fp32 peak of `threads` cores: cores x clock x FLOPs per cycle, with the assumption stated.

    FLOPs per cycle cannot be read from the flags alone (they say which instructions exist, not how many
    FMA units execute them): assumed 2 FMA pipes of the widest vector the core executes natively.
    AMD Zen 4 (family 25 with avx512f) executes AVX-512 as two 256-bit halves, so it counts as 256-bit:
    2 pipes x 8 floats x 2 (multiply + add) = 32 FLOPs per cycle; an Intel core with AVX-512: 64;
    AVX2 + FMA: 32; AVX without FMA: 16; else SSE: 8. The clock is /proc/cpuinfo's "cpu MHz" (in a virtual
    machine the nominal clock: turbo, if any, is not visible, so the peak may be underestimated)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    mhz = float(info.get("cpu MHz", "nan") or "nan")
    vendor, family = info.get("vendor_id", "?"), info.get("cpu family", "?")
    if "avx512f" in flags and vendor == "GenuineIntel":
        per_cycle, why = 64, "AVX-512, 2 FMA units of 512 bits (Intel server core; 1-unit parts have 32)"
    elif "avx512f" in flags:
        per_cycle, why = 32, f"AVX-512 run as 2 x 256-bit halves ({vendor} family {family}, Zen 4), 2 FMA pipes"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, why = 32, "AVX2 + FMA, 2 FMA pipes of 256 bits"
    elif "avx" in flags:
        per_cycle, why = 16, "AVX without FMA: 1 add + 1 multiply of 256 bits"
    else:
        per_cycle, why = 8, "SSE: 1 add + 1 multiply of 128 bits"
    gflops = threads * mhz / 1000 * per_cycle
    return dict(cpu=info.get("model name", "?"), mhz=mhz, flops_per_cycle=per_cycle, cores=threads,
                gflops=gflops, assumption=f"{threads} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({why})")


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The best rate of an n x n fp32 matmul (MKL/cuBLAS): the attainable peak."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    best = min(interleaved({"mm": lambda: a @ b}, repeats, device)["mm"])
    return 2 * n**3 / best / 1e9


# ---- 1. batched guidance against two passes -----------------------------------------------------

def op_profile(fn: Callable[[], object], calls: int = 1) -> dict[str, float]:
    """{operator: self CPU milliseconds per call} from torch.profiler over `calls` calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    return {e.key: e.self_cpu_time_total / 1000 / calls for e in prof.key_averages()}


def op_scaling(unet, batch: int, device: torch.device, top: int = 8, rounds: int = 5) -> dict:
    """Per-operator self time of one forward pass at `batch` and 2 x `batch`, profiled in interleaved
    rounds (B, 2B, B, 2B, ...), the fastest round of each operator kept (the least disturbed by other
    processes): the ratio t(2B) / (2 t(B)) > 1 marks operators that cost more per sample in the bigger batch."""
    def forward(b):
        x = torch.randn(b, 1, 16, 16, device=device)
        labels = torch.arange(b, device=device) % 10
        return lambda: unet(x, torch.tensor(500, device=device), class_labels=labels)

    runs: dict[int, dict[str, list[float]]] = {batch: {}, 2 * batch: {}}
    with torch.no_grad():
        fns = {b: forward(b) for b in runs}
        for fn in fns.values():
            fn()
        for _ in range(rounds):
            for b, fn in fns.items():
                for key, ms in op_profile(fn).items():
                    runs[b].setdefault(key, []).append(ms)
    one, two = ({k: min(v) for k, v in runs[b].items()} for b in (batch, 2 * batch))
    total_one, total_two = sum(one.values()), sum(two.values())
    rows = {"whole forward": f"{total_one:.1f} ms at B={batch}, {total_two:.1f} ms at 2B: "
                             f"x{total_two / (2 * total_one):.2f} per sample (fastest of {rounds} interleaved rounds)"}
    extra = {k: two.get(k, 0.0) - 2 * one.get(k, 0.0) for k in set(one) | set(two)}
    for key in sorted(two, key=lambda k: -two[k])[:top]:
        ratio = two[key] / max(2 * one.get(key, 0.0), 1e-9)
        rows[key] = (f"{one.get(key, 0.0):.1f} ms -> {two[key]:.1f} ms: x{ratio:.2f}"
                     f" per sample ({extra[key]:+.1f} ms)")
    rows["conditions"] = conditions(device)
    return rows


_ONEDNN_CHILD = """
import sys, torch
sys.path.insert(0, {bench!r})
from bench_speed import load_digits
torch.set_num_threads({threads})
unet = load_digits(torch.device("cpu"))[0]
inputs = {{b: (torch.randn(b, 1, 16, 16), torch.arange(b) % 10) for b in {batches!r}}}
with torch.no_grad():
    for b, (x, labels) in inputs.items():
        unet(x, torch.tensor(500), class_labels=labels)
    for _ in range({rounds}):
        for b, (x, labels) in inputs.items():
            print("=====MARK", b, flush=True)
            unet(x, torch.tensor(500), class_labels=labels)
"""


def onednn_breakdown(batches=(40, 80, 160), rounds: int = 9, threads: int = 1) -> dict:
    """Microseconds per sample of oneDNN's convolutions (by input size) and layout reorders at each batch,
    from ONEDNN_VERBOSE=1 in a child process: the batches interleaved, the fastest round of every primitive."""
    import collections
    import subprocess
    import sys
    from pathlib import Path

    code = _ONEDNN_CHILD.format(bench=str(Path(__file__).resolve().parent), threads=threads,
                                batches=tuple(batches), rounds=rounds)
    load = load_average()
    text = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                          capture_output=True, text=True, check=True).stdout
    runs: dict[int, list[list[tuple[str, float]]]] = collections.defaultdict(list)
    current = None
    for line in text.splitlines():
        if line.startswith("=====MARK"):
            current = []
            runs[int(line.split()[1])].append(current)
        elif current is not None and line.startswith("onednn_verbose") and ",exec," in line:
            f = line.split(",")
            if f[5] == "reorder":
                kind = ("reorder conv output blocked->NCHW" if "aBcd16b::f0 dst:f32::blocked:abcd" in f[8] else
                        "reorder conv input NCHW->blocked" if "abcd::f0 dst:f32::blocked:aBcd16b" in f[8] else
                        "reorder weights")
            else:
                size = re.search(r"ih(\d+)", f[-2])
                kind = f"{f[5]} reading {size.group(1)}x{size.group(1)}" if size else f[5]
            current.append((kind, float(f[-1])))
    out: dict = {}
    for b, blocks in runs.items():
        n = min(len(block) for block in blocks)
        sums: dict[str, float] = collections.defaultdict(float)
        for i in range(n):
            sums[blocks[0][i][0]] += min(block[i][1] for block in blocks)
        sums["all primitives"] = sum(v for k, v in sums.items())
        out[f"B={b}"] = {k: f"{1000 * v / b:.0f} us/sample" for k, v in sorted(sums.items())}
    out["conditions"] = f"load {load:.2f}-{load_average():.2f}, {threads} thread{'s' if threads != 1 else ''}, " \
                        f"fastest of {rounds} interleaved rounds"
    return out


def bench_cfg(unet, device: torch.device, batches=(4, 16, 40, 80), repeats: int = 7,
              guidance_scale: float = 3.0, profile_batch: int | None = 80) -> dict:
    """Milliseconds per guided network evaluation: one pass of [x; x] (2B) against two passes of B."""
    out: dict = {}
    denoise = unet_denoiser(unet, "class_labels")
    for b in batches:
        g = torch.Generator().manual_seed(b)
        x = torch.randn(b, 1, 16, 16, generator=g).to(device)
        labels = (torch.arange(b) % 10).to(device)
        null = torch.full_like(labels, NULL_LABEL)
        t = torch.tensor(500, device=device)
        batched = guided_denoiser(denoise, guidance_scale, null, batch_guidance=True)
        two = guided_denoiser(denoise, guidance_scale, null, batch_guidance=False)
        with torch.no_grad():
            diff = (batched(x, t, labels) - two(x, t, labels)).abs().max().item()
            load = load_average()
            times = interleaved({"batched": lambda: batched(x, t, labels), "two": lambda: two(x, t, labels)},
                                repeats, device)
        ms_b, ms_2 = median_ms(times["batched"]), median_ms(times["two"])
        out[f"B={b}"] = dict(batched_ms=ms_b, two_passes_ms=ms_2, batched_over_two_passes=ms_b / ms_2,
                             auto=auto_path(x), max_abs_diff=diff,
                             conditions=f"load {load:.2f}-{load_average():.2f}, " + conditions(device).split(", ")[1])
    if profile_batch and device.type == "cpu":
        out[f"profile B={profile_batch} vs {2 * profile_batch}"] = op_scaling(unet, profile_batch, device)
    return out


# ---- 2. attention processor, channels-last, torch.compile on the sampler ------------------------

def attention_variants(unet, compile_model: bool) -> dict[str, torch.nn.Module]:
    """Copies of the UNet: diffusers' default (AttnProcessor2_0), the classic AttnProcessor,
    channels-last (weights and activations NHWC), and (compile_model) torch.compile of the default."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    def with_processor(processor):
        model = copy.deepcopy(unet)
        for module in model.modules():
            if hasattr(module, "set_processor"):
                module.set_processor(processor)
        return model

    variants = {"AttnProcessor2_0 (SDPA, default)": with_processor(AttnProcessor2_0()),
                "AttnProcessor (classic)": with_processor(AttnProcessor()),
                "channels-last + AttnProcessor2_0": with_processor(AttnProcessor2_0()).to(
                    memory_format=torch.channels_last)}
    if compile_model:
        compiled = with_processor(AttnProcessor2_0())
        compiled.compile()
        variants["torch.compile (inductor) + AttnProcessor2_0"] = compiled
    return variants


def bench_attention(unet, scheduler, device: torch.device, batch: int = 80, steps: int = 10,
                    guidance_scale: float = 3.0, repeats: int = 5, compile_model: bool = False) -> dict:
    """Seconds for the guided digits sampler (`steps` DDIM steps, batch `batch`) per UNet variant."""
    labels = (torch.arange(batch) % 10).to(device)
    x_T = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)
    variants = attention_variants(unet, compile_model)
    run = {name: (lambda m=model: sample(m, scheduler, labels, steps=steps, guidance_scale=guidance_scale,
                                         x_T=x_T, progress=False)) for name, model in variants.items()}
    out: dict = {}
    first, images = {}, {}
    with torch.no_grad():
        for name, fn in run.items():  # the first call (for torch.compile: the compilation) is timed apart
            start = time.perf_counter()
            images[name] = fn()
            first[name] = time.perf_counter() - start
        load = load_average()
        times = interleaved(run, repeats, device, warmup=0)
    reference = images["AttnProcessor2_0 (SDPA, default)"]
    diffs = {name: (image - reference).abs().max().item() for name, image in images.items()}
    base = statistics.median(times["AttnProcessor2_0 (SDPA, default)"])
    for name in run:
        s = statistics.median(times[name])
        out[name] = dict(s=s, vs_default=s / base, first_call_s=first[name], max_abs_diff=diffs[name])
    out["setting"] = (f"{batch} images x {steps} DDIM steps, guidance {guidance_scale:g} "
                      f"({auto_path(x_T)} per step), "
                      f"median of {repeats} interleaved runs, load {load:.2f}-{load_average():.2f}, "
                      + conditions(device).split(", ")[1])
    if not compile_model:
        out["torch.compile"] = "not measured (python benchmarks/bench_speed.py --compile; see docs/performance.md)"
    return out


# ---- 3. utilisation: FLOP/s and the share of peak ---------------------------------------------------

def count_flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _forward_and_training(unet, device: torch.device, batch: int):
    """Closures: a no-grad forward pass, and a training step (forward, MSE loss, backward, AdamW step)."""
    x = torch.randn(batch, 1, 16, 16, device=device)
    labels = torch.arange(batch, device=device) % 10
    t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(0)).to(device)
    model = copy.deepcopy(unet).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def forward():
        with torch.no_grad():
            return unet(x, t[0], class_labels=labels)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x, t, class_labels=labels).sample, x)
        loss.backward()
        optimizer.step()
        return loss

    def forward_backward():  # for counting: the optimizer's elementwise FLOPs are not counted
        loss = torch.nn.functional.mse_loss(model(x, t, class_labels=labels).sample, x)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return forward, train_step, forward_backward


def top_ops(fn: Callable[[], object], top: int = 6) -> dict:
    fn()
    profile = op_profile(fn, calls=2)
    total = sum(profile.values())
    ranked = sorted(profile.items(), key=lambda kv: -kv[1])[:top]
    return {key: f"{ms:.1f} ms ({100 * ms / total:.0f}%)" for key, ms in ranked}


def bench_utilisation(unet, device: torch.device, batches=(16, 80, 160), train_batch: int = 128,
                      threads=(1, 2), repeats: int = 3) -> dict:
    """GFLOP/s of the digits UNet's forward pass (the sampler's work) and of a training step, per thread
    count and batch size, and their share of the fp32 peak (theoretical and a large matmul's)."""
    unet.eval()
    fwd1, _, _ = _forward_and_training(unet, device, 1)
    _, _, fb1 = _forward_and_training(unet, device, 1)
    flop_fwd, flop_train = count_flops(fwd1), count_flops(fb1)   # per sample: both are linear in the batch
    out: dict = {"FLOPs per sample": f"forward {flop_fwd / 1e6:.0f} MFLOP, forward + backward "
                                     f"{flop_train / 1e6:.0f} MFLOP (torch.utils.flop_counter; convolutions "
                                     f"and matmuls only, elementwise ops and the optimizer not counted)",
                 "FLOPs of a forward pass at batch 160": f"{160 * flop_fwd / 1e9:.1f} GFLOP"}
    cpu = device.type == "cpu"
    threads = [n for n in threads if n <= (os.cpu_count() or 1)] if cpu else [None]
    saved = torch.get_num_threads()
    try:
        for n in threads:
            if n is not None:
                torch.set_num_threads(n)
            label = f"{n} thread{'s' if n != 1 else ''}" if n is not None else str(device)
            rows: dict = {}
            if cpu:
                peak = cpu_peak(n)
                attainable = matmul_gflops(device)
                rows["peak (theoretical)"] = f"{peak['gflops']:.0f} GFLOP/s = {peak['assumption']}"
                rows["peak (attainable: 2048x2048 fp32 matmul)"] = f"{attainable:.0f} GFLOP/s"
            work = {f"forward B={b}": (_forward_and_training(unet, device, b)[0], b * flop_fwd) for b in batches}
            _, train_step, _ = _forward_and_training(unet, device, train_batch)
            work[f"training step B={train_batch}"] = (train_step, train_batch * flop_train)
            load = load_average()
            times = interleaved({k: fn for k, (fn, _) in work.items()}, repeats, device)
            for key, (_, flops) in work.items():
                s = statistics.median(times[key])
                rate = flops / s / 1e9
                cell = f"{1000 * s:.0f} ms, {rate:.1f} GFLOP/s"
                if cpu:
                    cell += (f" = {100 * rate / peak['gflops']:.0f}% of theoretical, "
                             f"{100 * rate / attainable:.0f}% of matmul")
                rows[key] = cell
            rows["conditions"] = f"load {load:.2f}-{load_average():.2f}, {label}"
            out[label] = rows
    finally:
        torch.set_num_threads(saved)
    fwd80, train, _ = _forward_and_training(unet, device, 80)
    out[f"top ops, forward B=80 ({conditions(device)})"] = top_ops(fwd80)
    _, train, _ = _forward_and_training(unet, device, train_batch)
    out[f"top ops, training step B={train_batch} ({conditions(device)})"] = top_ops(train)
    return out


# ---- all of it -------------------------------------------------------------------------------------

def bench_speed(device: torch.device | str | None = None, sections=SECTIONS, compile_model: bool = False,
                repeats: int = 5, utilisation_threads=(1, 2)) -> dict:
    """The three sections as a nested dict of figures (strings and numbers)."""
    device = torch.device(device) if device is not None else pick_device()
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"sections must be among {SECTIONS}, got {sorted(unknown)}")
    unet, scheduler, what = load_digits(device)
    out: dict = {"model": what, "device": str(device), "start": conditions(device)}
    if "cfg" in sections:
        out["cfg"] = bench_cfg(unet, device, repeats=max(repeats, 5))
    if "attention" in sections:
        out["attention"] = bench_attention(unet, scheduler, device, repeats=repeats, compile_model=compile_model)
    if "utilisation" in sections:
        out["utilisation"] = bench_utilisation(unet, device, threads=utilisation_threads, repeats=max(3, repeats // 2))
    out["end"] = conditions(device)
    return out


def print_nested(result: dict, indent: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            print_nested(value, indent + "  ")
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"{indent}{key}: {shown}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, among {SECTIONS}")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the UNet (minutes on a CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the cfg and attention sections (default: torch's, the core count)")
    parser.add_argument("--utilisation-threads", default="1,2", help="thread counts the utilisation section compares")
    parser.add_argument("--onednn", default=None, metavar="B,B,...",
                        help="only oneDNN's per-primitive times per sample at these batches (ONEDNN_VERBOSE, 1 thread)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.onednn:
        result = onednn_breakdown(tuple(int(b) for b in args.onednn.split(",")))
        print_nested(result)
        return result
    sections = tuple(s.strip() for s in re.split(r"[,\s]+", args.sections) if s.strip())
    result = bench_speed(sections=sections, compile_model=args.compile, repeats=args.repeats,
                         utilisation_threads=tuple(int(n) for n in args.utilisation_threads.split(",")))
    print_nested(result)
    return result


if __name__ == "__main__":
    main()
