"""The shipped photograph and the tensor <-> PIL conversions (diffusion_lessons.data, lesson 01)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lessons.data import from_pil, load_photo, to_pil


@pytest.mark.parametrize("size", [8, 64, 100])
def test_photo_shape_dtype_and_range(size):
    x0 = load_photo(size)
    assert x0.shape == (3, size, size) and x0.dtype == torch.float32
    assert x0.min() >= -1 and x0.max() <= 1
    assert x0.min() < -0.5 and x0.max() > 0.5  # a real photo uses most of the range
    assert x0.std() > 0.2


def test_photo_is_a_colour_photo_and_reproducible():
    x0 = load_photo(32)
    assert torch.equal(x0, load_photo(32))
    assert (x0[0] - x0[2]).abs().mean() > 0.05  # channels differ: not a grey image


@pytest.mark.parametrize("size", [4, 0, 32.0, "64"])
def test_photo_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        load_photo(size)


def test_from_pil_to_pil_round_trip_is_exact_for_uint8_images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    x = from_pil(rgb)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(np.asarray(to_pil(x)), np.asarray(rgb))
    grey = Image.fromarray(rng.integers(0, 256, (4, 6), dtype=np.uint8))
    assert from_pil(grey).shape == (1, 4, 6)
    back = to_pil(from_pil(grey))
    assert back.mode == "L" and np.array_equal(np.asarray(back), np.asarray(grey))


def test_to_pil_from_pil_round_trip_within_one_grey_level():
    x = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    back = from_pil(to_pil(x))
    assert (back - x).abs().max() <= 1 / 127.5 / 2 + 1e-6  # rounding to the nearest of 256 levels


def test_to_pil_clips_and_maps_the_ends():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).reshape(1, 1, 5)
    assert np.asarray(to_pil(x)).tolist() == [[0, 0, 128, 255, 255]]  # 127.5 rounds to even: 128


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 4), (1, 3, 4, 4)])
def test_to_pil_bad_shape(shape):
    with pytest.raises(ValueError, match="x must have shape"):
        to_pil(torch.zeros(shape))
