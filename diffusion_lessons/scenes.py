"""The scenes world of lesson 15: one to three shapes on a background, captions that bind, relate and count,
and a reader that checks them.

The world is fixed: 64 x 64 RGB, a white or black background, one to three shapes (circle, square, triangle in
red, green, blue or yellow; drawn as data.shape_coverage draws them) of radius 0.09-0.14 of the side, apart
from each other and from the border. Captions, by kind:
- single:   "a red circle on a white background";
- binding:  "a red circle and a blue square on a white background" (two shapes, both attributes different);
- relation: "a red circle left of a blue square on a black background" (left of, right of, above, below; held
  by the centres, at least MIN_SEPARATION of the side apart along that axis);
- counting: "two red circles on a white background", "three ...".

The reader (`read_scenes`) finds the shapes as connected components of the pixels that differ from the
background (scipy.ndimage.label): color by the nearest palette color of their mean, shape by the best of the
three shapes drawn with the component's area and centroid (the lesson-07 reader's template fit, per component),
position by the fitted shape's centre. `check` scores a
picture against its scene: everything asked present and nothing else, the relation held, the count right, and
for two-shape captions whether the colors came out swapped between the shapes (the classic binding failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import _checks, stats
from .data import BACKGROUNDS, COLORS, SHAPES, shape_coverage

SIZE = 64
RADIUS = (0.09, 0.14)          # of the side
GAP = 0.04                     # least gap between two shapes' enclosing circles, of the side
BORDER = 0.03                  # least gap between a shape and the border, of the side
MIN_SEPARATION = 0.1           # a relation's centres are at least this far apart along its axis, of the side
KINDS = ("single", "binding", "relation", "counting")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {2: "two", 3: "three"}
MIN_AREA = 20                  # pixels: smaller components are specks, not shapes


@dataclass(frozen=True)
class Thing:
    """One shape of a scene: its name, color and geometry in pixels (centre cx, cy; r, half its box's side)."""

    shape: str
    color: str
    cx: float = 0.0
    cy: float = 0.0
    r: float = 0.0


@dataclass
class Scene:
    """What a picture shows and says: kind, background, things, the relation (relation kind only), caption."""

    kind: str
    background: str
    things: list[Thing]
    relation: str | None = None
    caption: str = field(default="")


@dataclass
class ScenesData:
    """Rendered scenes: images (N, 3, 64, 64) in [-1, 1], their scenes and captions."""

    images: torch.Tensor
    scenes: list[Scene]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.scenes)


def _check_thing(shape, color) -> None:
    _checks.choice(shape, "shape", SHAPES)
    _checks.choice(color, "color", tuple(COLORS))


def caption(kind: str, things: list[Thing], background: str, relation: str | None = None) -> str:
    """The world's caption for a scene (see the module docstring for the four kinds)."""
    kind = _checks.choice(kind, "kind", KINDS)
    background = _checks.choice(background, "background", tuple(BACKGROUNDS))
    if not isinstance(things, (list, tuple)) or not all(isinstance(t, Thing) for t in things):
        raise ValueError(f"things must be a list of scenes.Thing, got {type(things).__name__}")
    for t in things:
        _check_thing(t.shape, t.color)
    wanted = {"single": (1,), "binding": (2,), "relation": (2,), "counting": (2, 3)}[kind]
    if len(things) not in wanted:
        raise ValueError(f"things must hold {' or '.join(map(str, wanted))} shapes for a {kind} caption, "
                         f"got {len(things)}")
    tail = f"on a {background} background"
    a = things[0]
    if kind == "single":
        return f"a {a.color} {a.shape} {tail}"
    if kind == "counting":
        if any((t.shape, t.color) != (a.shape, a.color) for t in things):
            raise ValueError("things must all be the same shape and color for a counting caption")
        return f"{NUMBERS[len(things)]} {a.color} {a.shape}s {tail}"
    b = things[1]
    if a.shape == b.shape or a.color == b.color:
        raise ValueError(f"things must differ in shape and in color for a {kind} caption, got {a} and {b}")
    if kind == "binding":
        return f"a {a.color} {a.shape} and a {b.color} {b.shape} {tail}"
    relation = _checks.choice(relation, "relation", RELATIONS)
    return f"a {a.color} {a.shape} {relation} a {b.color} {b.shape} {tail}"


def caption_words() -> list[str]:
    """Every word of the world's captions, in a fixed order (the scenes tokenizer's vocabulary)."""
    phrases = ["a and on background", *NUMBERS.values(), *COLORS, *SHAPES, *(s + "s" for s in SHAPES), *RELATIONS,
               *BACKGROUNDS]
    words: list[str] = []
    for phrase in phrases:
        words += [w for w in phrase.split() if w not in words]
    return words


OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def reworded(scene: Scene) -> Scene:
    """The same picture described the other way round: a binding caption with its two shapes in the other
    order ("a blue square and a red circle"), a relation caption from the other shape's side ("a blue square
    right of a red circle"). Single and counting captions have no other order."""
    if not isinstance(scene, Scene):
        raise ValueError(f"scene must be a scenes.Scene, got {type(scene).__name__}")
    if scene.kind not in ("binding", "relation"):
        raise ValueError(f"scene must be a binding or relation scene to reword, got kind {scene.kind!r}")
    things = list(reversed(scene.things))
    relation = OPPOSITE[scene.relation] if scene.kind == "relation" else None
    return Scene(scene.kind, scene.background, things, relation, caption(scene.kind, things, scene.background,
                                                                         relation))


def _holds(relation: str, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
    """Does 'a <relation> b' hold for centres a, b (x right, y down), at least margin apart on the axis?"""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[relation] >= margin


def _place(n: int, generator: torch.Generator, relation: str | None = None, tries: int = 200) -> list[tuple]:
    """n (cx, cy, r) in pixels that keep the gaps (and the relation between the first two, if given)."""
    for _ in range(tries):
        u = torch.rand(n, 3, generator=generator).tolist()
        placed = []
        for ur, ux, uy in u:
            r = (RADIUS[0] + ur * (RADIUS[1] - RADIUS[0])) * SIZE
            lo, hi = r + BORDER * SIZE, SIZE - r - BORDER * SIZE
            placed.append((lo + ux * (hi - lo), lo + uy * (hi - lo), r))
        apart = all(np.hypot(p[0] - q[0], p[1] - q[1]) >= np.sqrt(2) * (p[2] + q[2]) + GAP * SIZE
                    for i, p in enumerate(placed) for q in placed[i + 1:])
        if apart and (relation is None or _holds(relation, placed[0][:2], placed[1][:2], MIN_SEPARATION * SIZE)):
            return placed
    raise RuntimeError(f"could not place {n} shapes in {tries} tries")   # not reached with the world's sizes


def random_scene(kind: str, generator: torch.Generator | None = None) -> Scene:
    """One scene of `kind` with its attributes, geometry and caption drawn by the generator."""
    kind = _checks.choice(kind, "kind", KINDS)
    generator = _checks.generator(generator)
    pick = lambda seq: seq[int(torch.randint(0, len(seq), (1,), generator=generator))]  # noqa: E731
    background = pick(tuple(BACKGROUNDS))
    relation = pick(RELATIONS) if kind == "relation" else None
    if kind == "single":
        kinds = [(pick(SHAPES), pick(tuple(COLORS)))]
    elif kind == "counting":
        kinds = [(pick(SHAPES), pick(tuple(COLORS)))] * pick((2, 3))
    else:
        shapes = torch.randperm(len(SHAPES), generator=generator)[:2].tolist()
        colors = torch.randperm(len(COLORS), generator=generator)[:2].tolist()
        kinds = [(SHAPES[s], list(COLORS)[c]) for s, c in zip(shapes, colors)]
    things = [Thing(s, c, cx, cy, r) for (s, c), (cx, cy, r) in zip(kinds, _place(len(kinds), generator, relation))]
    return Scene(kind, background, things, relation, caption(kind, things, background, relation))


def render(scenes: Scene | list[Scene]) -> torch.Tensor:
    """Pictures (B, 3, 64, 64) in [-1, 1] of the scenes: the background, then each shape blended in by its
    anti-aliased coverage; deterministic."""
    scenes = [scenes] if isinstance(scenes, Scene) else scenes
    if not isinstance(scenes, (list, tuple)) or not scenes or not all(isinstance(s, Scene) for s in scenes):
        raise ValueError("scenes must be a Scene or a non-empty list of them (scenes.random_scene)")
    out = []
    for scene in scenes:
        _checks.choice(scene.background, "background", tuple(BACKGROUNDS))
        image = torch.tensor(BACKGROUNDS[scene.background])[:, None, None].expand(3, SIZE, SIZE).clone()
        for t in scene.things:
            _check_thing(t.shape, t.color)
            alpha = shape_coverage(torch.tensor([SHAPES.index(t.shape)]), torch.tensor([[t.cx, t.cy, t.r]]), SIZE)
            image += alpha * (torch.tensor(COLORS[t.color])[:, None, None] - image)
        out.append(image)
    return torch.stack(out) * 2 - 1


def make_scenes(n: int, kinds: tuple[str, ...] = KINDS, generator: torch.Generator | None = None) -> ScenesData:
    """n scenes, their kind drawn uniformly from `kinds` by the generator, rendered."""
    n = _checks.integer(n, "n", 1)
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
        raise ValueError(f"kinds must be a non-empty tuple of {KINDS}, got {kinds!r}")
    kinds = [_checks.choice(k, "kinds", KINDS) for k in kinds]
    generator = _checks.generator(generator)
    scenes = [random_scene(kinds[int(torch.randint(0, len(kinds), (1,), generator=generator))], generator)
              for _ in range(n)]
    return ScenesData(render(scenes), scenes, [s.caption for s in scenes])


# --- the reader ---------------------------------------------------------------------------------------------

def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point or images.ndim != 4 \
            or images.shape[1] != 3:
        raise ValueError(f"images must be a float tensor (B, 3, H, W) in [-1, 1], got "
                         f"{tuple(getattr(images, 'shape', ()))}")
    return (images.detach().float().cpu().clamp(-1, 1) + 1) / 2


def read_scenes(images: torch.Tensor) -> list[dict]:
    """What each picture shows: {'background', 'things': [{'shape', 'color', 'cx', 'cy', 'area'}, ...]}."""
    from scipy import ndimage

    from .evaluation import _shape_errors

    rgb = _check_images(images)
    backdrops = torch.tensor(list(BACKGROUNDS.values()))
    palette = torch.tensor(list(COLORS.values()))
    found = []
    for x in rgb:
        corners = torch.stack([x[:, 0, 0], x[:, 0, -1], x[:, -1, 0], x[:, -1, -1]]).mean(0)
        bg = backdrops[int(((backdrops - corners) ** 2).sum(1).argmin())]
        ink = ((x - bg[:, None, None]) ** 2).sum(0).sqrt() > 0.5
        labels, count = ndimage.label(ink.numpy())
        parts, colors, alphas = [], [], []
        for i in range(1, count + 1):
            part = torch.from_numpy(labels == i)
            if int(part.sum()) < MIN_AREA:
                continue
            mean = x[:, part].mean(1)
            d = mean - bg
            coverage = ((x - bg[:, None, None]) * d[:, None, None]).sum(0) / (d * d).sum().clamp_min(1e-6)
            near = torch.from_numpy(ndimage.binary_dilation(part.numpy(), iterations=2))
            parts.append(part)
            colors.append(list(COLORS)[int(((palette - mean) ** 2).sum(1).argmin())])
            alphas.append(coverage.clamp(0, 1) * near)
        things = []
        if parts:   # each component's coverage fitted by the three shapes, as the lesson-07 reader fits one
            errors, geometry = _shape_errors(torch.stack(alphas))
            best = errors.argmin(1)
            for part, color, k, geo in zip(parts, colors, best.tolist(), geometry):
                cx, cy, r = geo[k].tolist()
                things.append(dict(shape=SHAPES[k], color=color, cx=cx, cy=cy, area=int(part.sum())))
        found.append(dict(background=list(BACKGROUNDS)[int(((backdrops - bg) ** 2).sum(1).argmin())],
                          things=things))
    return found


def check(read: dict, scene: Scene) -> dict[str, bool]:
    """Score one reading against its scene: 'background'; 'objects' (exactly the asked shapes in the asked
    colors, nothing else); 'relation' (objects right and the relation held by the centres; relation kind);
    'count' (exactly the asked number of the asked shape and color, nothing else; counting kind); 'swapped'
    (two-shape kinds: the two shapes came out with each other's colors); 'right': everything the kind asks."""
    if not isinstance(scene, Scene) or not isinstance(read, dict) or "things" not in read:
        raise ValueError("read must be one reading of read_scenes and scene a Scene")
    got = sorted((t["shape"], t["color"]) for t in read["things"])
    asked = sorted((t.shape, t.color) for t in scene.things)
    out = dict(background=read["background"] == scene.background, objects=got == asked)
    right = out["background"] and out["objects"]
    if len(scene.things) == 2 and scene.kind != "counting":
        a, b = scene.things
        out["swapped"] = got == sorted([(a.shape, b.color), (b.shape, a.color)])
    if scene.kind == "relation":
        where = {(t["shape"], t["color"]): (t["cx"], t["cy"]) for t in read["things"]}
        a, b = scene.things
        out["relation"] = out["objects"] and _holds(scene.relation, where[(a.shape, a.color)],
                                                    where[(b.shape, b.color)], 0.0)
        right = right and out["relation"]
    if scene.kind == "counting":
        out["count"] = out["objects"]
    out["right"] = right
    return out


MISTAKES = ("none", "colors swapped", "shape copied", "color copied", "shape missing", "extra shape", "other")


def object_mistake(read: dict, scene: Scene) -> str:
    """What went wrong with the objects of a two-shape scene (binding or relation; the background and the
    relation are not looked at), one of MISTAKES: 'none' (exactly the asked objects); 'colors swapped' (both
    shapes, each in the other's color); 'shape copied' (two shapes in the two asked colors, but both the same
    asked shape: one object's shape leaked into the other); 'color copied' (the two asked shapes, both in the same
    asked color); 'shape missing' (fewer than two shapes: one was neglected); 'extra shape' (more than two);
    'other' (two shapes wrong in some other way)."""
    if not isinstance(scene, Scene) or not isinstance(read, dict) or "things" not in read:
        raise ValueError("read must be one reading of read_scenes and scene a Scene")
    if len(scene.things) != 2 or scene.kind not in ("binding", "relation"):
        raise ValueError(f"scene must be a binding or relation scene (two shapes), got a {scene.kind} scene "
                         f"with {len(scene.things)} shapes")
    got = sorted((t["shape"], t["color"]) for t in read["things"])
    a, b = scene.things
    if got == sorted([(a.shape, a.color), (b.shape, b.color)]):
        return "none"
    if len(got) != 2:
        return "shape missing" if len(got) < 2 else "extra shape"
    if got == sorted([(a.shape, b.color), (b.shape, a.color)]):
        return "colors swapped"
    (s1, c1), (s2, c2) = got
    if sorted([c1, c2]) == sorted([a.color, b.color]) and s1 == s2 and s1 in (a.shape, b.shape):
        return "shape copied"
    if sorted([s1, s2]) == sorted([a.shape, b.shape]) and c1 == c2 and c1 in (a.color, b.color):
        return "color copied"
    return "other"


def score(images: torch.Tensor, scenes: list[Scene]) -> dict[str, dict]:
    """Read the pictures and score them against their scenes, per kind: the share right (Wilson 95% interval)
    and, for the two-shape kinds, the share with the colors swapped."""
    if not isinstance(scenes, (list, tuple)) or len(scenes) != len(images):
        raise ValueError(f"scenes must hold one Scene per image ({len(images)}), got "
                         f"{len(scenes) if isinstance(scenes, (list, tuple)) else type(scenes).__name__}")
    checks = [check(r, s) for r, s in zip(read_scenes(images), scenes)]
    out = {}
    for kind in KINDS:
        rows = [c for c, s in zip(checks, scenes) if s.kind == kind]
        if rows:
            out[kind] = dict(right=stats.proportion([c["right"] for c in rows]))
            if "swapped" in rows[0]:
                out[kind]["swapped"] = stats.proportion([c["swapped"] for c in rows])
    return out
