"""Model builders: small diffusers models sized for a CPU, and a U-Net small enough to read.

Lesson 03 (digits UNet2DModel, the readable TinyUNet); lessons 06-07 (AutoencoderKL,
UNet2DConditionModel).
"""

from __future__ import annotations

# ---- digits: class-conditional UNet2DModel and the readable U-Net (lessons 03-05) ----

# ---- latents and text: AutoencoderKL and UNet2DConditionModel (lessons 06-07) ----
