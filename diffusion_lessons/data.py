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
# sklearn ships 1,797 digits of 8x8 (values 0..16, 16 = ink). The book upsamples them
# bilinearly to 16x16: a 1.1 M-parameter UNet2DModel trained at 16x16 drew digits a classifier
# reads correctly, while at native 8x8 the samples stayed speckled (MEASUREMENTS.md).

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
