"""Device choice, seeding and the run profile (diffusion_lessons.device)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from diffusion_lessons import device as dev
from diffusion_lessons.device import by_profile, make_generator, pick_device, run_profile, seed_everything


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test starts without the two overrides, whatever the caller's shell has set."""
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    monkeypatch.delenv(dev.PROFILE_ENV, raising=False)


def fake_hardware(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(dev, "_mps_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    fake_hardware(monkeypatch, cuda, mps)
    assert pick_device().type == expected


def test_pick_device_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else "mps" if dev._mps_available() else "cpu"
    assert pick_device() == torch.device(expected)


def test_environment_variable_overrides(monkeypatch):
    fake_hardware(monkeypatch, cuda=True, mps=False)
    monkeypatch.setenv("DIFFUSION_LESSONS_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("DIFFUSION_LESSONS_DEVICE", "cuda:1")
    assert pick_device() == torch.device("cuda:1")
    monkeypatch.setenv("DIFFUSION_LESSONS_DEVICE", "  ")  # blank means no override
    assert pick_device().type == "cuda"


@pytest.mark.parametrize("value", ["tpu", "gpu", "CPU"])
def test_bad_device_value_raises(monkeypatch, value):
    monkeypatch.setenv("DIFFUSION_LESSONS_DEVICE", value)
    with pytest.raises(ValueError, match="DIFFUSION_LESSONS_DEVICE.*allowed.*'cpu'"):
        pick_device()


@pytest.mark.parametrize("value", ["cuda", "mps"])
def test_asking_for_missing_hardware_raises(monkeypatch, value):
    fake_hardware(monkeypatch, cuda=False, mps=False)
    monkeypatch.setenv("DIFFUSION_LESSONS_DEVICE", value)
    with pytest.raises(ValueError, match=f"DIFFUSION_LESSONS_DEVICE.*no {value.upper()}"):
        pick_device()


def test_profile_follows_the_device(monkeypatch):
    fake_hardware(monkeypatch, cuda=False, mps=False)
    assert run_profile() == "quick" and by_profile(quick=1, full=2) == 1
    fake_hardware(monkeypatch, cuda=False, mps=True)
    assert run_profile() == "quick"
    fake_hardware(monkeypatch, cuda=True, mps=False)
    assert run_profile() == "full" and by_profile(quick=1, full=2) == 2
    monkeypatch.setenv("DIFFUSION_LESSONS_DEVICE", "cpu")  # a GPU machine told to use the CPU
    assert run_profile() == "quick"


def test_profile_environment_variable_overrides(monkeypatch):
    fake_hardware(monkeypatch, cuda=False, mps=False)
    monkeypatch.setenv("DIFFUSION_LESSONS_PROFILE", "full")
    assert run_profile() == "full" and by_profile(quick="small", full="big") == "big"
    fake_hardware(monkeypatch, cuda=True, mps=False)
    monkeypatch.setenv("DIFFUSION_LESSONS_PROFILE", "quick")
    assert run_profile() == "quick" and by_profile(quick="small", full="big") == "small"


def test_bad_profile_value_raises(monkeypatch):
    monkeypatch.setenv("DIFFUSION_LESSONS_PROFILE", "fast")
    with pytest.raises(ValueError, match="DIFFUSION_LESSONS_PROFILE.*quick.*full"):
        run_profile()
    with pytest.raises(ValueError, match="DIFFUSION_LESSONS_PROFILE"):
        by_profile(quick=1, full=2)


def test_make_generator_is_reproducible():
    a = torch.randn(1000, generator=make_generator(42))
    b = torch.randn(1000, generator=make_generator(42))
    c = torch.randn(1000, generator=make_generator(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.randn(1000, generator=make_generator(np.int64(42))), a)


@pytest.mark.parametrize("seed", [1.5, "42", None, True])
def test_make_generator_rejects_a_non_int_seed(seed):
    with pytest.raises(ValueError, match="seed must be an int"):
        make_generator(seed)


def test_seed_everything_seeds_every_library():
    def draw(generator):
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()

    first, second = draw(seed_everything(5)), draw(seed_everything(5))
    assert first == second
    assert draw(seed_everything(6)) != first
