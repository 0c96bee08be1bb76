"""A recipe under a real `accelerate launch` with 2 processes on this CPU trains the model of 1 process.

The run: python -m diffusion_lessons.train digits --steps 20 --skip-eval with a global batch of 32 (the hidden
--batch-size keeps it fast), launched three ways: 2 processes (accelerate launch --multi_gpu --num_processes 2;
with ACCELERATE_USE_CPU, or no GPU, each is a CPU process and they talk over gloo), 1 process with the batch in
2 micro-batches, and 1 plain process. Every process draws the whole global batch's noise, timesteps and label
dropout from the one seeded CPU generator and takes its rows, and DDP averages the gradients, so:
- 2 processes = 1 process with 2 micro-batches, bit for bit (the same row slices, the same gradient sum);
- 2 processes = the plain process up to float rounding: their networks give the same predictions (1e-4). Raw
  weights agree to 1e-4 except the few biases whose effect a following GroupNorm cancels: their gradient is
  rounding noise, which Adam scales up to steps of about lr, differently for 1 and 2 processes, and which
  changes no output.
Note: `accelerate launch --cpu --num_processes 2` starts one process in accelerate 1.x (multi-CPU needs mpirun;
huggingface/accelerate#2741), so the launch here is --multi_gpu, which is torchrun underneath.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion_lessons.recipes import digits

RUN = ["--steps", "20", "--batch-size", "32", "--skip-eval", "--profile", "quick"]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(out: Path) -> subprocess.CompletedProcess:
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "diffusion_lessons.train", "digits", *RUN, "--out", str(out)]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(command, env=env, cwd=out.parent, capture_output=True, text=True, timeout=400)


def one_process(out: Path, *extra: str) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process (OMP_NUM_THREADS=1): the same kernels, the same sums
    try:
        return digits.main([*RUN, *extra, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not ACCELERATE.is_file():
        pytest.skip(f"no accelerate command next to {sys.executable}")
    folder = tmp_path_factory.mktemp("launch")
    launched = launch_two_processes(folder / "two")
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    one_process(folder / "micro", "--grad-accumulation", "2")
    one_process(folder / "one")
    return {name: folder / name for name in ("two", "micro", "one")}


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "unet" / "diffusion_pytorch_model.safetensors")


def max_difference(a: dict, b: dict, keys=None) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in (keys or a))


def test_two_processes_ran_and_only_the_main_one_wrote(runs):
    record = json.loads((runs["two"] / "recipe.json").read_text())
    assert record["processes"] == 2 and record["launch"].startswith("accelerate launch")
    assert record["device"].startswith("cpu") and record["batch_size"] == 32
    assert sorted(p.name for p in runs["two"].iterdir()) == ["manifest.json", "recipe.json", "scheduler", "unet"]


def test_two_processes_are_one_process_with_two_micro_batches_bit_for_bit(runs):
    two, micro = weights(runs["two"]), weights(runs["micro"])
    assert max_difference(two, micro) == 0.0
    records = [json.loads((runs[n] / "recipe.json").read_text()) for n in ("two", "micro")]
    assert records[0]["final_loss"] == records[1]["final_loss"]


def null_parameters() -> set[str]:
    """Parameters the network's output does not depend on: their gradient on a batch is rounding noise."""
    from diffusion_lessons.data import DIGITS_SIZE, load_digits
    from diffusion_lessons.models import build_digits_unet
    from diffusion_lessons.schedules import make_schedule
    from diffusion_lessons.training import diffusion_loss

    model = build_digits_unet(seed=0)
    x0, labels = load_digits("train", DIGITS_SIZE)
    loss = diffusion_loss(model, make_schedule(digits.NOISE_SCHEDULE), x0[:64], labels[:64],
                          generator=torch.Generator().manual_seed(0), prediction_type=digits.PREDICTION_TYPE)
    loss.backward()
    return {name for name, p in model.named_parameters() if p.grad.abs().max() < 1e-7}


def test_two_processes_train_the_model_of_one(runs):
    from diffusers import UNet2DModel

    two, one = weights(runs["two"]), weights(runs["one"])
    null = null_parameters()
    assert 0 < len(null) < 20, sorted(null)   # GroupNorm-cancelled biases (and the softmax-invariant key bias)
    effective = [k for k in two if k not in null]
    assert max_difference(two, one, effective) <= 1e-4
    print(f"max |w_2 - w_1|: {max_difference(two, one):.2e} over all weights, "
          f"{max_difference(two, one, effective):.2e} over the {len(effective)} that change the output")
    models = [UNet2DModel.from_pretrained(runs[n] / "unet", use_safetensors=True, local_files_only=True)
              for n in ("two", "one")]
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(40, 1, 16, 16, generator=generator)
    t, labels = torch.linspace(0, 999, 40).long(), torch.arange(40) % 11
    with torch.no_grad():
        out_two, out_one = (m(x_t, t, class_labels=labels).sample for m in models)
    print(f"max |prediction_2 - prediction_1|: {(out_two - out_one).abs().max().item():.2e}")
    assert (out_two - out_one).abs().max().item() <= 1e-4
