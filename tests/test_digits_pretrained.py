"""The shipped digits model (python -m diffusion_lessons.train digits): loads with plain diffusers,
its recipe record agrees with its config, and its full-size measurements (python -m diffusion_lessons.measure
digits, 500 samples per setting) meet the book's targets: clean digits, and guidance's trade-off."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from diffusion_lessons.evaluation import evaluate_digits_model
from diffusion_lessons.models import DIGITS_UNET_CONFIG, count_parameters
from diffusion_lessons.pretrained import ROOT, load_pretrained

FOLDER = ROOT / "digits"
pytestmark = pytest.mark.skipif(not (FOLDER / "unet").is_dir(),
                                reason=f"{FOLDER} is not shipped yet: python -m diffusion_lessons.train digits")


@pytest.fixture(scope="module")
def recipe():
    return json.loads((FOLDER / "recipe.json").read_text())


@pytest.fixture(scope="module")
def unet():
    return UNet2DModel.from_pretrained(FOLDER / "unet", use_safetensors=True, local_files_only=True).eval()


def test_weights_are_safetensors_and_small():
    files = [p for p in FOLDER.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".ckpt") for p in files)
    assert sum(p.stat().st_size for p in files) < 10 * 2**20


def test_recipe_record_agrees_with_the_config(unet, recipe):
    assert recipe["unet"]["parameters"] == count_parameters(unet)
    for key in DIGITS_UNET_CONFIG:
        value = unet.config[key]
        assert recipe["unet"][key] == (list(value) if isinstance(value, tuple) else value), key
    assert recipe["data"]["size"] == unet.config.sample_size
    scheduler = DDIMScheduler.from_pretrained(FOLDER / "scheduler", local_files_only=True)
    assert scheduler.config.beta_schedule == recipe["noise_schedule"]["diffusers"]
    assert scheduler.config.num_train_timesteps == recipe["noise_schedule"]["num_train_timesteps"]
    assert scheduler.config.set_alpha_to_one and not scheduler.config.clip_sample
    assert scheduler.config.prediction_type == recipe["prediction_type"] == "v_prediction"
    for key in ("seed", "steps", "batch_size", "lr", "wall_time_s", "hardware", "final_loss", "versions"):
        assert key in recipe, key
    assert 0 < recipe["final_loss"] < recipe["first_loss"]


@pytest.fixture(scope="module")
def measured():
    from diffusion_lessons.measure import RECORD_NAME, record_matches_model

    path = FOLDER / RECORD_NAME
    assert path.is_file(), "run python -m diffusion_lessons.measure digits"
    record = json.loads(path.read_text())
    assert record_matches_model(record, FOLDER), "measurements.json was made on other weights"
    return record


def test_measured_quality_meets_the_targets(measured):
    g = {float(k): v for k, v in measured["guidance"].items()}
    assert measured["classifier_held_out_accuracy"] >= 0.97
    assert measured["settings"]["per_setting"] >= 200
    # digits that look like digits, 50 DDIM steps (deterministic)
    assert g[1.0]["rough"]["value"] <= 0.01 and g[3.0]["rough"]["value"] <= 0.01
    assert g[1.0]["fidelity"]["value"] >= 0.97 and g[3.0]["fidelity"]["value"] >= 0.99
    # guidance trades variety for faithfulness, from the same starting noise at each scale
    diversity = [g[s]["diversity"]["value"] for s in sorted(g)]
    assert all(a > b for a, b in zip(diversity, diversity[1:])), diversity
    assert g[0.0]["fidelity"]["value"] < 0.3 < g[1.0]["fidelity"]["value"]  # s = 0 ignores the label
    for row in list(measured["guidance"].values()) + list(measured["samplers"].values()):
        for est in row.values():
            assert est["low"] <= est["value"] <= est["high"] and est["n"] == measured["settings"]["per_setting"]


def test_load_pretrained_and_the_weights_draw_digits():
    unet, scheduler = load_pretrained("digits", device="cpu")
    assert isinstance(unet, UNet2DModel) and isinstance(scheduler, DDIMScheduler)
    result = evaluate_digits_model(unet, scheduler, per_label=2, steps=20, guidance_scale=1.0, seed=0)
    assert result["images"].shape == (20, 1, 16, 16) and torch.isfinite(result["images"]).all()
    assert result["fidelity"] >= 0.9  # 20 unguided samples, 20 DDIM steps: cheap, and still a real check
