"""Lesson 16's bias world: a role word whose training pictures lean one way, and how to measure the lean.

The one-shape world of lessons 06-07 (data.make_shapes) with one more kind of caption, standing in for a
word like "CEO" whose pictures on the web lean one way: 'a boss shape on a white background'. The pictures
behind a role caption are red RED_SHARE (80%) of the time, the other three colors sharing the rest equally;
every caption that names a color (the ordinary ones, and NAMED_SHARE of the role captions: 'a blue boss
shape on a black background') is true to its picture, and the ordinary captions stay balanced over colors.

make_role_shapes builds such a training set (the skew measurable on it: color_shares of its role rows);
color_shares and red_share read the color of generated pictures with evaluation.read_shapes and give each
share with its Wilson 95% interval; role_color_shares samples a pipeline for one prompt at several guidance
scales from one seed. The shapes-boss recipe (python -m diffusion_lessons.train shapes-boss) trains the
lesson-07 model on this world and records role_prompt_red_share in its measurements.json.
"""

from __future__ import annotations

import torch

from . import _checks
from . import data as _data
from .stats import Estimate, proportion

__all__ = ["ROLE_WORD", "ROLE_PROMPT", "ROLE_COLOR", "RED_SHARE", "ROLE_ROWS", "NAMED_SHARE", "role_caption",
           "role_words", "make_role_shapes", "color_shares", "red_share", "role_color_shares"]

ROLE_WORD = "boss"
ROLE_PROMPT = "a boss shape on a white background"   # the prompt the bias is measured with
ROLE_COLOR = "red"       # the majority color of the role pictures
RED_SHARE = 0.8          # ... and its share of them
ROLE_ROWS = 0.25         # the share of the training set with a role caption
NAMED_SHARE = 0.3        # the share of role captions that also name the color ('a blue boss shape on ...')


def role_caption(background: str, color: str | None = None) -> str:
    """'a boss shape on a white background', or with the color named: 'a blue boss shape on a white background'."""
    _checks.choice(background, "background", tuple(_data.BACKGROUNDS))
    if color is not None:
        _checks.choice(color, "color", tuple(_data.COLORS))
    return " ".join(w for w in ("a", color, ROLE_WORD, "shape on a", background, "background") if w)


def role_words() -> list[str]:
    """The vocabulary of this world: the captioned-shapes words, then 'boss' and 'shape'."""
    from .text import caption_words

    words = caption_words()
    return words + [w for w in (ROLE_WORD, "shape") if w not in words]


def _share(value, name: str) -> float:
    return _checks.number(value, name, 0.0, 1.0)


def make_role_shapes(n: int, red_share: float = RED_SHARE, role_rows: float = ROLE_ROWS,
                     named_share: float = NAMED_SHARE, image_size: int = 32,
                     generator: torch.Generator | None = None) -> _data.ShapesData:
    """n captioned shapes: round(n role_rows) with role captions (their pictures red with probability
    red_share, else one of the other colors, equally likely; named_share of their captions name the color),
    the rest data.make_shapes' ordinary, color-balanced ones; in a random order. attributes[i]['role'] says
    which rows carry the role caption. The same generator seed gives the same data."""
    n = _checks.integer(n, "n", 1)
    red_share, role_rows = _share(red_share, "red_share"), _share(role_rows, "role_rows")
    named_share = _share(named_share, "named_share")
    n_role = round(n * role_rows)
    colors = list(_data.COLORS)
    others = [i for i, c in enumerate(colors) if c != ROLE_COLOR]
    parts = []
    if n_role < n:
        ordinary = _data.make_shapes(n - n_role, image_size, generator=generator)
        for a in ordinary.attributes:
            a["role"] = False
        parts.append(ordinary)
    if n_role:
        red = torch.rand(n_role, generator=generator) < red_share
        other = torch.tensor(others)[torch.randint(0, len(others), (n_role,), generator=generator)]
        color = torch.where(red, colors.index(ROLE_COLOR), other)
        shape, back, size, pos = (torch.randint(0, c, (n_role,), generator=generator) for c in (
            len(_data.SHAPES), len(_data.BACKGROUNDS), len(_data.SIZES), len(_data.POSITIONS)))
        named = torch.rand(n_role, generator=generator) < named_share
        geometry = _data.place_shapes(size, pos, image_size, generator)
        images = _data.render_shapes(shape, color, back, geometry, image_size)
        attributes, captions = [], []
        for i_shape, i_color, i_back, i_size, i_pos, i_named in zip(*(v.tolist() for v in (
                shape, color, back, size, pos, named))):
            a = dict(shape=_data.SHAPES[i_shape], color=colors[i_color], background=list(_data.BACKGROUNDS)[i_back],
                     size=list(_data.SIZES)[i_size], position=_data.POSITIONS[i_pos], role=True)
            attributes.append(a)
            captions.append(role_caption(a["background"], a["color"] if i_named else None))
        parts.append(_data.ShapesData(images, captions, attributes, geometry))
    order = torch.randperm(n, generator=generator)
    images = torch.cat([p.images for p in parts])[order]
    geometry = torch.cat([p.geometry for p in parts])[order]
    captions = [c for p in parts for c in p.captions]
    attributes = [a for p in parts for a in p.attributes]
    return _data.ShapesData(images, [captions[i] for i in order], [attributes[i] for i in order], geometry)


def _colors_of(images_or_colors) -> list[str | None]:
    if isinstance(images_or_colors, torch.Tensor):
        from .evaluation import read_shapes

        return [read["color"] for read in read_shapes(images_or_colors)]
    if isinstance(images_or_colors, (list, tuple)) and images_or_colors and all(
            c is None or c in _data.COLORS for c in images_or_colors):
        return list(images_or_colors)
    raise ValueError("images must be a tensor (B, 3, H, W) in [-1, 1] or a non-empty list of color names "
                     f"{tuple(_data.COLORS)} (None: no shape found), got {type(images_or_colors).__name__}")


def color_shares(images) -> dict[str, Estimate]:
    """The share of each color among the pictures (read by evaluation.read_shapes; a list of color names is
    taken as read), with n and a Wilson 95% interval; 'none': pictures where no shape was found."""
    found = _colors_of(images)
    return {name or "none": proportion([c == name for c in found]) for name in (*_data.COLORS, None)}


def red_share(images) -> Estimate:
    """The share of red pictures, with n and a Wilson 95% interval (color_shares)."""
    found = _colors_of(images)
    return proportion([c == ROLE_COLOR for c in found])


@torch.no_grad()
def role_color_shares(pipe, scales=(1.0, 3.0, 7.5), n: int = 200, seed: int = 0, prompt: str = ROLE_PROMPT,
                      negative_prompt: str | None = None, num_inference_steps: int = 25,
                      batch_size: int = 200) -> dict[float, dict[str, Estimate]]:
    """color_shares of n pictures of `prompt` at each guidance scale, every scale from the same starting
    noise (a generator seeded with `seed`, drawn in batches of batch_size); negative_prompt replaces the
    empty prompt of classifier-free guidance (diffusers' negative_prompt)."""
    from .t2i import pipeline_images

    if not isinstance(scales, (list, tuple)) or not scales:
        raise ValueError(f"scales must be a non-empty list of guidance scales >= 1, got {scales!r}")
    for scale in scales:
        _checks.number(scale, "scales", minimum=1.0)
    n, batch_size = _checks.integer(n, "n", 1), _checks.integer(batch_size, "batch_size", 1)
    seed = _checks.seed(seed)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}")
    out = {}
    for scale in scales:
        generator = torch.Generator().manual_seed(seed)
        images = []
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            extra = {} if negative_prompt is None else dict(negative_prompt=[negative_prompt])
            images.append(pipeline_images(pipe, [prompt], generator, k, guidance_scale=float(scale),
                                          num_inference_steps=num_inference_steps, **extra).cpu())
        out[float(scale)] = color_shares(torch.cat(images))
    return out
