"""Full-size measurement records (python -m diffusion_lessons.measure NAME) belong to the weights that ship."""

import json

import pytest
import torch

from diffusion_lessons import measure
from diffusion_lessons.pretrained import ROOT


def _records():
    return sorted(ROOT.glob(f"*/{measure.RECORD_NAME}"))


@pytest.mark.parametrize("path", _records(), ids=lambda p: p.parent.name)
def test_each_record_belongs_to_the_shipped_model(path):
    record = json.loads(path.read_text())
    assert record["model"] == path.parent.name
    assert measure.record_matches_model(record, path.parent), (
        f"{path} was measured on other weights: run python -m diffusion_lessons.measure {path.parent.name}")


def test_the_digits_record_exists_and_states_n_and_intervals():
    path = ROOT / "digits" / measure.RECORD_NAME
    assert path.is_file(), "run python -m diffusion_lessons.measure digits"
    record = json.loads(path.read_text())
    rows = list(record["guidance"].values()) + list(record["samplers"].values())
    assert set(record["guidance"]) == {f"{s:.1f}" for s in measure.DIGITS_GUIDANCE_SCALES}
    for row in rows:
        for key in ("fidelity", "rough", "diversity", "pixel_diversity"):
            est = row[key]
            assert est["n"] >= 500 and est["low"] <= est["value"] <= est["high"]


def test_hash_changes_with_the_weights(tmp_path):
    (tmp_path / "unet").mkdir()
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "unet" / "m.safetensors")
    before = measure.model_hashes(tmp_path)
    record = {"model_sha256": before}
    assert measure.record_matches_model(record, tmp_path)
    save_file({"w": torch.ones(3)}, tmp_path / "unet" / "m.safetensors")
    assert not measure.record_matches_model(record, tmp_path)


def test_a_model_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="safetensors"):
        measure.model_hashes(tmp_path)


def test_bad_arguments_are_clear_errors(capsys):
    with pytest.raises(SystemExit):
        measure.main(["digits", "--per-label", "1"])
    assert "--per-label must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        measure.main(["nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_flow_models_measure_lesson_08s_rows_and_groups_merge(tmp_path):
    """A flow model's record: the even Euler ladders and the scheduler's own; --groups replaces only its group."""
    from diffusion_lessons.recipes import digits_flow

    model = tmp_path / "flow"
    digits_flow.main(["--steps", "2", "--skip-eval", "--out", str(model), "--profile", "quick", "--batch-size", "8"])
    out = tmp_path / "m.json"
    first = measure.main(["digits-flow", "--model", str(model), "--per-label", "2", "--out", str(out)])
    assert set(first["few_steps"]) == {str(n) for n in measure.FEW_STEPS}
    assert set(first["scheduler_ladder"]) == {"2", "50"}
    assert all(row["fidelity"]["n"] == 20 for row in first["few_steps"].values())
    again = measure.main(["digits-flow", "--model", str(model), "--per-label", "3", "--out", str(out),
                          "--groups", "scheduler_ladder"])
    assert again["few_steps"] == first["few_steps"]                      # kept
    assert all(row["fidelity"]["n"] == 30 for row in again["scheduler_ladder"].values())
    assert again["settings"]["per_label_of"] == {"scheduler_ladder": 3}
    assert json.loads(out.read_text()) == again
    with pytest.raises(SystemExit):
        measure.main(["digits-flow", "--model", str(model), "--groups", "guidance", "--out", str(out)])


def test_hardware_says_what_ran_it():
    """The records' hardware string: the CPU model and torch's thread count, in words ('1 thread', '2 threads')."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert measure.hardware(torch.device("cpu")).endswith(" (1 thread)")
        torch.set_num_threads(2)
        assert measure.hardware("cpu").endswith(" (2 threads)")
        if not torch.cuda.is_available():
            assert measure.hardware() == measure.hardware("cpu")
    finally:
        torch.set_num_threads(before)
