"""The book's data: a real photograph, handwritten digits and generated captioned shapes.

Everything comes from installed packages or is generated; nothing is downloaded.
Images are float tensors (C, H, W) or (B, C, H, W) in [-1, 1], the range diffusion models use.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image

PHOTO = "grace_hopper.jpg"  # Grace Hopper, shipped in matplotlib's sample data


def load_photo(size: int = 64, name: str = PHOTO) -> torch.Tensor:
    """matplotlib's sample photo, center-cropped to a square, resized, as (3, size, size) in [-1, 1]."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    image = Image.open(cbook.get_sample_data(name, asfileobj=False)).convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return from_pil(image)


def from_pil(image: Image.Image) -> torch.Tensor:
    """PIL image -> float32 tensor (C, H, W) in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    """Tensor (C, H, W) in [-1, 1] (clipped) -> PIL image (RGB, or L for one channel)."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"x must have shape (1 or 3, H, W), got {tuple(x.shape)}")
    array = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


# ---- digits: sklearn's handwritten digits (lessons 03-05) ----


# ---- captioned shapes: generated RGB images with captions (lessons 06-07) ----
