"""Lesson 12's ControlNet (diffusion_lessons.control): built from the shipped U-Net it starts as a no-op (the
pipeline draws exactly what the base model draws), its control encoder reaches the latent size, and the shipped
ControlNetModel loads with plain diffusers and pins the shape to the silhouette."""

import json

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

from diffusion_lessons import control, inpainting, t2i
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.pretrained import ROOT

FOLDER = ROOT / "shapes-controlnet"


@pytest.fixture(scope="module")
def pipe():
    return t2i.load_pipeline(ROOT / "shapes-t2i", "cpu")


def test_before_training_the_controlnet_pipeline_equals_the_base_model(pipe):
    net = control.build_controlnet(pipe.unet, seed=0)
    assert set(control.zero_convolutions(net).values()) == {0.0}
    tasks = control.control_tasks(2, seed=4)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ours = control.controlled(control.controlnet_pipeline(pipe, net), tasks["prompts"], tasks["control"], 1.0, 8, 7.5, g())
    base = pipe(tasks["prompts"], num_inference_steps=8, guidance_scale=7.5, generator=g(), output_type="pt").images
    torch.testing.assert_close(ours, base * 2 - 1, atol=1e-5, rtol=0)


def test_the_control_encoder_reaches_the_latent_size(pipe):
    net = control.build_controlnet(pipe.unet, seed=0)
    cond = net.controlnet_cond_embedding(torch.zeros(1, 3, 32, 32))
    assert tuple(cond.shape[-2:]) == (8, 8) and cond.shape[1] == pipe.unet.config.block_out_channels[0]


def test_silhouettes_are_the_shapes_coverage():
    tasks = control.control_tasks(6, seed=2)
    c = tasks["control"]
    assert c.shape == (6, 3, 32, 32) and float(c.min()) >= 0 and float(c.max()) <= 1
    assert torch.equal(c[:, 0], c[:, 1]) and torch.equal(c[:, 1], c[:, 2])
    sil = inpainting.silhouettes(tasks["shapes"].images, tasks["colors"])
    assert bool((inpainting.iou(sil, c[:, 0] > 0.5) > 0.9).all())


def test_a_control_image_of_the_wrong_size_is_refused(pipe):
    net_pipe = control.controlnet_pipeline(pipe, control.build_controlnet(pipe.unet, seed=0))
    with pytest.raises(ValueError, match="control"):
        control.controlled(net_pipe, "a red circle on a white background", torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="control"):
        control.controlled(net_pipe, "a red circle on a white background", torch.full((1, 3, 32, 32), 2.0))


def test_the_shipped_controlnet_loads_with_plain_diffusers_and_follows_the_silhouette():
    net = ControlNetModel.from_pretrained(FOLDER, use_safetensors=True, local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(ROOT / "shapes-t2i", controlnet=net, safety_checker=None,
                                                             requires_safety_checker=False, use_safetensors=True,
                                                             local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    record = json.loads((FOLDER / "measurements.json").read_text())
    assert record_matches_model(record, FOLDER)
    found = control.measure_control(pipe, control.control_tasks(12, seed=9), (0.0, 1.0), 25, 7.5, 0)["measures"]
    assert found["1"]["mean_iou"]["value"] > found["0"]["mean_iou"]["high"]      # control beats free placement
    assert found["1"]["mean_iou"]["value"] >= record["1"]["mean_iou"]["low"] - 0.1
