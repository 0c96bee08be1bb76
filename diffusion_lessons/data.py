"""The book's data: a real photograph, handwritten digits and generated captioned shapes.

Everything comes from installed packages or is generated; nothing is downloaded.
Images are float tensors (C, H, W) or (B, C, H, W) in [-1, 1], the range diffusion models use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image

from . import _checks

PHOTO = "grace_hopper.jpg"  # Grace Hopper, shipped in matplotlib's sample data


def load_photo(size: int = 64, name: str = PHOTO) -> torch.Tensor:
    """matplotlib's sample photo, center-cropped to a square, resized, as (3, size, size) in [-1, 1]."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    _checks.text(name, "name")
    try:
        path = cbook.get_sample_data(name, asfileobj=False)
    except (OSError, ValueError):
        path = None
    if path is None or not Path(path).is_file():
        raise ValueError(f"name must be an image in matplotlib's sample data (e.g. {PHOTO!r}), got {name!r}")
    image = Image.open(path).convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return from_pil(image)


def from_pil(image: Image.Image) -> torch.Tensor:
    """PIL image -> float32 tensor (C, H, W) in [-1, 1]."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image, got {type(image).__name__}")
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    """Tensor (C, H, W) in [-1, 1] (clipped) -> PIL image (RGB, or L for one channel)."""
    _checks.tensor(x, "x")
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"x must have shape (1 or 3, H, W), got {tuple(x.shape)}")
    array = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


# ---- digits: sklearn's handwritten digits (lessons 03-05) ----
# sklearn ships 1,797 digits of 8x8 (values 0..16, 16 = ink). The book upsamples them
# bilinearly to 16x16: a 1.1 M-parameter UNet2DModel trained at 16x16 drew digits a classifier
# reads correctly, while at native 8x8 the samples stayed speckled (measured while planning the book).

DIGITS_SIZE = 16        # resolution the digits model uses (height = width)
NUM_DIGIT_CLASSES = 10  # labels 0..9
NULL_LABEL = 10         # the "no label" class: unconditional prediction (label dropout, guidance)
DIGITS_SPLIT_SEED = 0   # fixes the held-out split
DIGITS_HELD_OUT = 300   # images held out (1/6 of 1,797), stratified by label
DIGIT_SPLITS = ("train", "test", "all")


def _digits_split_indices() -> dict[str, np.ndarray]:
    """Fixed, stratified train/test indices into sklearn's digits (seed DIGITS_SPLIT_SEED)."""
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    y = _sk_load_digits().target
    train, test = train_test_split(np.arange(len(y)), test_size=DIGITS_HELD_OUT, stratify=y,
                                   random_state=DIGITS_SPLIT_SEED)
    return {"train": np.sort(train), "test": np.sort(test), "all": np.arange(len(y))}


def load_digits(split: str = "train", size: int = DIGITS_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits as (x0, labels): x0 float32 (N, 1, size, size) in [-1, 1] with ink = +1,
    labels int64 (N,) in 0..9. split 'train' (1,497), 'test' (300, held out) or 'all' (1,797);
    size 8 is native, larger sizes are bilinear upsamplings (the book uses DIGITS_SIZE = 16)."""
    from sklearn.datasets import load_digits as _sk_load_digits

    if split not in DIGIT_SPLITS:
        raise ValueError(f"split must be one of {DIGIT_SPLITS}, got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8 (8 is native), got {size!r}")
    bunch = _sk_load_digits()
    idx = _digits_split_indices()[split]
    x = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target[idx].astype(np.int64))
    return (x * 2 - 1).clamp(-1, 1).contiguous(), labels


# ---- captioned shapes: generated RGB images with captions (lessons 06-07) ----
# One upright, axis-aligned shape per image. Geometry is in pixels: centre (cx, cy) and half-extent r
# (the shape fits the square [cx - r, cx + r] x [cy - r, cy + r]; y grows downwards, as in images).

from dataclasses import dataclass  # noqa: E402  (kept inside this section)

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}  # RGB in [0, 1]
SIZES = {"small": (0.12, 0.17), "medium": (0.19, 0.25), "large": (0.28, 0.34)}  # r / image side
POSITIONS = ("at the top left", "at the top", "at the top right", "on the left", "in the center",
             "on the right", "at the bottom left", "at the bottom", "at the bottom right")  # 3x3, row-major
CAPTION_STYLES = {"plain": 0.4, "size": 0.2, "position": 0.2, "both": 0.2}  # "mixed" draws with these odds
MARGIN = 0.03  # gap between the shape and the image border, as a fraction of the side


@dataclass
class ShapesData:
    """Generated images (B, 3, H, W) in [-1, 1], their captions, attribute names and geometry (B, 3):
    cx, cy, r in pixels. attributes[i] has keys shape, color, background, size, position."""

    images: torch.Tensor
    captions: list[str]
    attributes: list[dict[str, str]]
    geometry: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)


def shape_caption(shape: str, color: str, background: str, size: str | None = None,
                  position: str | None = None) -> str:
    """'a [size] color shape [position] on a background background', e.g. 'a red circle on a white background'."""
    for name, value, allowed in (("shape", shape, SHAPES), ("color", color, tuple(COLORS)),
                                 ("background", background, tuple(BACKGROUNDS)),
                                 ("size", size, (None, *SIZES)), ("position", position, (None, *POSITIONS))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    words = ["a", size, color, shape, position, "on a", background, "background"]
    return " ".join(w for w in words if w)


def parse_caption(caption: str) -> dict[str, str | None]:
    """The attributes a caption names (None where it names none): shape, color, background, size, position."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    text = " " + " ".join(caption.lower().split()) + " "
    found = lambda names: next((n for n in names if f" {n} " in text), None)  # noqa: E731
    background = next((b for b in BACKGROUNDS if f" {b} background " in text), None)
    color = next((c for c in COLORS if f" {c} " in text.replace(f" {background} background ", " ")), None)
    return dict(shape=found(SHAPES), color=color, background=background, size=found(SIZES),
                position=found(sorted(POSITIONS, key=len, reverse=True)))


def shape_prompts() -> list[str]:
    """The 24 plain prompts, every color x shape x background (the adherence prompt set)."""
    return [shape_caption(s, c, b) for b in BACKGROUNDS for c in COLORS for s in SHAPES]


def shape_coverage(shape_idx: torch.Tensor, geometry: torch.Tensor, image_size: int,
                   supersample: int = 4) -> torch.Tensor:
    """Fraction of each pixel that the shape covers, (B, H, W) in [0, 1] (anti-aliased by supersampling).

    shape_idx: (B,) indices into SHAPES; geometry: (B, 3) rows cx, cy, r in pixels."""
    _check_geometry(geometry, len(_indices(shape_idx, "shape_idx", len(SHAPES))))
    image_size = _checks.integer(image_size, "image_size", 1)
    k = _checks.integer(supersample, "supersample", 1)
    grid = (torch.arange(image_size * k, dtype=torch.float32) + 0.5) / k
    inside = torch.zeros(len(shape_idx), image_size * k, image_size * k, dtype=torch.bool)
    for s in range(len(SHAPES)):  # each image is tested against its own shape only
        sel = shape_idx == s
        cx, cy, r = (geometry[sel, i, None, None].float() for i in range(3))
        dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
        if s == 0:  # circle
            inside[sel] = dx**2 + dy**2 <= r**2
        elif s == 1:  # square
            inside[sel] = (dx.abs() <= r) & (dy.abs() <= r)
        else:  # triangle: apex (cx, cy - r), base on the line y = cy + r
            inside[sel] = (dy <= r) & (dx.abs() <= (dy + r) / 2)
    return inside.float().reshape(-1, image_size, k, image_size, k).mean(dim=(2, 4))


def _indices(value, name: str, count: int) -> torch.Tensor:
    """value as (B,) integer indices into a table of `count` entries."""
    return _checks.labels(_checks.tensor(value, name, ndim=1), name, count)


def _check_geometry(geometry, n: int) -> None:
    if _checks.tensor(geometry, "geometry").shape != (n, 3):
        raise ValueError(f"geometry must be a tensor (B, 3) of rows cx, cy, r with B = {n}, "
                         f"got shape {tuple(geometry.shape)}")


def render_shapes(shape_idx: torch.Tensor, color_idx: torch.Tensor, background_idx: torch.Tensor,
                  geometry: torch.Tensor, image_size: int = 32) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1]: background blended with the shape color by its coverage."""
    n = len(_indices(shape_idx, "shape_idx", len(SHAPES)))
    for value, name, size in ((color_idx, "color_idx", len(COLORS)),
                              (background_idx, "background_idx", len(BACKGROUNDS))):
        if len(_indices(value, name, size)) != n:
            raise ValueError(f"{name} must hold one index per shape ({n}), got {len(value)}")
    _check_geometry(geometry, n)
    _checks.integer(image_size, "image_size", 1)
    palette = torch.tensor(list(COLORS.values()))
    backdrop = torch.tensor(list(BACKGROUNDS.values()))
    out = []
    for s in range(0, len(shape_idx), 512):  # chunks keep the supersampled masks small
        alpha = shape_coverage(shape_idx[s:s + 512], geometry[s:s + 512], image_size)[:, None]
        fg = palette[color_idx[s:s + 512]][:, :, None, None]
        bg = backdrop[background_idx[s:s + 512]][:, :, None, None]
        out.append(bg + alpha * (fg - bg))
    return torch.cat(out) * 2 - 1


def place_shapes(size_idx: torch.Tensor, position_idx: torch.Tensor, image_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Geometry (B, 3) for named sizes and 3x3 positions: r drawn inside its size band, the centre
    inside the position's third of the range where the shape fits (so 'top left' = as far as fits)."""
    n = len(_indices(size_idx, "size_idx", len(SIZES)))
    if len(_indices(position_idx, "position_idx", len(POSITIONS))) != n:
        raise ValueError(f"position_idx must hold one index per size ({n}), got {len(position_idx)}")
    _checks.integer(image_size, "image_size", 1)
    _checks.generator(generator)
    u = torch.rand(n, 3, generator=generator)
    bands = torch.tensor(list(SIZES.values()))[size_idx]
    r = (bands[:, 0] + u[:, 0] * (bands[:, 1] - bands[:, 0])) * image_size
    lo = r + MARGIN * image_size
    hi = image_size - lo
    row, col = position_idx // 3, position_idx % 3
    cx = lo + (col + u[:, 1]) / 3 * (hi - lo)
    cy = lo + (row + u[:, 2]) / 3 * (hi - lo)
    return torch.stack([cx, cy, r], dim=1)


def make_shapes(n: int, image_size: int = 32, caption_style: str = "mixed",
                generator: torch.Generator | None = None) -> ShapesData:
    """n captioned shape images (lessons 06-07); the same generator seed gives the same data.

    caption_style: 'mixed' (odds in CAPTION_STYLES) or one of 'plain', 'size', 'position', 'both'."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    if caption_style not in ("mixed", *CAPTION_STYLES):
        raise ValueError(f"caption_style must be 'mixed' or one of {tuple(CAPTION_STYLES)}, got {caption_style!r}")
    counts = (len(SHAPES), len(COLORS), len(BACKGROUNDS), len(SIZES), len(POSITIONS))
    shape, color, back, size, pos = (torch.randint(0, c, (n,), generator=generator) for c in counts)
    geometry = place_shapes(size, pos, image_size, generator)
    odds = torch.tensor(list(CAPTION_STYLES.values()))
    styles = (torch.multinomial(odds, n, replacement=True, generator=generator) if caption_style == "mixed"
              else torch.full((n,), list(CAPTION_STYLES).index(caption_style)))
    attributes, captions = [], []
    rows = zip(*(v.tolist() for v in (shape, color, back, size, pos, styles)))
    for i_shape, i_color, i_back, i_size, i_pos, i_style in rows:
        a = dict(shape=SHAPES[i_shape], color=list(COLORS)[i_color], background=list(BACKGROUNDS)[i_back],
                 size=list(SIZES)[i_size], position=POSITIONS[i_pos])
        style = list(CAPTION_STYLES)[i_style]
        captions.append(shape_caption(a["shape"], a["color"], a["background"],
                                      a["size"] if style in ("size", "both") else None,
                                      a["position"] if style in ("position", "both") else None))
        attributes.append(a)
    images = render_shapes(shape, color, back, geometry, image_size)
    return ShapesData(images, captions, attributes, geometry)
