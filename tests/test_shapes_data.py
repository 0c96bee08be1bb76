"""Captioned shapes (lessons 06-07): determinism, geometry, captions that agree with the pixels,
and the shape reader that prompt adherence relies on."""

import math

import pytest
import torch

from diffusion_lessons import data, evaluation


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def shapes() -> data.ShapesData:
    return data.make_shapes(240, generator=gen(7))


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (data.make_shapes(40, generator=gen(s)) for s in (1, 1, 2))
    assert torch.equal(a.images, b.images) and a.captions == b.captions and a.attributes == b.attributes
    assert not torch.equal(a.images, c.images)


def test_any_image_size_and_range():
    for size in (16, 32, 48):
        x = data.make_shapes(5, image_size=size, generator=gen(0)).images
        assert x.shape == (5, 3, size, size) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1


def test_every_value_of_every_attribute_occurs(shapes):
    for key, values in (("shape", data.SHAPES), ("color", data.COLORS), ("background", data.BACKGROUNDS),
                        ("size", data.SIZES), ("position", data.POSITIONS)):
        assert {a[key] for a in shapes.attributes} == set(values), key


def test_captions_name_exactly_the_attributes(shapes):
    styles = set()
    for caption, attrs in zip(shapes.captions, shapes.attributes):
        named = data.parse_caption(caption)
        for key, value in named.items():
            assert value is None or value == attrs[key], (caption, attrs)
        assert named["shape"] and named["color"] and named["background"]
        styles.add((named["size"] is not None, named["position"] is not None))
    assert styles == {(False, False), (True, False), (False, True), (True, True)}


def test_caption_format():
    assert data.shape_caption("circle", "red", "white") == "a red circle on a white background"
    assert (data.shape_caption("square", "blue", "black", "small", "at the top left")
            == "a small blue square at the top left on a black background")
    assert data.parse_caption("a small blue square at the top left on a black background") == dict(
        shape="square", color="blue", background="black", size="small", position="at the top left")
    prompts = data.shape_prompts()
    assert len(prompts) == len(set(prompts)) == 24


def test_pixels_agree_with_attributes(shapes):
    for i in range(40):
        a, (cx, cy, r) = shapes.attributes[i], shapes.geometry[i].tolist()
        img = (shapes.images[i] + 1) / 2
        assert torch.allclose(img[:, 0, 0], torch.tensor(data.BACKGROUNDS[a["background"]]))
        inner_y = cy + r / 3 if a["shape"] == "triangle" else cy  # the triangle's centroid is inside it
        assert torch.allclose(img[:, int(inner_y), int(cx)], torch.tensor(data.COLORS[a["color"]])), a
        lo, hi = r + data.MARGIN * 32, 32 - r - data.MARGIN * 32
        assert lo - 1e-4 <= cx <= hi + 1e-4 and lo - 1e-4 <= cy <= hi + 1e-4
        band = data.SIZES[a["size"]]
        assert band[0] * 32 - 1e-4 <= r <= band[1] * 32 + 1e-4


def test_coverage_area_matches_geometry():
    geometry = torch.tensor([[32.0, 32.0, 20.0]] * 3)
    area = data.shape_coverage(torch.arange(3), geometry, 64).sum(dim=(1, 2))
    expected = torch.tensor([math.pi * 400, 4 * 400, 2 * 400])
    assert torch.allclose(area, expected, rtol=0.01)


def test_positions_follow_their_names(shapes):
    for a, (cx, cy, _) in zip(shapes.attributes, shapes.geometry.tolist()):
        if "left" in a["position"]:
            assert cx < 16
        if "right" in a["position"]:
            assert cx > 16
        if "top" in a["position"]:
            assert cy < 16
        if "bottom" in a["position"]:
            assert cy > 16


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="n must"):
        data.make_shapes(0)
    with pytest.raises(ValueError, match="image_size"):
        data.make_shapes(2, image_size=8)
    with pytest.raises(ValueError, match="caption_style"):
        data.make_shapes(2, caption_style="poem")
    with pytest.raises(ValueError, match="color must be one of"):
        data.shape_caption("circle", "purple", "white")


def test_reader_reads_clean_images(shapes):
    acc = evaluation.reader_accuracy(shapes)
    assert acc["background"] == acc["color"] == acc["shape"] == acc["size"] == 1.0
    assert acc["position"] >= 0.97  # centres within a fraction of a pixel of a third's edge can flip


def test_reader_survives_noise_and_blur(shapes):
    noisy = shapes.images[:120] + 0.15 * torch.randn(shapes.images[:120].shape, generator=gen(0))
    blurred = torch.nn.functional.avg_pool2d(shapes.images[:120], 3, stride=1, padding=1, count_include_pad=False)
    for images in (noisy, blurred):
        acc = evaluation.read_accuracy(evaluation.read_shapes(images), shapes.attributes[:120])
        assert acc["background"] == acc["color"] == 1.0 and acc["shape"] >= 0.95


def test_reader_on_an_empty_canvas():
    (read,) = evaluation.read_shapes(torch.ones(1, 3, 32, 32))
    assert read == dict(background="white", color=None, shape=None, size=None, position=None)


def test_prompt_adherence_from_images(shapes):
    x, captions = shapes.images[:48], shapes.captions[:48]
    right = evaluation.prompt_adherence(x, captions)
    assert right["all"] == 1.0 and right["n"] == 48
    wrong = evaluation.prompt_adherence(x, captions[1:] + captions[:1])
    assert wrong["all"] < 0.3
    with pytest.raises(ValueError, match="one image per prompt"):
        evaluation.prompt_adherence(x, captions[:10])
