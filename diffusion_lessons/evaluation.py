"""The measures the book reports: digit classifier accuracy and diversity (lessons 03-05),
and a shape reader with prompt adherence (lessons 06-07)."""

from __future__ import annotations

# ---- digits ----
# The reader of generated digits is an RBF support vector machine on the pixels, trained on the real
# training split (plus copies shifted by one pixel) at the model's resolution: deterministic, about
# 1 s on a CPU, 99.7% right on the 300 held-out digits. Fidelity = the fraction of samples it reads
# as the asked digit; diversity = mean pairwise distance within a class, relative to real digits,
# measured by default between shape directions in a feature space of real digits (their main PCA
# directions), so that neither pixel speckle nor bolder strokes count as variety (within_class_diversity).
import functools  # noqa: E402

import numpy as _np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as _F  # noqa: E402

from . import _checks  # noqa: E402
from . import data as _data  # noqa: E402


def _shifted_copies(x: torch.Tensor) -> torch.Tensor:
    """x and its four one-pixel shifts (background -1 fills the gap): a cheap augmentation."""
    pad = _F.pad(x, (1, 1, 1, 1), value=-1.0)
    h, w = x.shape[-2:]
    crops = [pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))]
    return torch.cat(crops)


class DigitClassifier:
    """Reads digit images (B, 1, H, W) in [-1, 1] (clipped) as labels 0-9. Build it with train_digit_classifier()."""

    def __init__(self, svc, size: int, held_out_accuracy: float):
        _checks.integer(size, "size", 1)
        _checks.number(held_out_accuracy, "held_out_accuracy", 0, 1)
        self.svc, self.size, self.held_out_accuracy = svc, size, held_out_accuracy

    def _features(self, images: torch.Tensor) -> _np.ndarray:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, self.size, self.size):
            raise ValueError(f"images must be a tensor (B, 1, {self.size}, {self.size}), "
                             f"got {tuple(getattr(images, 'shape', ()))}")
        return _flat_pixels(images).numpy()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The digit read in each image, as an int64 tensor (B,)."""
        return torch.from_numpy(self.svc.predict(self._features(images)).astype(_np.int64))

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of images read as their label."""
        return float((self.predict(images) == torch.as_tensor(labels).cpu()).float().mean())


@functools.lru_cache(maxsize=4)
def train_digit_classifier(size: int = _data.DIGITS_SIZE) -> DigitClassifier:
    """Fit the reader on the real training split (deterministic; cached in memory for the session)
    and measure it on the held-out split: classifier.held_out_accuracy."""
    from sklearn.svm import SVC

    x, y = _data.load_digits("train", size)
    x = _shifted_copies(x)
    svc = SVC(C=10.0, gamma="scale", random_state=0).fit(  # a seed of its own: NumPy's global RNG untouched
        x.reshape(len(x), -1).numpy(), y.repeat(5).numpy())
    classifier = DigitClassifier(svc, size, 0.0)
    x_test, y_test = _data.load_digits("test", size)
    classifier.held_out_accuracy = classifier.accuracy(x_test, y_test)
    return classifier


def fidelity(classifier: DigitClassifier, images: torch.Tensor, labels) -> float:
    """Fraction of generated images that the classifier reads as the asked label (lesson 05's fidelity)."""
    if not isinstance(classifier, DigitClassifier):
        raise ValueError(f"classifier must be a DigitClassifier (train_digit_classifier()), got "
                         f"{type(classifier).__name__}")
    labels = _image_labels(images, labels)
    return classifier.accuracy(images, labels)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean Euclidean distance between all pairs of images (clipped to [-1, 1]), in pixel space."""
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or len(images) < 2:
        raise ValueError(f"images must be a tensor of at least 2 images, got "
                         f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    return _mean_pairwise(_flat_pixels(images))


def _flat_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, pixels) float32 on the CPU, clipped to [-1, 1]."""
    return images.detach().float().cpu().clamp(-1, 1).reshape(len(images), -1)


def _image_labels(images, labels) -> torch.Tensor:
    """labels (one digit per image) as a (B,) int64 CPU tensor, after images (B, 1, H, H) is checked."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1 \
            or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be a tensor (B, 1, H, H), got "
                         f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    labels = _checks.labels(labels, "labels", _data.NUM_DIGIT_CLASSES + 1).cpu()
    if labels.shape[0] != len(images):
        raise ValueError(f"labels must hold one label per image ({len(images)}), got {labels.shape[0]}")
    return labels


def _mean_pairwise(flat: torch.Tensor) -> float:
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


FEATURE_DIMS = 20   # how many principal directions of the real training digits span the feature space
DIVERSITY_SPACES = ("features", "pixels")


@functools.lru_cache(maxsize=4)
def _real_directions(size: int, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean real training digit (D,) and its first `dims` principal directions (dims, D), orthonormal."""
    x, _ = _data.load_digits("train", size)
    flat = x.reshape(len(x), -1).double()
    mean = flat.mean(0)
    _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    return mean.float(), vh[:dims].float()


def digit_features(images: torch.Tensor, dims: int = FEATURE_DIMS) -> torch.Tensor:
    """(B, dims) coordinates of each image (clipped to [-1, 1]) along the first `dims` principal
    directions of the real training digits (PCA, like the first layers of a feature extractor):
    the strokes and shapes in which real digits differ. Pixel noise is spread over all 256
    directions, so only a small part of it lands in these 20."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1 \
            or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be a tensor (B, 1, H, H), got {tuple(getattr(images, 'shape', ()))}")
    if not 1 <= dims <= images.shape[-1] ** 2:
        raise ValueError(f"dims must be between 1 and {images.shape[-1] ** 2}, got {dims}")
    mean, directions = _real_directions(images.shape[-1], dims)
    return (_flat_pixels(images) - mean) @ directions.T


def _check_space(space: str) -> None:
    if space not in DIVERSITY_SPACES:
        raise ValueError(f"space must be one of {DIVERSITY_SPACES}, got {space!r}")


@functools.lru_cache(maxsize=8)
def _real_within_class(size: int, space: str) -> float:
    x, y = _data.load_digits("test", size)
    return _mean_within_class(x, y, space)


def _mean_within_class(images: torch.Tensor, labels: torch.Tensor, space: str) -> float:
    # features: each sample's shape direction, scaled to unit length
    points = _F.normalize(digit_features(images), dim=1) if space == "features" else _flat_pixels(images)
    values = [_mean_pairwise(points[labels == c]) for c in labels.unique().tolist() if int((labels == c).sum()) >= 2]
    if not values:
        raise ValueError("labels: need at least one class with 2 or more images")
    return sum(values) / len(values)


def within_class_diversity(images: torch.Tensor, labels, normalize: bool = True, space: str = "features") -> float:
    """Mean pairwise distance among images of the same label, averaged over labels; with normalize,
    divided by the same measure on the real held-out digits (1.0 = as varied as real digits).

    space="features" (default) compares shapes: each image becomes its digit_features (coordinates
    along the 20 main directions in which real digits vary) scaled to unit length, and the distance
    is between these unit vectors (0 = the same shape, 1.41 = perpendicular, unrelated shapes).
    Like FID's use of a network's features, and LPIPS's unit-normalised ones, it ignores what is not
    shape: pixel
    speckle lies mostly outside the 20 directions, and a bolder or more contrasted drawing of the
    same shape (what strong guidance does) lies further along the same direction.
    space="pixels" measures the raw pixel distance, which both of these inflate."""
    _check_space(space)
    labels = _image_labels(images, labels)
    _checks.flag(normalize, "normalize")
    value = _mean_within_class(images, labels, space)
    return value / _real_within_class(images.shape[-1], space) if normalize else value


def diversity_per_sample(images: torch.Tensor, labels, space: str = "features") -> torch.Tensor:
    """(B,) each image's mean distance to the other images of its label, relative to real held-out digits.
    Their mean equals within_class_diversity when every label has the same number of images; their spread
    gives its bootstrap interval (within_class_diversity_estimate)."""
    _check_space(space)
    labels = _image_labels(images, labels)
    points = _F.normalize(digit_features(images), dim=1) if space == "features" else _flat_pixels(images)
    out = torch.full((len(images),), float("nan"))
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().reshape(-1)
        if len(idx) >= 2:
            d = torch.cdist(points[idx], points[idx])
            out[idx] = d.sum(1) / (len(idx) - 1)
    if torch.isnan(out).all():
        raise ValueError("labels: need at least one class with 2 or more images")
    return out[~torch.isnan(out)] / _real_within_class(images.shape[-1], space)


def within_class_diversity_estimate(images: torch.Tensor, labels, space: str = "features",
                                    seed: int = 0) -> "Estimate":  # noqa: F821
    """within_class_diversity (1.0 = real digits) with a 95% bootstrap interval over the samples."""
    from .stats import bootstrap_interval

    _checks.seed(seed)
    return bootstrap_interval(diversity_per_sample(images, labels, space).numpy(), seed=seed)


# Roughness: how much of an image lives in frequencies that real digits cannot have. sklearn's digits are
# 8x8 scans shown at 16x16 by a bilinear upsample, so a real digit is (nearly) fully described by its 8x8
# block means; what an 8x8 area downsample followed by the same bilinear upsample cannot reproduce is
# speckle. A classifier reads the shape and ignores this residual, so it cannot see the defect.
ROUGHNESS_REFERENCE_SIZE = 8


def roughness(images: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared residual of each image (clipped to [-1, 1]) after an 8x8 area downsample and a
    bilinear upsample back to its size: the energy in frequencies finer than the real 8x8 digits hold."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1 \
            or images.shape[-1] != images.shape[-2] or images.shape[-1] < ROUGHNESS_REFERENCE_SIZE:
        raise ValueError(f"images must be a tensor (B, 1, H, H) with H >= {ROUGHNESS_REFERENCE_SIZE}, "
                         f"got {tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    x = images.detach().float().cpu().clamp(-1, 1)
    size = x.shape[-1]
    low = _F.interpolate(_F.adaptive_avg_pool2d(x, ROUGHNESS_REFERENCE_SIZE), size=(size, size), mode="bilinear",
                         align_corners=False)
    return (x - low).pow(2).mean(dim=(1, 2, 3))


@functools.lru_cache(maxsize=4)
def real_roughness(size: int = _data.DIGITS_SIZE) -> torch.Tensor:
    """roughness of all 1,797 real digits at this size (train and held out), sorted ascending."""
    x, _ = _data.load_digits("all", size)
    return roughness(x).sort().values


def rough_mask(images: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where an image is rougher than the roughest of the 1,797 real digits."""
    return roughness(images) > real_roughness(images.shape[-1])[-1]


def rough_share(images: torch.Tensor) -> float:
    """Fraction of images rougher than every real digit (0 for real digits by construction)."""
    return float(rough_mask(images).float().mean())


def evaluate_digits_model(model: torch.nn.Module, schedule, per_label: int = 20, steps: int = 50,
                          guidance_scale: float = 1.0, seed: int = 0,
                          classifier: DigitClassifier | None = None, **sample_kwargs) -> dict:
    """Sample per_label digits of each label 0-9 (one batch, DDIM by default) and measure them:
    {'fidelity', 'diversity', 'pixel_diversity', 'images', 'labels'} (diversity in feature space, see
    within_class_diversity). Extra keyword arguments go to sampling.sample."""
    from .guidance import check_scales
    from .sampling import sample

    if not isinstance(model, torch.nn.Module) and not callable(model):
        raise ValueError(f"model must be a network (UNet2DModel, TinyUNet) or a denoiser callable, "
                         f"got {type(model).__name__}")
    per_label, seed = _checks.integer(per_label, "per_label", 1), _checks.seed(seed)
    check_scales(guidance_scale)
    if classifier is not None and not isinstance(classifier, DigitClassifier):
        raise ValueError(f"classifier must be a DigitClassifier or None, got {type(classifier).__name__}")
    labels = torch.arange(_data.NUM_DIGIT_CLASSES).repeat_interleave(per_label)
    generator = torch.Generator().manual_seed(seed)
    sample_kwargs.setdefault("progress", False)
    images = sample(model, schedule, labels, steps=steps, guidance_scale=guidance_scale, generator=generator,
                    **sample_kwargs).cpu()
    classifier = classifier or train_digit_classifier(images.shape[-1])
    return dict(fidelity=fidelity(classifier, images, labels), rough=rough_share(images),
                diversity=within_class_diversity(images, labels),
                pixel_diversity=within_class_diversity(images, labels, space="pixels"), images=images, labels=labels)


def measure_digits(images: torch.Tensor, labels, classifier: DigitClassifier | None = None) -> dict:
    """Every digits measure as an Estimate with its 95% interval and n: fidelity and rough share (Wilson),
    diversity between shapes and in pixels (bootstrap). Keys: fidelity, rough, diversity, pixel_diversity."""
    from .stats import proportion

    labels = _image_labels(images, labels)
    if classifier is not None and not isinstance(classifier, DigitClassifier):
        raise ValueError(f"classifier must be a DigitClassifier or None, got {type(classifier).__name__}")
    classifier = classifier or train_digit_classifier(images.shape[-1])
    images = images.detach().cpu()
    return dict(fidelity=proportion(classifier.predict(images) == labels), rough=proportion(rough_mask(images)),
                diversity=within_class_diversity_estimate(images, labels),
                pixel_diversity=within_class_diversity_estimate(images, labels, space="pixels"))

# ---- captioned shapes ----
# The reader is rule-based, "analysis by synthesis": background = the border's median color; shape
# color = the palette color nearest the pixels far from the background; shape = whichever of the
# three shapes, drawn by data.shape_coverage with the same area and centroid, best matches the pixels.

import torch  # noqa: E402  (kept inside this section)

from . import data as _data  # noqa: E402

READ_KEYS = ("background", "color", "shape", "size", "position")


def _nearest(colors: torch.Tensor, palette: dict) -> list[str]:
    """Name of the palette color nearest (Euclidean, RGB in [0, 1]) to each row of colors (B, 3)."""
    names, table = list(palette), torch.tensor(list(palette.values()))
    return [names[i] for i in torch.cdist(colors.float(), table).argmin(dim=1).tolist()]


def _harden(alpha: torch.Tensor) -> torch.Tensor:
    """Coverage pushed towards 0 or 1 (0.25 -> 0, 0.75 -> 1): faint noise and soft edges count less."""
    return ((alpha - 0.25) / 0.5).clamp(0, 1)


def _shape_errors(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a hardened coverage map (B, H, W): how badly each of the three shapes, drawn with the same area and
    centroid (sharp or softened, whichever fits better), matches it, (B, 3), and their geometries (B, 3, 3)."""
    b, size = alpha.shape[0], alpha.shape[-1]
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    mass = alpha.sum(dim=(1, 2)).clamp_min(1e-6)
    mx, my = (alpha * grid[None, None, :]).sum((1, 2)) / mass, (alpha * grid[None, :, None]).sum((1, 2)) / mass
    r = torch.stack([(mass / torch.pi).sqrt(), (mass / 4).sqrt(), (mass / 2).sqrt()], 1)  # circle, square, triangle
    cy = torch.stack([my, my, my - r[:, 2] / 3], 1)  # a triangle's centroid lies r / 3 below its box centre
    geometry = torch.stack([mx[:, None].expand(b, 3), cy, r], dim=2).reshape(3 * b, 3)
    drawn = _data.shape_coverage(torch.arange(3).repeat(b), geometry, size)[:, None]
    return _template_errors(drawn, alpha).reshape(b, 3), geometry.reshape(b, 3, 3)


def _template_errors(drawn: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Squared error between hardened templates drawn (B * k, 1, H, W) and hardened coverage maps alpha (B, H, W),
    the better of each template sharp and softened by a 3 x 3 blur: (B * k,)."""
    k = len(drawn) // len(alpha)
    blurred = torch.nn.functional.avg_pool2d(drawn, 3, stride=1, padding=1, count_include_pad=False)
    both = torch.cat([drawn, blurred], dim=1)  # (B * k, 2, H, W): sharp and softened templates
    target = _harden(alpha).repeat_interleave(k, dim=0)[:, None]
    return ((_harden(both) - target) ** 2).sum(dim=(2, 3)).amin(dim=1)


def _fit_shapes(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a coverage map (B, H, W): best shape index (B,) and its geometry (B, 3), matching area and centroid."""
    err, geometry = _shape_errors(alpha)
    best = err.argmin(dim=1)
    return best, geometry[torch.arange(len(alpha)), best]


def _name_place(geometry: torch.Tensor, size: int) -> tuple[list[str], list[str]]:
    """Size band and 3x3 position name for each fitted geometry (the inverse of data.place_shapes)."""
    cx, cy, r = geometry.unbind(1)
    mids = torch.tensor([sum(b) / 2 for b in _data.SIZES.values()]) * size
    sizes = [list(_data.SIZES)[i] for i in (r[:, None] - mids).abs().argmin(1).tolist()]
    lo = r + _data.MARGIN * size
    third = lambda c: ((c - lo) / (size - 2 * lo).clamp_min(1e-6) * 3).floor().clamp(0, 2).long()  # noqa: E731
    return sizes, [_data.POSITIONS[i] for i in (3 * third(cy) + third(cx)).tolist()]


@torch.no_grad()
def _foreground(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What read_shapes looks at in images (B, 3, H, W) in [-1, 1]: the background color (B, 3) (the median of
    the border), the shape color (B, 3) (the median of the pixels at least 0.5 from the background, RGB in
    [0, 1]), those pixels (B, H, W) and each pixel's coverage (B, H, W): 0 = background, 1 = shape color."""
    p = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    border = torch.cat([p[:, :, 0], p[:, :, -1], p[:, :, :, 0], p[:, :, :, -1]], dim=2)
    bg = border.median(dim=2).values
    far = (p - bg[:, :, None, None]).norm(dim=1) > 0.5
    fg = torch.stack([p[i].permute(1, 2, 0)[far[i]].median(0).values if far[i].any() else bg[i]
                      for i in range(len(p))])
    d = fg - bg
    d2 = (d * d).sum(1).clamp_min(1e-6)
    alpha = ((p - bg[:, :, None, None]) * d[:, :, None, None]).sum(1) / d2[:, None, None]  # 0 = bg, 1 = fg
    return bg, fg, far, alpha


@torch.no_grad()
def read_shapes(images: torch.Tensor) -> list[dict[str, str | None]]:
    """Read each image (B, 3, H, W) in [-1, 1]: dict of background, color, shape, size, position.

    Where no pixel differs from the background by at least 0.5 (RGB in [0, 1]) only background is named."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a tensor (B, 3, H, W) in [-1, 1], got {getattr(images, 'shape', images)}")
    bg, fg, far, alpha = _foreground(images)
    best, geometry = _fit_shapes(_harden(alpha))
    sizes, places = _name_place(geometry, images.shape[-1])
    reads = []
    for i, (background, color) in enumerate(zip(_nearest(bg, _data.BACKGROUNDS), _nearest(fg, _data.COLORS))):
        found = bool(far[i].any())
        reads.append(dict(background=background, color=color if found else None,
                          shape=_data.SHAPES[best[i]] if found else None,
                          size=sizes[i] if found else None, position=places[i] if found else None))
    return reads


def read_accuracy(reads: list[dict], wanted: list[dict]) -> dict[str, float]:
    """Fraction of reads that match `wanted` for each attribute (only where wanted names it), and 'all'
    (background, color and shape all right). Also 'n': how many images."""
    for value, name in ((reads, "reads"), (wanted, "wanted")):
        if not isinstance(value, (list, tuple)) or not all(isinstance(d, dict) for d in value):
            raise ValueError(f"{name} must be a list of dicts (read_shapes, ShapesData.attributes), "
                             f"got {type(value).__name__}")
    if len(reads) != len(wanted):
        raise ValueError(f"reads and wanted must have the same length, got {len(reads)} and {len(wanted)}")
    out: dict[str, float] = {}
    for key in READ_KEYS:
        pairs = [(r[key], w[key]) for r, w in zip(reads, wanted) if w.get(key) is not None]
        if pairs:
            out[key] = sum(a == b for a, b in pairs) / len(pairs)
    out["all"] = sum(all(r[k] == w[k] for k in READ_KEYS[:3]) for r, w in zip(reads, wanted)) / max(len(reads), 1)
    out["n"] = len(reads)
    return out


def reader_accuracy(shapes: "_data.ShapesData") -> dict[str, float]:
    """How well the reader names clean generated images (should be about 1.0 for every attribute)."""
    if not isinstance(shapes, _data.ShapesData):
        raise ValueError(f"shapes must be a data.ShapesData (data.make_shapes), got {type(shapes).__name__}")
    return read_accuracy(read_shapes(shapes.images), shapes.attributes)


def prompt_adherence(source, prompts: list[str], images_per_prompt: int = 4,
                     generator: torch.Generator | None = None, **pipe_kwargs) -> dict[str, float]:
    """Per-attribute accuracy of generated images against what their prompts ask (lesson 07).

    source: a StableDiffusionPipeline (called on the prompts with pipe_kwargs, images_per_prompt each)
    or images (B, 3, H, W) in [-1, 1] with one prompt per image."""
    from . import t2i

    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a non-empty list of strings, got the string {prompts!r}")
    prompts = _checks.prompts(prompts)
    images_per_prompt = _checks.integer(images_per_prompt, "images_per_prompt", 1)
    if isinstance(source, torch.Tensor):
        images, asked = source, list(prompts)
    else:
        chunks = [prompts[i:i + 24] for i in range(0, len(prompts), 24)]
        images = torch.cat([t2i.pipeline_images(source, c, generator, images_per_prompt, **pipe_kwargs).cpu()
                            for c in chunks])
        asked = [p for p in prompts for _ in range(images_per_prompt)]
    if len(images) != len(asked):
        raise ValueError(f"images must hold one image per prompt ({len(asked)}), got {len(images)}")
    return read_accuracy(read_shapes(images), [_data.parse_caption(p) for p in asked])


def class_coverage(images: torch.Tensor, labels, classifier: "DigitClassifier | None" = None,
                   threshold: float = 0.5):
    """The share of the digits 0-9 that a class-conditional model can draw: a digit counts as covered when at
    least `threshold` of the samples asked for it are read as it. An Estimate with its Wilson interval over
    the classes present (n = 10 when every digit was asked for)."""
    from .stats import proportion

    labels = _image_labels(images, labels)
    _checks.number(threshold, "threshold", 0.0, 1.0)
    if classifier is not None and not isinstance(classifier, DigitClassifier):
        raise ValueError(f"classifier must be a DigitClassifier or None, got {type(classifier).__name__}")
    classifier = classifier or train_digit_classifier(images.shape[-1])
    right = classifier.predict(images.detach().cpu()) == labels
    return proportion([right[labels == c].float().mean().item() >= threshold for c in labels.unique().tolist()])
