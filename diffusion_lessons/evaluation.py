"""The measures the book reports: digit classifier accuracy and diversity (lessons 03-05),
and a shape reader with prompt adherence (lessons 06-07)."""

from __future__ import annotations

# ---- digits ----
# The reader of generated digits is an RBF support vector machine on the pixels, trained on the real
# training split (plus copies shifted by one pixel) at the model's resolution: deterministic, about
# 1 s on a CPU, 99.7% right on the 300 held-out digits. Fidelity = the fraction of samples it reads
# as the asked digit; diversity = mean pairwise pixel distance within a class, relative to real digits.
import functools  # noqa: E402

import numpy as _np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as _F  # noqa: E402

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
        self.svc, self.size, self.held_out_accuracy = svc, size, held_out_accuracy

    def _features(self, images: torch.Tensor) -> _np.ndarray:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, self.size, self.size):
            raise ValueError(f"images must be a tensor (B, 1, {self.size}, {self.size}), "
                             f"got {tuple(getattr(images, 'shape', ()))}")
        return images.detach().float().cpu().clamp(-1, 1).reshape(len(images), -1).numpy()

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
    svc = SVC(C=10.0, gamma="scale").fit(x.reshape(len(x), -1).numpy(), y.repeat(5).numpy())
    classifier = DigitClassifier(svc, size, 0.0)
    x_test, y_test = _data.load_digits("test", size)
    classifier.held_out_accuracy = classifier.accuracy(x_test, y_test)
    return classifier


def fidelity(classifier: DigitClassifier, images: torch.Tensor, labels) -> float:
    """Fraction of generated images that the classifier reads as the asked label (lesson 05's fidelity)."""
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != len(images):
        raise ValueError(f"labels must hold one label per image ({len(images)}), got {labels.shape[0]}")
    return classifier.accuracy(images, labels)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean Euclidean distance between all pairs of images (clipped to [-1, 1]), in pixel space."""
    if len(images) < 2:
        raise ValueError(f"images must hold at least 2 images, got {len(images)}")
    flat = images.detach().float().cpu().clamp(-1, 1).reshape(len(images), -1)
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


@functools.lru_cache(maxsize=4)
def _real_within_class(size: int) -> float:
    x, y = _data.load_digits("test", size)
    return _mean_within_class(x, y)


def _mean_within_class(images: torch.Tensor, labels: torch.Tensor) -> float:
    values = [mean_pairwise_distance(images[labels == c]) for c in labels.unique().tolist()
              if int((labels == c).sum()) >= 2]
    if not values:
        raise ValueError("labels: need at least one class with 2 or more images")
    return sum(values) / len(values)


def within_class_diversity(images: torch.Tensor, labels, normalize: bool = True) -> float:
    """Mean pairwise pixel distance among images of the same label, averaged over labels; with
    normalize, divided by the same measure on the real held-out digits (1.0 = as varied as real digits)."""
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if labels.shape[0] != len(images):
        raise ValueError(f"labels must hold one label per image ({len(images)}), got {labels.shape[0]}")
    value = _mean_within_class(images, labels)
    return value / _real_within_class(images.shape[-1]) if normalize else value


def evaluate_digits_model(model: torch.nn.Module, schedule, per_label: int = 20, steps: int = 50,
                          guidance_scale: float = 1.0, seed: int = 0,
                          classifier: DigitClassifier | None = None, **sample_kwargs) -> dict:
    """Sample per_label digits of each label 0-9 (one batch, DDIM by default) and measure them:
    {'fidelity', 'diversity', 'images', 'labels'}. Extra keyword arguments go to sampling.sample."""
    from .sampling import sample

    labels = torch.arange(_data.NUM_DIGIT_CLASSES).repeat_interleave(per_label)
    generator = torch.Generator().manual_seed(seed)
    sample_kwargs.setdefault("progress", False)
    images = sample(model, schedule, labels, steps=steps, guidance_scale=guidance_scale, generator=generator,
                    **sample_kwargs).cpu()
    classifier = classifier or train_digit_classifier(images.shape[-1])
    return dict(fidelity=fidelity(classifier, images, labels), diversity=within_class_diversity(images, labels),
                images=images, labels=labels)

# ---- captioned shapes ----
