"""The recipes' runs on the 2-core CPU (benchmarks/recipes-2core-cpu/): the records they wrote meet the
the book's targets for time and quality. They are records, not reruns: retraining takes the better part of
an hour (python -m diffusion_lessons.train NAME, see the README there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes-2core-cpu"


def read(name: str) -> dict:
    return json.loads((FOLDER / name).read_text())


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    return {"vae": read("recipe-vae.json"), "shapes-t2i": read("recipe.json"), "digits": read("recipe-digits.json")}


def test_the_runs_were_on_a_two_core_cpu_with_the_quick_profile(records):
    for name, record in records.items():
        assert record["profile"] == "quick", name
        assert record["device"] == "cpu", name
    assert records["vae"]["cpu_threads"] == records["shapes-t2i"]["cpu_threads"] == 2
    assert "(2 threads)" in records["digits"]["hardware"]


def test_latent_recipes_finish_within_an_hour_and_meet_their_targets(records):
    vae, t2i = records["vae"], records["shapes-t2i"]
    assert vae["wall_seconds"] + t2i["wall_seconds"] <= 60 * 60    
    adherence = t2i["quality"]["adherence_default"]
    assert adherence["background"] >= 0.95 and adherence["color"] >= 0.95 and adherence["shape"] >= 0.80
    assert vae["quality"]["test_mse"] < 0.01


def test_digits_recipe_finishes_within_half_an_hour_and_meets_its_targets(records):
    digits = records["digits"]
    assert digits["wall_time_s"] + digits["eval_time_s"] <= 30 * 60
    q = digits["quality"]
    assert q["guidance_1"]["fidelity"] >= 0.90 and q["guidance_3"]["fidelity"] >= 0.97
    diversity = [q[f"guidance_{s}"]["diversity"] for s in (0, 1, 2, 3, 5, 7, 10)]
    assert all(a > b for a, b in zip(diversity, diversity[1:]))


def test_the_readme_quotes_the_records(records):
    text = (FOLDER / "README.md").read_text()
    assert f"{records['vae']['steps_per_second']:.2f} steps/s" in text
    assert f"{records['shapes-t2i']['steps_per_second']:.2f} steps/s" in text
    assert f"{records['digits']['steps_per_s']:.2f} steps/s" in text
