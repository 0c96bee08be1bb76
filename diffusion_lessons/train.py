"""Train a shipped model from its seeded recipe: python -m diffusion_lessons.train NAME.

Each recipe lives in diffusion_lessons/recipes/ and writes its model in diffusers'
save_pretrained layout (safetensors), with a recipe record (data, seed, steps, wall time,
hardware, final loss, measured quality), into a fresh folder ./runs/NAME-<timestamp> under the
working directory by default. It writes into the shipped diffusion_lessons/pretrained/ only when
--out names that folder and --force is given, and never into another model's folder.

Every recipe runs unchanged on several processes (GPUs, or CPU processes where there is no GPU), with
the same global batch and the same result as one process (docs/training.md):
    accelerate launch --multi_gpu --num_processes N -m diffusion_lessons.train NAME [options]
--checkpoint-every N saves the training state to OUT/checkpoints/step-N/; Ctrl-C (SIGINT) or SIGTERM
saves one and stops; --resume continues from the newest.
"""

from __future__ import annotations

import argparse
import importlib

# name -> module in diffusion_lessons.recipes that defines main(argv), or "module:function" for another entry
RECIPES = {
    "digits": "digits",       # class-conditional UNet2DModel on sklearn digits (lessons 03-05)
    "vae": "vae",             # AutoencoderKL on generated captioned shapes (lesson 06)
    "shapes-t2i": "shapes_t2i",  # tokenizer + CLIPTextModel + UNet2DConditionModel -> pipeline (lesson 07)
    "digits-flow": "digits_flow",  # the digits UNet2DModel trained by flow matching (lesson 08)
    "digits-reflow": "digits_reflow",  # digits-flow trained again on its own (noise, sample) pairs (lesson 08)
    "digits-dit": "digits_dit",    # a DiTTransformer2DModel trained by flow matching on digits (lesson 10)
    "shapes-boss": "shapes_boss",  # the lesson-07 model on data where 'boss' pictures are mostly red (lesson 16)
    "digits-memorize": "digits_memorize",  # one digits U-Net on 10, 100, 1,000 images and with duplicates (16)
    "digits-gan-vae": "digits_gan_vae",  # a class-conditional GAN and VAE on digits, one evaluation each (17)
    "shapes-inpaint": "shapes_inpaint",  # shapes-t2i's U-Net widened to 9 channels, fine-tuned to inpaint (11)
    "shapes-controlnet": "shapes_controlnet",  # a ControlNet on shapes-t2i, the silhouette as control (12)
    "shapes-lora-star": "shapes_lora_star",  # LoRA adapters teaching shapes-t2i a star from 20 pictures (13)
    "signs-vae": "signs:vae_main",  # the lesson-06 VAE's architecture on 32x64 signs (lesson 14)
    "signs-word": "signs:main_word",  # signs text-to-image, word-level tokenizer (lesson 14)
    "signs-bpe": "signs:main_bpe",    # ... BPE tokenizer (lesson 14)
    "signs-char": "signs:main_char",  # ... character-level tokenizer (lesson 14)
    "scenes-vae": "scenes:vae_main",  # the shapes VAE fine-tuned on 64x64 scenes (lesson 15)
    "scenes-t2i": "scenes",           # scenes text-to-image, --encoder bidirectional (T5) or causal (CLIP) (15)
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lessons.train", description=__doc__,
                                     add_help=False)  # --help after NAME reaches the recipe's own parser
    parser.add_argument("name", nargs="?", choices=sorted(RECIPES), help="which shipped model to train")
    args, rest = parser.parse_known_args(argv)
    if args.name is None:
        parser.print_help()
        parser.exit(0 if {"-h", "--help"} & set(rest) else 2)
    module_name, _, function = RECIPES[args.name].partition(":")
    module = importlib.import_module(f"diffusion_lessons.recipes.{module_name}")
    getattr(module, function or "main")(rest)


if __name__ == "__main__":
    main()
