"""The digits recipe end to end at toy size: train, save, measure, and re-measure with --evaluate-only."""

from __future__ import annotations

import json

import pytest

from diffusion_lessons.recipes import digits


def test_recipe_trains_saves_and_re_measures(tmp_path):
    out = tmp_path / "digits"
    record = digits.main(["--steps", "3", "--eval-per-label", "2", "--out", str(out), "--profile", "quick"])
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["steps"] == 3 and saved["quality"]["per_label"] == 2
    scales = [f"guidance_{s:g}" for s in digits.EVAL["scales"]]
    assert all(set(saved["quality"][k]) == {"fidelity", "diversity", "pixel_diversity"} for k in scales)
    assert saved["evaluated"]["command"] == "(with the training)"
    assert saved["prediction_type"] == digits.PREDICTION_TYPE and saved["snr_gamma"] == digits.SNR_GAMMA

    again = digits.main(["--evaluate-only", "--eval-per-label", "2", "--out", str(out)])
    reread = json.loads((out / "recipe.json").read_text())
    assert reread == again
    assert "--evaluate-only" in reread["evaluated"]["command"]
    # same weights, same seed, same machine: the re-measurement repeats the training run's numbers
    for key in scales:
        assert reread["quality"][key] == pytest.approx(record["quality"][key], abs=1e-3), key
    assert reread["wall_time_s"] == record["wall_time_s"]  # the training figures are kept


def test_evaluate_only_needs_a_trained_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe.json"):
        digits.main(["--evaluate-only", "--out", str(tmp_path)])
