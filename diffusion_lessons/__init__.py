"""diffusion-lessons: the helper package of a notebook textbook on diffusion models.

Modules, in the order the book meets them: device, data, schedules, plotting, widgets,
models, training, parameterisation, samplers, loop, sampling, guidance, text, latents, t2i,
pretrained, evaluation, stats, measure, exercises (with exercise_bank), book.
"""

__version__ = "0.1.0"

from .flow import flow_euler_step  # noqa: E402
from .sigmas import karras_sigmas  # noqa: E402
