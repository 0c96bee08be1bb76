"""The shipped signs models of lesson 14 load with plain diffusers, share one VAE, and were measured; the
character-level one spells words it never saw."""

import json

import pytest
import torch

from diffusion_lessons import signs
from diffusion_lessons.pretrained import ROOT, verify_manifest

KINDS = ("word", "bpe", "char")
FOLDERS = ("signs-word", "signs-bpe", "signs-char", "signs-char-eps")   # the last: signs-char's noise-predicting twin


@pytest.fixture(scope="module")
def pipes():
    from diffusers import StableDiffusionPipeline

    return {k: StableDiffusionPipeline.from_pretrained(ROOT / f"signs-{k}", use_safetensors=True,
                                                       local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False) for k in KINDS}


def test_the_folders_share_one_vae_and_list_their_training_words():
    train, _ = signs.split_words()
    for name in FOLDERS:
        folder = ROOT / name
        verify_manifest(folder)
        assert (folder / "train_words.txt").read_text().split() == train
        assert (folder / "vae").resolve() == (ROOT / "signs-char" / "vae").resolve()
        assert (folder / "vae").is_symlink() == (name != "signs-char")


def test_the_schedulers_say_what_each_unet_predicts():
    """signs-char-eps differs from signs-char only in what its U-Net predicts; each scheduler says which, and the
    recipe records agree."""
    for name in FOLDERS:
        predicts = json.loads((ROOT / name / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
        record = json.loads((ROOT / name / "recipe.json").read_text())
        assert predicts == record["prediction_type"] == ("epsilon" if name.endswith("-eps") else "v_prediction")
        assert f"--prediction-type {predicts}" in record["command"]
    configs = [{k: v for k, v in json.loads((ROOT / n / "unet" / "config.json").read_text()).items()
                if not k.startswith("_")} for n in ("signs-char", "signs-char-eps")]
    assert configs[0] == configs[1]


def test_the_character_level_model_spells_words_it_never_saw(pipes):
    """Eight unseen words drawn by the shipped signs-char (25 steps, guidance 7.5) and read back by the reader."""
    _, unseen = signs.split_words()
    words = unseen[1000:1008]
    images = pipes["char"]([signs.caption(w) for w in words], num_inference_steps=25, guidance_scale=7.5,
                           output_type="pt", generator=torch.Generator().manual_seed(0)).images * 2 - 1
    assert signs.letter_matches(signs.read_signs(images), words).double().mean().item() >= 0.8


def test_tokenizers_take_the_caption_as_a_plain_string(pipes):
    from transformers import PreTrainedTokenizerFast

    train, unseen = signs.split_words()
    for k, pipe in pipes.items():
        tok = pipe.tokenizer
        assert isinstance(tok, PreTrainedTokenizerFast) and tok.model_max_length == signs.MAX_LENGTH
        for word in (train[0], unseen[0]):
            ids = tok(signs.caption(word), padding="max_length", max_length=tok.model_max_length).input_ids
            assert len(ids) == signs.MAX_LENGTH
            expected = "a sign that says" if (k == "word" and word in unseen) else signs.caption(word)
            assert tok.decode(ids, skip_special_tokens=True) == expected
        # the shipped tokenizer is the one the recipe builds from the training words
        assert tok.get_vocab() == signs.build_tokenizer(k, train).get_vocab()


def test_the_pipelines_draw_signs_of_the_worlds_size(pipes):
    pipe = pipes["char"]
    out = pipe(["a sign that says CAT"], num_inference_steps=2, guidance_scale=7.5, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, signs.HEIGHT, signs.WIDTH)


def test_records_hold_the_measured_spelling():
    for name in FOLDERS:
        found = json.loads((ROOT / name / "measurements.json").read_text())
        assert found["model"] == name
        for where in ("seen", "unseen"):
            assert found[where]["words"]["n"] >= 40 and len(found[where]["asked"]) == found[where]["words"]["n"]
            letters = found[where]["letters"]
            assert letters["low"] <= letters["value"] <= letters["high"]
            read, asked = found[where]["read"], found[where]["asked"]
            share = signs.letter_matches(read, asked).double().mean().item()
            assert abs(share - letters["value"]) < 1e-3     # the record agrees with its own words


def test_the_blending_trick_runs_on_a_wide_model(pipes):
    """diffusers' inpainting pipeline compares sample_size with 64 in its __init__; the book's wrapper lets a
    (height, width) U-Net through and leaves its config as it was."""
    from diffusion_lessons import inpainting

    pipe = pipes["char"]
    repaint = inpainting.inpaint_pipeline(pipe)
    assert list(pipe.unet.config.sample_size) == [8, 16]
    mask = torch.zeros(1, 1, signs.HEIGHT, signs.WIDTH)
    mask[..., 4:28, 4:60] = 1.0
    out = inpainting.inpaint(repaint, signs.render(["CAT"]), mask, "a sign that says CAT", 2, 7.5,
                             torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, signs.HEIGHT, signs.WIDTH) and torch.isfinite(out).all()
