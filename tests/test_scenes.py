"""The scenes world of lesson 15: captions, placement rules, the renderer and the reader's verdicts."""

import itertools

import pytest
import torch

from diffusion_lessons import scenes
from diffusion_lessons.scenes import Scene, Thing


@pytest.fixture(scope="module")
def data():
    return scenes.make_scenes(240, generator=torch.Generator().manual_seed(0))


def test_captions_follow_the_world():
    a, b = Thing("circle", "red"), Thing("square", "blue")
    assert scenes.caption("single", [a], "white") == "a red circle on a white background"
    assert scenes.caption("binding", [a, b], "white") == "a red circle and a blue square on a white background"
    assert scenes.caption("relation", [a, b], "black", "left of") == \
        "a red circle left of a blue square on a black background"
    assert scenes.caption("counting", [a, a, a], "white") == "three red circles on a white background"


def test_scenes_keep_the_worlds_rules(data):
    side = scenes.SIZE
    kinds = {s.kind for s in data.scenes}
    assert kinds == set(scenes.KINDS)
    for s in data.scenes:
        for t in s.things:
            assert scenes.RADIUS[0] * side <= t.r <= scenes.RADIUS[1] * side
            assert t.cx - t.r >= scenes.BORDER * side - 1e-6 and t.cx + t.r <= side - scenes.BORDER * side + 1e-6
            assert t.cy - t.r >= scenes.BORDER * side - 1e-6 and t.cy + t.r <= side - scenes.BORDER * side + 1e-6
        for p, q in itertools.combinations(s.things, 2):
            assert ((p.cx - q.cx) ** 2 + (p.cy - q.cy) ** 2) ** 0.5 >= 2 ** 0.5 * (p.r + q.r)   # apart
        if s.kind == "relation":
            a, b = s.things
            along = {"left of": b.cx - a.cx, "right of": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}
            assert along[s.relation] >= scenes.MIN_SEPARATION * side
        if s.kind in ("binding", "relation"):
            assert s.things[0].shape != s.things[1].shape and s.things[0].color != s.things[1].color
        assert s.caption == scenes.caption(s.kind, s.things, s.background, s.relation)


def test_make_scenes_is_seeded_and_rendering_deterministic(data):
    again = scenes.make_scenes(240, generator=torch.Generator().manual_seed(0))
    assert again.captions == data.captions and torch.equal(again.images, data.images)
    assert data.images.shape == (240, 3, 64, 64) and data.images.min() >= -1 and data.images.max() <= 1
    assert torch.equal(scenes.render(data.scenes[3])[0], data.images[3])


def test_the_reader_reads_the_renderer_perfectly(data):
    result = scenes.score(data.images, data.scenes)
    assert set(result) == set(scenes.KINDS)
    for kind, row in result.items():
        assert row["right"].value == 1.0, kind
        if "swapped" in row:
            assert row["swapped"].value == 0.0


def _swap_colors(scene):
    a, b = scene.things
    return Scene(scene.kind, scene.background, [Thing(a.shape, b.color, a.cx, a.cy, a.r),
                                                 Thing(b.shape, a.color, b.cx, b.cy, b.r)], scene.relation)


def test_the_reader_reads_wrong_pictures_as_wrong(data):
    two = [s for s in data.scenes if s.kind in ("binding", "relation")][:20]
    swapped = scenes.render([_swap_colors(s) for s in two])
    checks = [scenes.check(r, s) for r, s in zip(scenes.read_scenes(swapped), two)]
    assert not any(c["right"] for c in checks) and all(c["swapped"] for c in checks)
    relations = [s for s in data.scenes if s.kind == "relation"][:20]
    mirrored = [Scene("relation", s.background, s.things, s.relation) for s in relations]
    flipped = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    for s in mirrored:
        s.relation = flipped[s.relation]
    checks = [scenes.check(r, s) for r, s in zip(scenes.read_scenes(scenes.render(relations)), mirrored)]
    assert not any(c["relation"] for c in checks) and all(c["objects"] for c in checks)
    counting = [s for s in data.scenes if s.kind == "counting"][:20]
    fewer = [Scene("counting", s.background, s.things[:-1]) for s in counting]
    checks = [scenes.check(r, s) for r, s in zip(scenes.read_scenes(scenes.render(fewer)), counting)]
    assert not any(c["count"] for c in checks)
    blank = -torch.ones(2, 3, 64, 64)
    assert [scenes.check(r, s)["right"] for r, s in zip(scenes.read_scenes(blank), data.scenes[:2])] == [False, False]


def _at(thing):
    return thing.cx, thing.cy, thing.r


def test_object_mistakes_are_told_apart(data):
    """Each way of drawing a two-shape scene wrong, rendered and read back, gets its own label; the right
    picture gets 'none' (whatever the relation)."""
    seen = set()

    def mistakes(scenes_drawn, asked):
        found = [scenes.object_mistake(r, s) for r, s in zip(scenes.read_scenes(scenes.render(scenes_drawn)), asked)]
        seen.update(found)
        return found

    two = [s for s in data.scenes if s.kind in ("binding", "relation")][:12]
    assert set(mistakes(two, two)) == {"none"}
    assert set(mistakes([_swap_colors(s) for s in two], two)) == {"colors swapped"}

    def redrawn(s, things):
        return Scene(s.kind, s.background, things, s.relation)

    def copy_shape(s):
        a, b = s.things
        return redrawn(s, [a, Thing(a.shape, b.color, b.cx, b.cy, b.r)])

    def copy_color(s):
        a, b = s.things
        return redrawn(s, [Thing(a.shape, b.color, a.cx, a.cy, a.r), b])

    def other(s):
        a, b = s.things
        left = next(c for c in ("red", "green", "blue", "yellow") if c not in (a.color, b.color))
        return redrawn(s, [Thing(a.shape, left, a.cx, a.cy, a.r), b])

    assert set(mistakes([copy_shape(s) for s in two], two)) == {"shape copied"}
    assert set(mistakes([copy_color(s) for s in two], two)) == {"color copied"}
    assert set(mistakes([redrawn(s, s.things[:1]) for s in two], two)) == {"shape missing"}
    assert set(mistakes([other(s) for s in two], two)) == {"other"}
    threes = [s for s in data.scenes if s.kind == "counting" and len(s.things) == 3][:6]   # three places apart
    asked = [Scene("binding", s.background, [Thing("circle", "red", *_at(s.things[0])),
                                              Thing("square", "blue", *_at(s.things[1]))]) for s in threes]
    more = [Scene("binding", s.background, a.things + [Thing("triangle", "green", *_at(s.things[2]))])
            for s, a in zip(threes, asked)]
    assert len(threes) >= 3 and set(mistakes(more, asked)) == {"extra shape"}
    assert seen == set(scenes.MISTAKES) and len(seen) == len(scenes.MISTAKES)  # each label shown here, once
    with pytest.raises(ValueError, match="scene"):
        scenes.object_mistake({"things": []}, threes[0])


def test_the_vocabulary_covers_every_caption_and_nothing_else(data):
    words = scenes.caption_words()
    used = {w for c in data.captions for w in c.split()}
    assert used <= set(words) and len(words) == len(set(words))
    assert set(words) - used <= {"two", "three", "circles", "squares", "triangles"} | set(" ".join(
        scenes.RELATIONS).split())   # the rest appear in captions of kinds the sample may miss


def test_reworded_captions_describe_the_same_picture(data):
    """'a red circle left of a blue square' and 'a blue square right of a red circle' are the same picture: the
    reader scores the picture right against both; binding in the other order likewise."""
    chosen = [s for s in data.scenes if s.kind in ("binding", "relation")][:30]
    readings = scenes.read_scenes(scenes.render(chosen))
    for reading, s in zip(readings, chosen):
        other = scenes.reworded(s)
        assert other.caption != s.caption and other.things == s.things[::-1]
        assert scenes.check(reading, other)["right"]
        assert scenes.reworded(other).caption == s.caption
    relation = next(s for s in chosen if s.kind == "relation")
    assert scenes.reworded(relation).relation == scenes.OPPOSITE[relation.relation]


@pytest.mark.parametrize("call, arg", [
    (lambda: scenes.caption("single", [Thing("circle", "purple")], "white"), "color"),
    (lambda: scenes.caption("single", [Thing("star", "red")], "white"), "shape"),
    (lambda: scenes.caption("counting", [Thing("circle", "red")] * 4, "white"), "things"),
    (lambda: scenes.caption("binding", [Thing("circle", "red"), Thing("circle", "blue")], "white"), "things"),
    (lambda: scenes.caption("relation", [Thing("circle", "red"), Thing("square", "blue")], "white", "near"),
     "relation"),
    (lambda: scenes.caption("single", [Thing("circle", "red")], "grey"), "background"),
    (lambda: scenes.make_scenes(2, kinds=("negation",)), "kinds"),
    (lambda: scenes.read_scenes(torch.zeros(2, 1, 64, 64)), "images"),
])
def test_bad_inputs_name_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
