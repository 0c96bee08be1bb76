"""The shipped flow-matching digits models (digits-flow, digits-reflow, digits-dit): they load with plain diffusers
as lessons 08 and 10 describe them (network + FlowMatchEulerDiscreteScheduler, labels 0-9 and the null label 10),
their configs agree with their recipe records, their manifests hold, sampling is deterministic under a fixed
generator, and their full-size measurement records belong to the shipped weights and state n and intervals."""

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler, UNet2DModel

from diffusion_lessons import flow, measure, pretrained
from diffusion_lessons.pretrained import ROOT

NETWORKS = {"digits-flow": ("unet", UNet2DModel), "digits-reflow": ("unet", UNet2DModel),
            "digits-dit": ("transformer", DiTTransformer2DModel)}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_loads_with_plain_diffusers_and_samples_deterministically(name):
    part, cls = NETWORKS[name]
    folder = ROOT / name
    network = cls.from_pretrained(folder / part, use_safetensors=True, local_files_only=True).eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    labels = torch.tensor([0, 7, 10])                                 # 10: the null label
    out = network(torch.zeros(3, 1, 16, 16), torch.full((3,), 500.0), class_labels=labels).sample
    assert out.shape == (3, 1, 16, 16) and torch.isfinite(out).all()
    a = flow.sample_with_flow_scheduler(network, scheduler, [3, 8], 4, 3.0, generator=torch.Generator().manual_seed(1))
    b = flow.sample_with_flow_scheduler(network, scheduler, [3, 8], 4, 3.0, generator=torch.Generator().manual_seed(1))
    c = flow.sample_with_flow_scheduler(network, scheduler, [3, 8], 4, 3.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_record_config_and_manifest_agree(name):
    part, _ = NETWORKS[name]
    folder = pretrained.check_pretrained(name)                      # manifest and configs against the record
    record = json.loads((folder / "recipe.json").read_text())
    config = json.loads((folder / part / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert record["model"] == name and record["scheduler"]["kind"] == scheduler["_class_name"]
    assert record["scheduler"]["num_train_timesteps"] == scheduler["num_train_timesteps"] == 1000
    assert record[part]["sample_size"] == config["sample_size"] == 16
    assert record["saved_weights"] == "EMA" and record["p_uncond"] == 0.15
    network, sched = pretrained.load_pretrained(name, device="cpu")
    assert type(network).__name__ == NETWORKS[name][1].__name__
    assert isinstance(sched, FlowMatchEulerDiscreteScheduler)
    labels = (network.config.num_class_embeds if part == "unet" else network.config.num_embeds_ada_norm + 1)
    assert labels == 11


def test_reflow_record_names_its_teacher_as_shipped():
    record = json.loads((ROOT / "digits-reflow" / "recipe.json").read_text())
    assert record["teacher"]["unet_sha256"] == measure.model_hashes(ROOT / "digits-flow" / "unet")
    assert record["pairs"]["conditional"] > 0 and record["pairs"]["unconditional"] > 0


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_measurements_belong_to_the_weights_and_state_n_and_intervals(name):
    path = ROOT / name / measure.RECORD_NAME
    assert path.is_file(), f"run python -m diffusion_lessons.measure {name} --per-label 20"
    record = json.loads(path.read_text())
    assert measure.record_matches_model(record, ROOT / name)
    assert set(record["few_steps"]) == {str(n) for n in measure.FEW_STEPS}
    for row in record["few_steps"].values():
        for key in ("fidelity", "rough", "diversity"):
            est = row[key]
            assert est["n"] >= 200 and est["low"] <= est["value"] <= est["high"]


def test_part_one_model_has_the_few_step_row_of_lesson_08():
    record = json.loads((ROOT / "digits" / measure.RECORD_NAME).read_text())
    assert set(record["few_steps"]) == {str(n) for n in measure.FEW_STEPS}
    assert all(row["fidelity"]["n"] >= 200 for row in record["few_steps"].values())
