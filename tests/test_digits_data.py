"""sklearn's digits as the book uses them (lessons 03-05), and the digit reader that scores samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from diffusion_lessons.data import DIGITS_HELD_OUT, DIGITS_SIZE, load_digits
from diffusion_lessons.evaluation import (DIVERSITY_SPACES, FEATURE_DIMS, digit_features, fidelity,
                                          mean_pairwise_distance, train_digit_classifier, within_class_diversity)


def test_shapes_range_and_ink():
    x, y = load_digits("train")
    assert x.shape == (1797 - DIGITS_HELD_OUT, 1, DIGITS_SIZE, DIGITS_SIZE) and x.dtype == torch.float32
    assert y.shape == (x.shape[0],) and y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert x.min() == -1 and x.max() == 1
    assert (x == -1).float().mean() > 0.25 and x.median() < -0.5  # mostly background (-1); ink is +1
    assert x[:, :, :, 0].mean() < -0.9  # the left column is nearly empty


def test_native_size_is_sklearns_data_rescaled():
    x, y = load_digits("all", size=8)
    ref = sklearn_digits()
    torch.testing.assert_close(x[:, 0], torch.from_numpy(ref.images / 8.0 - 1).float())
    assert torch.equal(y, torch.from_numpy(ref.target))


def test_upsampled_digits_average_back_to_the_native_ones():
    small, _ = load_digits("test", size=8)
    big, _ = load_digits("test", size=16)
    back = torch.nn.functional.avg_pool2d(big, 2)  # bilinear 2x upsampling keeps the 2x2 block means
    assert (back - small).abs().mean() < 0.5 * (back - small.roll(1, dims=0)).abs().mean()


def test_fixed_stratified_held_out_split():
    train_x, train_y = load_digits("train", size=8)
    test_x, test_y = load_digits("test", size=8)
    all_x, _ = load_digits("all", size=8)
    assert len(test_y) == DIGITS_HELD_OUT and len(train_y) + len(test_y) == len(all_x)
    counts = torch.bincount(test_y, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32  # stratified: about 30 of each digit
    train_rows = {tuple(r) for r in train_x.reshape(len(train_x), -1).numpy().round(4).tolist()}
    overlap = sum(tuple(r) in train_rows for r in test_x.reshape(len(test_x), -1).numpy().round(4).tolist())
    assert overlap <= 2  # sklearn's digits hold a couple of exact duplicates, nothing more
    assert torch.equal(test_x, load_digits("test", size=8)[0])  # the same split every call


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="size"):
        load_digits("train", size=4)


# ---- the digit reader ----


@pytest.fixture(scope="module")
def classifier():
    return train_digit_classifier()


def test_classifier_reads_real_held_out_digits(classifier):
    assert classifier.held_out_accuracy >= 0.97
    x, y = load_digits("test")
    assert fidelity(classifier, x, y) == pytest.approx(classifier.held_out_accuracy)
    assert fidelity(classifier, x, (y + 1) % 10) < 0.05


def test_classifier_rejects_the_wrong_resolution(classifier):
    with pytest.raises(ValueError, match="images"):
        classifier.predict(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="labels"):
        fidelity(classifier, torch.zeros(2, 1, 16, 16), [1])


def test_diversity_is_relative_to_real_digits():
    x, y = load_digits("test")
    assert within_class_diversity(x, y) == pytest.approx(1.0)
    copies = x[:1].repeat(10, 1, 1, 1)
    assert within_class_diversity(copies, torch.zeros(10, dtype=torch.long)) == pytest.approx(0.0, abs=1e-6)
    noise = torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert within_class_diversity(noise, torch.arange(4).repeat(10), space="pixels") > 1.5
    # in shape terms all static looks alike (a grey square), far less varied than real digits
    assert within_class_diversity(noise, torch.arange(4).repeat(10)) < 0.7
    a, b = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    assert mean_pairwise_distance(torch.cat([a, b])) == pytest.approx(2.0)  # sqrt(4 pixels * 1^2)
    with pytest.raises(ValueError, match="labels"):
        within_class_diversity(x, y[:3])
    assert np.isfinite(within_class_diversity(x[:20], y[:20]))
    for space in DIVERSITY_SPACES:
        assert within_class_diversity(x, y, space=space) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="space"):
        within_class_diversity(x, y, space="inception")


def test_digit_features_are_the_main_directions_of_real_digits():
    x, y = load_digits("train")
    features = digit_features(x)
    assert features.shape == (len(x), FEATURE_DIMS)
    # centred on the real mean, and the first direction carries the most variance, in decreasing order
    assert features.mean(0).abs().max() < 1e-4
    variances = features.var(0)
    assert (variances[:-1] >= variances[1:] - 1e-5).all()
    # the 20 directions keep most of what makes real digits differ: well over half of the variance
    flat = x.reshape(len(x), -1)
    assert variances.sum() > 0.6 * (flat - flat.mean(0)).var(0).sum()
    with pytest.raises(ValueError, match="images"):
        digit_features(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="dims"):
        digit_features(x[:2], dims=0)


def test_feature_diversity_ignores_speckle_that_pixel_diversity_counts():
    # Ten copies of one real digit, each with its own pixel noise: no new shapes, only speckle.
    x, _ = load_digits("test")
    g = torch.Generator().manual_seed(0)
    speckled = x[:1].repeat(10, 1, 1, 1) + 0.3 * torch.randn(10, 1, 16, 16, generator=g)
    labels = torch.zeros(10, dtype=torch.long)
    pixels = within_class_diversity(speckled, labels, space="pixels")
    features = within_class_diversity(speckled, labels)
    assert pixels > 0.5                      # in pixels the speckle looks like half the variety of real digits
    assert features < 0.5 * pixels           # in feature space most of it is gone
    # a fainter (or bolder) drawing of the same shapes is not new variety: the mean digit plus half of
    # each real digit's difference from it keeps the feature diversity and halves the pixel one
    x_all, y_all = load_digits("test")
    mean = load_digits("train")[0].mean(0, keepdim=True)  # the average real digit, the features' origin
    faint = mean + 0.5 * (x_all - mean)
    assert within_class_diversity(faint, y_all) == pytest.approx(1.0, abs=1e-4)
    assert within_class_diversity(faint, y_all, space="pixels") < 0.6
    # and genuinely different digits still count: a class of real 3s and 8s is more varied than real 3s
    mixed = torch.cat([x_all[y_all == 3], x_all[y_all == 8]])
    assert within_class_diversity(mixed, torch.zeros(len(mixed), dtype=torch.long)) > \
        within_class_diversity(x_all[y_all == 3], torch.zeros(int((y_all == 3).sum()), dtype=torch.long))
