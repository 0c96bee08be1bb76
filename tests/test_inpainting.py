"""Lesson 11's inpainting (diffusion_lessons.inpainting): the masks, the 9-channel U-Net's starting point, the
blending trick through diffusers' pipeline, the measures, and the shipped StableDiffusionInpaintPipeline."""

import json
import os

import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline

from diffusion_lessons import data, inpainting, t2i
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.pretrained import ROOT

FOLDER = ROOT / "shapes-inpaint"


@pytest.fixture(scope="module")
def pipe():
    return t2i.load_pipeline(ROOT / "shapes-t2i", "cpu")


def test_box_masks_cover_the_shape_in_whole_latent_cells():
    shapes = data.make_shapes(64, generator=torch.Generator().manual_seed(0))
    masks = inpainting.box_masks(shapes.geometry)
    idx = torch.tensor([data.SHAPES.index(a["shape"]) for a in shapes.attributes])
    covered = data.shape_coverage(idx, shapes.geometry, 32) > 0
    assert bool((masks[:, 0][covered] == 1).all())                       # the whole shape is inside its box
    small = torch.nn.functional.interpolate(masks, size=(8, 8))          # what the pipeline hands the U-Net
    assert torch.equal(small.repeat_interleave(4, 2).repeat_interleave(4, 3), masks)


def test_the_nine_channel_unet_starts_as_the_base_model(pipe):
    wide = inpainting.inpaint_unet(pipe.unet)
    assert wide.config.in_channels == 9 and float(wide.conv_in.weight.detach()[:, 4:].abs().max()) == 0.0
    z, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 20, 64)
    with torch.no_grad():
        base = pipe.unet(z, 300, encoder_hidden_states=emb).sample
        ours = wide(torch.cat([z, torch.randn(2, 5, 8, 8)], 1), 300, encoder_hidden_states=emb).sample
    torch.testing.assert_close(ours, base, atol=1e-5, rtol=0)


def test_blending_keeps_the_outside_and_repaints_the_box(pipe):
    tasks = inpainting.edit_tasks(4, seed=3)["replace"]
    out = inpainting.inpaint(inpainting.inpaint_pipeline(pipe), tasks["images"], tasks["masks"], tasks["prompts"],
                             10, 7.5, torch.Generator().manual_seed(0))
    assert bool((inpainting.outside_change(out, tasks["images"], tasks["masks"]) <= inpainting.MAX_OUTSIDE_CHANGE).all())
    inside = ((out - tasks["images"]).abs() * tasks["masks"]).sum() / tasks["masks"].sum() / 3
    assert float(inside) > 0.05                                          # the box was repainted


def test_measures_on_known_pictures():
    shapes = data.make_shapes(8, caption_style="plain", generator=torch.Generator().manual_seed(1))
    idx = torch.tensor([data.SHAPES.index(a["shape"]) for a in shapes.attributes])
    truth = data.shape_coverage(idx, shapes.geometry, 32) > 0.5
    sil = inpainting.silhouettes(shapes.images, [a["color"] for a in shapes.attributes])
    assert bool((inpainting.iou(sil, truth) > 0.9).all())
    masks = inpainting.box_masks(shapes.geometry)
    assert float(inpainting.outside_change(shapes.images, shapes.images, masks).max()) == 0.0
    plain = torch.ones(1, 3, 32, 32)
    assert float(inpainting.seam(plain, masks[:1])) == 0.0
    half = plain.clone()
    half[:, :, :, 16:] = -1                                               # white | black, the mask's edge between
    edge = torch.zeros(1, 1, 32, 32)
    edge[:, :, :, 16:] = 1
    assert float(inpainting.seam(half, edge)) == pytest.approx(1.0)


def test_the_keep_control_asks_for_nothing_new():
    """edit_tasks' 'keep' control: the background edit's pictures and masks, each prompt its own picture's caption
    (so nothing is to change), while 'background' asks the other background of the same shapes."""
    from diffusion_lessons.evaluation import read_shapes

    tasks = inpainting.edit_tasks(6, seed=5)
    keep, back = tasks["keep"], tasks["background"]
    assert torch.equal(keep["images"], back["images"]) and torch.equal(keep["masks"], back["masks"])
    pick = lambda found: [{k: r[k] for k in ("shape", "color", "background")} for r in found]  # noqa: E731
    assert pick(keep["wanted"]) == pick(read_shapes(keep["images"]))   # the reader agrees: the picture as it is
    assert keep["prompts"] == [data.shape_caption(w["shape"], w["color"], w["background"]) for w in keep["wanted"]]
    assert all(k["background"] != b["background"] and (k["shape"], k["color"]) == (b["shape"], b["color"])
               for k, b in zip(keep["wanted"], back["wanted"]))


def test_bad_masks_are_refused(pipe):
    tasks = inpainting.edit_tasks(2)["replace"]
    with pytest.raises(ValueError, match="masks"):
        inpainting.inpaint(inpainting.inpaint_pipeline(pipe), tasks["images"], torch.ones(2, 1, 16, 16), "a red circle")
    with pytest.raises(ValueError, match="unet"):
        inpainting.inpaint_unet(inpainting.inpaint_unet(pipe.unet))


def test_the_shipped_inpainting_pipeline_loads_with_plain_diffusers_and_shares_the_base_parts():
    pipe = StableDiffusionInpaintPipeline.from_pretrained(FOLDER, safety_checker=None, requires_safety_checker=False,
                                                          use_safetensors=True, local_files_only=True)
    assert pipe.unet.config.in_channels == 9
    for part in ("vae", "text_encoder", "tokenizer"):
        assert (FOLDER / part).is_symlink() and os.path.samefile(FOLDER / part, ROOT / "shapes-t2i" / part)
    record = json.loads((FOLDER / "measurements.json").read_text())
    assert record_matches_model(record, FOLDER)
    assert set(record) >= {"inpainting_unet", "blending_base_model"}


def test_the_shipped_model_re_measures_within_its_record():
    """A fresh run of the record's replace edit on 24 of its pictures lands inside the record's intervals (a loose
    check: 24 pictures, the record's n is larger)."""
    pipe = inpainting.load_inpaint_pipeline(FOLDER)
    record = json.loads((FOLDER / "measurements.json").read_text())["inpainting_unet"]
    found = inpainting.measure_edits(pipe, inpainting.edit_tasks(24, seed=100), seed=0)["measures"]
    for task, key in (("replace", "asked_color"), ("replace", "asked_shape"), ("background", "new_background")):
        assert found[task][key]["value"] >= record[task][key]["low"] - 0.1


def test_the_inpainting_recipe_trains_v_as_diffusers_defines_it():
    """The recipe's loss is the MSE to diffusers' v (the shipped scheduler's get_velocity, on the base model's
    noise schedule), and the shipped scheduler reads the U-Net's output as v."""
    from types import SimpleNamespace

    from diffusers import DDIMScheduler

    from diffusion_lessons.recipes import shapes_inpaint, shapes_t2i
    from diffusion_lessons.schedules import make_schedule

    g = torch.Generator().manual_seed(0)
    z0, eps, out = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([5, 500, 961])
    seen = {}

    def unet(x, timesteps, encoder_hidden_states):
        seen.update(x=x, t=timesteps)
        return SimpleNamespace(sample=out)

    batch = dict(z0=z0, eps=eps, t=t, ids=torch.zeros(3, 2, dtype=torch.long), mask=torch.ones(3, 1, 8, 8),
                 z_known=torch.full((3, 4, 8, 8), 2.0))
    loss = shapes_inpaint.loss_fn(unet, lambda ids: (torch.zeros(len(ids), 2, 64),),
                                  make_schedule(shapes_t2i.NOISE_SCHEDULE), batch)
    scheduler = DDIMScheduler.from_pretrained(FOLDER, subfolder="scheduler")
    assert scheduler.config.prediction_type == shapes_inpaint.PREDICTION_TYPE == "v_prediction"
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(out, scheduler.get_velocity(z0, eps, t)))
    torch.testing.assert_close(seen["x"][:, :4], scheduler.add_noise(z0, eps, t))   # the noisy latents first
    assert torch.equal(seen["t"], t)
    assert bool((seen["x"][:, 4] == 1).all()) and bool((seen["x"][:, 5:] == 2).all())
