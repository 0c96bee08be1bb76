"""diffusion-lessons: the helper package of a notebook textbook on diffusion models.

Modules, in the order the book meets them: device, data, schedules, plotting, widgets,
models, training, sampling, guidance, text, pretrained, evaluation.
"""

__version__ = "0.1.0"
