"""The shipped signs models of lesson 14 load with plain diffusers, share one VAE, and were measured."""

import json

import pytest
import torch

from diffusion_lessons import signs
from diffusion_lessons.pretrained import ROOT, verify_manifest

KINDS = ("word", "bpe", "char")


@pytest.fixture(scope="module")
def pipes():
    from diffusers import StableDiffusionPipeline

    return {k: StableDiffusionPipeline.from_pretrained(ROOT / f"signs-{k}", use_safetensors=True,
                                                       local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False) for k in KINDS}


def test_the_three_folders_share_one_vae_and_list_their_training_words():
    train, _ = signs.split_words()
    for k in KINDS:
        folder = ROOT / f"signs-{k}"
        verify_manifest(folder)
        assert (folder / "train_words.txt").read_text().split() == train
        assert (folder / "vae").resolve() == (ROOT / "signs-char" / "vae").resolve()
    assert not (ROOT / "signs-char" / "vae").is_symlink()
    assert (ROOT / "signs-word" / "vae").is_symlink() and (ROOT / "signs-bpe" / "vae").is_symlink()


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
    for k in KINDS:
        found = json.loads((ROOT / f"signs-{k}" / "measurements.json").read_text())
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
