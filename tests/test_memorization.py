"""Lesson 16's memorization measures (diffusion_lessons.memorization) and the shipped digits-memorize runs."""

import json
from pathlib import Path

import pytest
import torch

from diffusion_lessons import memorization
from diffusion_lessons.data import load_digits

ROOT = Path(memorization.__file__).parent / "pretrained" / "digits-memorize"


def brute_force(queries, references):
    """The k = 2 nearest references of each query by a plain double loop over pairs."""
    out = []
    for q in queries:
        d = sorted((((q - r) ** 2).mean().sqrt().item(), j) for j, r in enumerate(references))
        out.append(d[:2])
    return out


def test_nearest_neighbours_agree_with_brute_force():
    g = torch.Generator().manual_seed(0)
    queries, references = torch.randn(37, 1, 5, 5, generator=g), torch.randn(53, 1, 5, 5, generator=g)
    d, idx = memorization.nearest_neighbours(queries, references, k=2, chunk=8)   # several chunks
    for row, pairs in enumerate(brute_force(queries, references)):
        assert idx[row].tolist() == [j for _, j in pairs]
        assert d[row].tolist() == pytest.approx([v for v, _ in pairs], rel=1e-5)


def test_a_copy_is_flagged_and_a_new_image_is_not():
    train, _ = load_digits("train")
    references = train[:200]
    near_copy = references[:5] + 0.01 * torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    held_out, _ = load_digits("test")
    assert memorization.copy_flags(near_copy, references).all()
    assert memorization.copy_flags(held_out[:100], references).float().mean() < 0.1


def test_unique_rows_and_duplicates():
    x, _ = load_digits("train")
    x = x[:30]
    dup = memorization.with_duplicates(x, [3, 7], copies=4)
    assert dup.shape[0] == 30 + 2 * 4
    assert torch.equal(dup[30], x[3]) and torch.equal(dup[31], x[7])
    distinct, first = memorization.unique_rows(dup)
    assert distinct.shape[0] == len(torch.unique(x.reshape(30, -1), dim=0))
    assert (first < 30).all() and torch.equal(distinct, dup[first])


def test_duplicates_do_not_hide_a_copy():
    """A duplicated training image is its own second neighbour: against the raw set, a near copy of it looks
    equally far from two images and passes the ratio test as new. The report compares with distinct images."""
    x, _ = load_digits("train")
    train = memorization.with_duplicates(x[:100], [0], copies=3)
    near_copy = x[:1] + 0.01 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    assert not memorization.copy_flags(near_copy, train).any()
    report = memorization.memorization_report(near_copy.repeat(4, 1, 1, 1), train, x[100:140])
    assert report["sample_copy_share"].value == 1.0
    assert report["held_out_copy_share"].value < 0.2


def test_training_subset_is_stratified_and_seeded():
    x, labels, rows = memorization.training_subset(100, seed=0)
    assert x.shape == (100, 1, 16, 16) and torch.bincount(labels, minlength=10).tolist() == [10] * 10
    full, full_labels = load_digits("train")
    assert torch.equal(full[rows], x) and torch.equal(full_labels[rows], labels)
    assert torch.equal(memorization.training_subset(100, seed=0)[2], rows)
    assert not torch.equal(memorization.training_subset(100, seed=1)[2], rows)
    small = memorization.training_subset(10, seed=0)[1]
    assert sorted(small.tolist()) == list(range(10))


@pytest.mark.parametrize("call, match", [
    (lambda: memorization.nearest_neighbours(torch.zeros(2, 4), torch.zeros(3, 5)), "same image shape"),
    (lambda: memorization.nearest_neighbours(torch.zeros(2, 4), torch.zeros(3, 4), k=4), "k must be"),
    (lambda: memorization.nearest_neighbours([1, 2], torch.zeros(3, 4)), "queries must be"),
    (lambda: memorization.copy_flags(torch.zeros(2, 4), torch.zeros(1, 4)), "at least 2"),
    (lambda: memorization.copy_flags(torch.zeros(2, 4), torch.zeros(3, 4), ratio=2.0), "ratio"),
    (lambda: memorization.training_subset(0), "n must be"),
    (lambda: memorization.training_subset(5000), "n must be"),
    (lambda: memorization.with_duplicates(torch.zeros(3, 4), [5], 2), "rows must be"),
    (lambda: memorization.with_duplicates(torch.zeros(3, 4), [1], -1), "copies must be"),
])
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


needs_runs = pytest.mark.skipif(not (ROOT / "measurements.json").is_file(), reason="digits-memorize is not shipped")


@needs_runs
def test_shipped_runs_load_with_plain_diffusers_and_their_record_holds():
    """Each run's U-Net loads with plain diffusers; re-measured from its training rows (a smaller sample),
    the n10 model's copy share lies inside the record's interval."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    from diffusion_lessons.recipes.digits_memorize import RUNS

    record = json.loads((ROOT / "measurements.json").read_text())
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(ROOT / "scheduler", local_files_only=True)
    for run in RUNS:
        unet = UNet2DModel.from_pretrained(ROOT / run / "unet", use_safetensors=True, local_files_only=True)
        assert unet.config.sample_size == 16
    unet = UNet2DModel.from_pretrained(ROOT / "n10" / "unet", use_safetensors=True, local_files_only=True)
    full, _ = load_digits("train")
    train = full[torch.tensor(record["runs"]["n10"]["training_rows"])]
    samples = memorization.draw_samples(unet.eval(), scheduler, 60, seed=123)
    share = memorization.copy_flags(samples, train).float().mean().item()
    found = record["runs"]["n10"]["sample_copy_share"]
    assert found["low"] - 0.1 <= share <= found["high"] + 0.1


def test_lesson16_exercise_references_agree_with_the_package():
    from diffusion_lessons.exercise_bank import lesson16
    from diffusion_lessons.stats import wilson_interval

    for k, n in ((0, 10), (7, 10), (160, 200), (200, 200)):
        e = wilson_interval(k, n)
        assert lesson16.wilson_by_hand(k, n) == pytest.approx((e.low, e.high))
    g = torch.Generator().manual_seed(3)
    queries, references = lesson16._copy_inputs(g)
    assert torch.equal(lesson16.copy_flags_by_hand(queries, references),
                       memorization.copy_flags(queries, references))
    p_cond, p_uncond = torch.tensor([0.8, 0.1, 0.05, 0.05]), torch.tensor([0.4, 0.2, 0.2, 0.2])
    torch.testing.assert_close(lesson16.guided_shares(p_cond, p_uncond, 1.0), p_cond)
    shares = [lesson16.guided_shares(p_cond, p_uncond, s)[0].item() for s in (1.0, 3.0, 7.5)]
    assert shares[0] < shares[1] < shares[2] < 1   # guidance sharpens towards the majority
