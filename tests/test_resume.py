"""Checkpoints and resume (training.train_loop through the recipes): a run stopped after its first checkpoint,
by a crash or by a SIGINT, and resumed with --resume ends with the weights of a run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion_lessons import training
from diffusion_lessons.recipes import digits, vae

DIGITS = ["--batch-size", "8", "--skip-eval", "--profile", "quick"]
VAE = ["--batch-size", "4", "--n-train", "16", "--skip-eval", "--profile", "quick"]
RECIPES = {"digits": (digits, DIGITS, "unet"), "vae": (vae, VAE, "vae")}


def weights(out: Path, part: str) -> dict[str, torch.Tensor]:
    return load_file(out / part / "diffusion_pytorch_model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def crash_in_step(monkeypatch, step: int) -> None:
    """Make train_loop fail inside its step-th step (counted from 1), as a killed process would."""
    calls = {"n": 0}
    real = training._accumulate_step

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_accumulate_step", failing)


@pytest.mark.parametrize("name", RECIPES)
def test_a_crashed_run_resumed_ends_with_the_uninterrupted_weights(name, tmp_path, monkeypatch):
    module, options, part = RECIPES[name]
    run = ["--steps", "6", "--checkpoint-every", "2", *options]
    uninterrupted = module.main([*run, "--out", str(tmp_path / "whole")])
    crash_in_step(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        module.main([*run, "--out", str(tmp_path / "resumed")])
    monkeypatch.undo()
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert [p.name for p in training.checkpoints(checkpoints)] == ["step-2", "step-4"]
    assert not (tmp_path / "resumed" / part).exists()  # no model is written by a run that did not finish
    resumed = module.main([*run, "--resume", "--out", str(tmp_path / "resumed")])
    assert resumed["resumed_from_step"] == 4 and uninterrupted["resumed_from_step"] is None
    assert resumed["first_loss"] == uninterrupted["first_loss"] and resumed["final_loss"] == uninterrupted["final_loss"]
    assert max_difference(weights(tmp_path / "resumed", part), weights(tmp_path / "whole", part)) == 0.0
    assert not checkpoints.exists()  # removed once the model is written (--keep-checkpoints keeps them)


def test_a_checkpoint_holds_the_whole_training_state(tmp_path):
    digits.main(["--steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", *DIGITS, "--out", str(tmp_path)])
    found = training.checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in found] == ["step-4", "step-6"]          # the newest two are kept
    files = sorted(p.name for p in found[-1].iterdir())
    # accelerate's save_state: model, optimizer, RNG states; registered: loop state (step, losses, generator),
    # LR schedule, EMA; and the settings a resume must match
    assert files == ["custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "custom_checkpoint_2.pkl", "loop.json",
                     "model.safetensors", "optimizer.bin", "random_states_0.pkl"]
    saved = json.loads((found[-1] / "loop.json").read_text())
    assert saved["step"] == 6 and saved["config"]["steps"] == 6 and saved["config"]["batch_size"] == 8
    assert not list((tmp_path / "checkpoints").glob(".*"))         # no half-written checkpoint left


def test_resume_checks_the_settings_and_needs_a_checkpoint(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        digits.main(["--steps", "4", "--resume", *DIGITS, "--out", str(tmp_path / "none")])
    assert "--resume: no checkpoint in" in capsys.readouterr().err
    crash_in_step(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        digits.main(["--steps", "4", "--checkpoint-every", "2", *DIGITS, "--out", str(tmp_path / "run")])
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"other settings \(steps: 4 there, 5 now\)"):
        digits.main(["--steps", "5", "--resume", *DIGITS, "--out", str(tmp_path / "run")])
    with pytest.raises(ValueError, match="seed"):
        digits.main(["--steps", "4", "--seed", "1", "--resume", *DIGITS, "--out", str(tmp_path / "run")])


def test_sigint_stops_the_run_with_a_checkpoint_and_resume_finishes_it(tmp_path):
    """A real process and a real SIGINT: it saves a checkpoint after the step in progress, says how to go on,
    and exits with 130; --resume then finishes with the weights of an uninterrupted run."""
    run = ["--steps", "150", "--checkpoint-every", "10", *DIGITS]
    out = tmp_path / "stopped"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "diffusion_lessons.train", "digits", *run, "--out", str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step-10").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    step = int(training.checkpoints(out / "checkpoints")[-1].name.split("-")[1])   # the one the signal saved
    assert 10 <= step < 150 and f"stopped after step {step} of 150" in output and "--resume" in output
    assert not (out / "unet").exists()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the stopped process
    try:
        resumed = digits.main([*run, "--resume", "--out", str(out)])
        whole = digits.main([*run, "--out", str(tmp_path / "whole")])
    finally:
        torch.set_num_threads(threads)
    assert resumed["resumed_from_step"] == step
    difference = max_difference(weights(out, "unet"), weights(tmp_path / "whole", "unet"))
    print(f"stopped at step {step} of 150; max |w_resumed - w_uninterrupted| = {difference:.1e}")
    assert difference <= 1e-6
