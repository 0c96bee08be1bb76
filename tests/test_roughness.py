"""Roughness: speckle that a classifier cannot see (evaluation.roughness and friends)."""

import pytest
import torch
from torch.nn import functional as F

from diffusion_lessons import evaluation
from diffusion_lessons.data import load_digits


def test_by_hand_and_real_digits_are_never_rough():
    x, _ = load_digits("all", 16)
    by_hand = (x - F.interpolate(F.avg_pool2d(x, 2), size=(16, 16), mode="bilinear", align_corners=False)).pow(2)
    assert torch.allclose(evaluation.roughness(x), by_hand.mean(dim=(1, 2, 3)))
    assert evaluation.rough_share(x) == 0.0          # the threshold is the roughest real digit
    assert evaluation.real_roughness(16)[-1] == evaluation.roughness(x).max()


def test_speckle_is_rough_yet_still_read_as_the_right_digit():
    x, y = load_digits("test", 16)
    g = torch.Generator().manual_seed(0)
    speckled = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert evaluation.rough_share(speckled) > 0.95
    classifier = evaluation.train_digit_classifier(16)
    assert classifier.accuracy(speckled, y) > 0.85   # the classifier reads the shape through the speckle


def test_a_smooth_blur_is_not_rough():
    x, _ = load_digits("test", 16)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert evaluation.rough_share(blurred) == 0.0


def test_measure_digits_gives_intervals_that_contain_the_values():
    x, y = load_digits("test", 16)
    m = evaluation.measure_digits(x, y)
    assert m["rough"].value == 0.0 and m["rough"].n == 300
    assert m["fidelity"].low <= m["fidelity"].value <= m["fidelity"].high
    assert m["diversity"].low < 1.0 < m["diversity"].high     # real digits are the reference: about 1
    per_sample = evaluation.diversity_per_sample(x, y)
    assert per_sample.mean() == pytest.approx(m["diversity"].value)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 16, 16), torch.zeros(2, 1, 4, 4), torch.zeros(16, 16), "x"])
def test_bad_images_are_clear_errors(bad):
    with pytest.raises(ValueError, match="images must be a tensor"):
        evaluation.roughness(bad)
