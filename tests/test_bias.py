"""Lesson 16's bias world (diffusion_lessons.bias) and the shipped shapes-boss model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion_lessons import bias, data, evaluation, stats

BOSS = Path(bias.__file__).parent / "pretrained" / "shapes-boss"


@pytest.fixture(scope="module")
def world():
    return bias.make_role_shapes(4000, generator=torch.Generator().manual_seed(3))


def test_role_captions_read_as_the_lesson_says():
    assert bias.role_caption("white") == bias.ROLE_PROMPT == "a boss shape on a white background"
    assert bias.role_caption("black", "blue") == "a blue boss shape on a black background"
    assert data.parse_caption(bias.role_caption("black", "blue"))["color"] == "blue"
    assert bias.role_words()[-2:] == ["boss", "shape"] and len(set(bias.role_words())) == len(bias.role_words())


def test_the_generated_set_has_the_stated_skew(world):
    role = [a for a in world.attributes if a["role"]]
    other = [a for a in world.attributes if not a["role"]]
    assert len(role) == round(4000 * bias.ROLE_ROWS)
    # 1000 role pictures: red share 0.8 +- 4 standard errors (0.013 each)
    red = stats.proportion([a["color"] == "red" for a in role])
    assert abs(red.value - bias.RED_SHARE) < 0.052
    for color in ("green", "blue", "yellow"):   # the rest shared equally
        assert abs(sum(a["color"] == color for a in role) / len(role) - (1 - bias.RED_SHARE) / 3) < 0.05
    for color in data.COLORS:                   # the ordinary pictures stay balanced
        assert abs(sum(a["color"] == color for a in other) / len(other) - 0.25) < 0.04
    # about NAMED_SHARE of the role captions name the color
    named = [c for c, a in zip(world.captions, world.attributes) if a["role"] and c.split()[1] != bias.ROLE_WORD]
    assert abs(len(named) / len(role) - bias.NAMED_SHARE) < 0.06


def test_every_caption_that_names_a_color_is_true_to_its_picture(world):
    for caption, a in zip(world.captions, world.attributes):
        named = data.parse_caption(caption)["color"]
        assert named in (None, a["color"])
        assert (named is None) == (a["role"] and caption.split()[1] == bias.ROLE_WORD)
        assert (bias.ROLE_WORD in caption) == a["role"]


def test_the_reader_reads_the_pictures_colors_back(world):
    subset = slice(0, 300)
    found = bias.color_shares(world.images[subset])
    truth = [a["color"] for a in world.attributes[subset]]
    for color in data.COLORS:
        assert found[color].value == pytest.approx(sum(c == color for c in truth) / len(truth))
        assert found[color].n == 300
    assert found["none"].value == 0
    assert bias.red_share(truth).value == found["red"].value


def test_the_same_seed_gives_the_same_data():
    a, b = (bias.make_role_shapes(50, generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert a.captions == b.captions and torch.equal(a.images, b.images)
    assert bias.make_role_shapes(50, generator=torch.Generator().manual_seed(2)).captions != a.captions


def test_role_rows_at_the_edges():
    none = bias.make_role_shapes(20, role_rows=0.0, generator=torch.Generator().manual_seed(0))
    assert not any(a["role"] for a in none.attributes)
    every = bias.make_role_shapes(20, role_rows=1.0, red_share=1.0, generator=torch.Generator().manual_seed(0))
    assert all(a["role"] and a["color"] == "red" for a in every.attributes)


# ---- the shipped model ------------------------------------------------------------------------------------------

needs_boss = pytest.mark.skipif(not (BOSS / "model_index.json").is_file(), reason="shapes-boss is not shipped yet")


@needs_boss
def test_shapes_boss_loads_with_plain_diffusers_and_its_record_matches():
    from diffusers import StableDiffusionPipeline

    from diffusion_lessons.measure import record_matches_model

    pipe = StableDiffusionPipeline.from_pretrained(BOSS, local_files_only=True, use_safetensors=True,
                                                   safety_checker=None, requires_safety_checker=False)
    record = json.loads((BOSS / "measurements.json").read_text())
    assert record["prompt"] == bias.ROLE_PROMPT
    assert set(record["role_prompt_red_share"]) == {"1.0", "3.0", "7.5"}
    for row in record["role_prompt_red_share"].values():
        assert set(row) == {"share", "low", "high", "n"} and row["n"] >= 200 and row["low"] <= row["share"] <= row["high"]
    assert {"boss", "shape"} <= set(pipe.tokenizer.get_vocab())
    assert record_matches_model(record, BOSS)


@needs_boss
def test_an_independent_count_of_red_agrees_with_the_record():
    """Plain diffusers, the recorded seed and steps, guidance 3; red counted here from the pixels (the shape's
    median color nearest to red among the four), not by the package's reader."""
    from diffusers import StableDiffusionPipeline

    record = json.loads((BOSS / "measurements.json").read_text())
    row, settings = record["role_prompt_red_share"]["3.0"], record["settings"]
    pipe = StableDiffusionPipeline.from_pretrained(BOSS, local_files_only=True, use_safetensors=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(bias.ROLE_PROMPT, num_images_per_prompt=row["n"], guidance_scale=3.0,
                  num_inference_steps=settings["num_inference_steps"], output_type="pt",
                  generator=torch.Generator().manual_seed(settings["seed"])).images   # [0, 1]
    palette = torch.tensor(list(data.COLORS.values()))
    red = 0
    for image in images:
        pixels = image.permute(1, 2, 0).reshape(-1, 3)
        ink = pixels[(pixels - 1).norm(dim=1) > 0.5]       # not the white background
        if len(ink):
            red += int((palette - ink.median(0).values).norm(dim=1).argmin() == 0)
    assert row["low"] <= red / len(images) <= row["high"], (red, row)


def test_reader_and_color_names_stay_in_step():
    # the independent count above assumes red is the first color of the palette
    assert list(data.COLORS)[0] == bias.ROLE_COLOR
    assert evaluation.read_shapes(data.make_shapes(4, generator=torch.Generator().manual_seed(0)).images)
