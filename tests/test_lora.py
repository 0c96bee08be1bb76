"""Lesson 13's LoRA (diffusion_lessons.lora): the star and its reader, the adapter starting as a no-op with
r (d + k) numbers per projection, the save / load round trip through diffusers, and the shipped adapter."""

import json
import math

import pytest
import torch

from diffusion_lessons import data, lora, t2i
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.pretrained import ROOT

FOLDER = ROOT / "shapes-lora-star"


@pytest.fixture()
def pipe():
    return t2i.load_pipeline(ROOT / "shapes-t2i", "cpu")


def test_the_star_has_the_area_of_its_ten_triangles():
    geometry = torch.tensor([[16.0, 16.0, 12.0]])
    area = float(lora.star_coverage(geometry, 32, supersample=8).sum())
    assert area == pytest.approx(5 * lora.INNER * math.sin(math.radians(36)) * 12.0 ** 2, rel=0.02)


def test_the_reader_tells_stars_from_the_three_shapes():
    stars = lora.star_pictures(20)
    assert all(r["shape"] == "star" and r["color"] == a["color"] and r["background"] == a["background"]
               for r, a in zip(lora.read_with_star(stars["images"]), stars["attributes"]))
    shapes = data.make_shapes(200, generator=torch.Generator().manual_seed(3))
    reads = lora.read_with_star(shapes.images)
    assert sum(r["shape"] == a["shape"] for r, a in zip(reads, shapes.attributes)) >= 196


def test_a_fresh_adapter_changes_nothing_and_has_r_d_plus_k_numbers(pipe):
    unet = pipe.unet
    z, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 20, 64)
    with torch.no_grad():
        before = unet(z, 100, encoder_hidden_states=emb).sample
    lora.add_lora(unet, rank=2, seed=0)
    with torch.no_grad():
        after = unet(z, 100, encoder_hidden_states=emb).sample
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    expected = sum(2 * (m.base_layer.in_features + m.base_layer.out_features) for name, m in unet.named_modules()
                   if name.endswith(("to_q", "to_k", "to_v", "to_out.0")))
    assert lora.lora_parameters(unet) == expected
    assert all(not p.requires_grad for n, p in unet.named_parameters() if "lora_" not in n)


def test_save_and_load_round_trip(pipe, tmp_path):
    lora.add_lora(pipe.unet, rank=4, seed=0)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)                                  # as if trained
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    want = pipe("a red circle on a white background", num_inference_steps=5, generator=g(), output_type="pt").images
    lora.save_lora(pipe.unet, tmp_path)
    fresh = t2i.load_pipeline(ROOT / "shapes-t2i", "cpu")
    lora.load_adapter(fresh, tmp_path)
    got = fresh("a red circle on a white background", num_inference_steps=5, generator=g(), output_type="pt").images
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    fresh.unload_lora_weights()
    assert lora.lora_parameters(fresh.unet) == 0


def test_the_text_encoder_adapter_starts_as_a_no_op_and_round_trips(pipe, tmp_path):
    """add_text_lora: only A and B train, B = 0 leaves the encoder unchanged; save_lora(..., text_encoder) writes
    both parts into one file and pipe.load_lora_weights puts the text encoder's part back exactly."""
    ids = torch.tensor(pipe.tokenizer("a red star on a white background").input_ids)[None]
    with torch.no_grad():
        before = pipe.text_encoder(ids)[0]
    lora.add_lora(pipe.unet, rank=2, seed=0)
    lora.add_text_lora(pipe.text_encoder, rank=2, seed=0)
    trainable = [n for n, p in pipe.text_encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    layers = [m for n, m in pipe.text_encoder.named_modules() if n.endswith(tuple(lora.TEXT_TARGET_MODULES))]
    assert lora.lora_parameters(pipe.text_encoder) == sum(
        2 * (m.base_layer.in_features + m.base_layer.out_features) for m in layers)
    with torch.no_grad():
        torch.testing.assert_close(pipe.text_encoder(ids)[0], before, atol=1e-6, rtol=0)
        for name, p in pipe.text_encoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)                                   # as if trained
        want = pipe.text_encoder(ids)[0]
    assert (want - before).abs().max() > 1e-3
    lora.save_lora(pipe.unet, tmp_path, pipe.text_encoder)
    fresh = t2i.load_pipeline(ROOT / "shapes-t2i", "cpu")
    lora.load_adapter(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh.text_encoder(ids)[0], want, atol=1e-5, rtol=0)


def test_a_missing_adapter_folder_is_refused(pipe, tmp_path):
    with pytest.raises(ValueError, match="folder"):
        lora.load_adapter(pipe, tmp_path / "nothing")


def test_the_shipped_adapter_is_small_and_loads_with_plain_diffusers(pipe):
    record = json.loads((FOLDER / "measurements.json").read_text())
    assert record_matches_model(record, FOLDER)
    assert lora.adapter_bytes(FOLDER) <= 1_000_000
    pipe.load_lora_weights(str(FOLDER))
    shipped = json.loads((FOLDER / "recipe.json").read_text())["models"]["shipped"]
    assert (lora.lora_parameters(pipe.unet) + lora.lora_parameters(pipe.text_encoder)
            == record["runs"][shipped]["lora_parameters"])


def test_caption_dropout_swaps_whole_captions_for_the_empty_prompt(pipe):
    """The star recipe's batches: with caption_dropout the dropped rows carry exactly the empty prompt's ids and the
    rest their own captions; at 0 nothing is dropped; pictures, noise and timesteps do not depend on it."""
    from diffusion_lessons.recipes import shapes_lora_star

    found = lora.star_pictures(4, seed=0)
    stars = shapes_lora_star.latent_store(pipe, found["images"], found["captions"], torch.device("cpu"))
    prior = shapes_lora_star.latent_store(pipe, found["images"], data.shape_prompts()[:4], torch.device("cpu"))
    batch = lambda p: shapes_lora_star.sample_batch(stars, prior, 64, torch.Generator().manual_seed(0), 1000,  # noqa: E731
                                                    0.5, caption_dropout=p)
    kept, half, none = batch(0.0), batch(0.5), batch(1.0)
    empty = stars["empty_ids"]
    dropped = (half["ids"] == empty).all(dim=1)
    assert 10 < int(dropped.sum()) < 54                       # about half of 64, not all, not none
    assert torch.equal(half["ids"][~dropped], kept["ids"][~dropped])
    assert not (kept["ids"] == empty).all(dim=1).any() and (none["ids"] == empty).all()
    for key in ("z0", "t", "eps"):
        assert torch.equal(kept[key], half[key])
    assert not torch.equal(empty, stars["ids"][0])          # a caption's ids are not the empty prompt's
